"""`migrator`: the command group. Each command lives in its own module and stays thin."""

from __future__ import annotations

import click

from migrator import __version__, logs
from migrator.cli.backfill import backfill_cmd
from migrator.cli.cdc import cdc_cmd, sync_cmd
from migrator.cli.common import err
from migrator.cli.cutover import cutover_cmd, rollback_cmd, status_cmd
from migrator.cli.demo import demo_cmd
from migrator.cli.init import init_cmd
from migrator.cli.plan import plan_cmd
from migrator.cli.stack import stack_group
from migrator.cli.state import state_group
from migrator.cli.verify import verify_cmd

EXIT_CODES = """
Exit codes: 0 ok, 1 a check failed (plan blockers, dead letters, differences),
2 usage, configuration or connection error.
"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=EXIT_CODES,
)
@click.version_option(__version__, prog_name="migrator")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"], case_sensitive=False),
    default="text",
    envvar="MIGRATOR_LOG_FORMAT",
    help="Logs on stderr as text or as JSON lines.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default=None,
    envvar="MIGRATOR_LOG_LEVEL",
    help="Default: warning for text, info for json.",
)
def cli(log_format: str, log_level: str | None) -> None:
    """Move a live MySQL/MariaDB database into MongoDB with zero downtime.

    \b
    Typical run:
      migrator init --source mysql://u:pw@db/shop --target mongodb://mongo -o shop.yaml
      migrator plan -m shop.yaml
      migrator backfill -m shop.yaml --workers 2
    """
    logs.setup(log_format, log_level or ("info" if log_format == "json" else "warning"))
    # JSON logs: stderr carries JSON lines only (no progress bars, notes or red messages:
    # the records say it all, the failure included)
    err.quiet = log_format.lower() == "json"


cli.add_command(stack_group)
cli.add_command(init_cmd)
cli.add_command(plan_cmd)
cli.add_command(backfill_cmd)
cli.add_command(cdc_cmd)
cli.add_command(sync_cmd)
cli.add_command(verify_cmd)
cli.add_command(status_cmd)
cli.add_command(cutover_cmd)
cli.add_command(rollback_cmd)
cli.add_command(demo_cmd)
cli.add_command(state_group)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
