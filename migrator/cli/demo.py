"""`migrator demo`: a whole migration on throwaway servers."""

from __future__ import annotations

import click

from ..demo import run_demo
from . import render
from .backfill import print_summary
from .common import err, handle_errors, out


@click.command("demo")
@click.option(
    "--orders",
    type=click.IntRange(10, 100_000),
    default=500,
    show_default=True,
    help="Orders in the generated shop (customers and products scale with it).",
)
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--keep", is_flag=True, help="Leave the servers running (stop them by PID yourself).")
@handle_errors
def demo_cmd(orders: int, workers: int, keep: bool) -> None:
    """Run a whole migration on throwaway local servers and show what came out.

    Starts MariaDB and a MongoDB wire server, creates a shop database (customers, products,
    orders, order_items), plans, backfills orders into documents with embedded items and
    customer, and prints a summary with sample documents. Needs no servers installed.

    Example: migrator demo --orders 1000
    """
    with render.RichProgress(err) as progress:
        res = run_demo(
            orders=orders,
            workers=workers,
            progress=progress,
            say=lambda m: err.print(m, highlight=False),
            keep=keep,
        )
    blockers = [c for c in res.plan.checks if c.level in ("block", "warn")]
    out.rule("plan")
    for c in blockers:
        out.print(f"  {c.level:5} {c.name}: {c.message}")
    out.print(
        f"  {len(res.plan.checks)} checks, {'BLOCKED' if res.plan.blocked else 'no blockers'}"
    )
    out.rule("backfill")
    print_summary(res.backfill)
    if res.cdc is not None:
        out.rule("cdc")
        out.print(
            f"{res.live_transactions} live transactions written during the copy; CDC "
            f"applied {res.cdc.events:,} events from the backfill's binlog position "
            f"({res.cdc.stopped}, lag {res.cdc.lag_seconds:.1f} s, "
            f"{res.cdc.dead_letters} dead letters)"
        )
    if res.verify is not None:
        t = res.verify.to_dict()["totals"]
        out.print(
            f"verify: {t['checked']:,} rows checked through the mapping, "
            f"{t['missing'] + t['extra'] + t['different']} differences"
            + (" (clean)" if res.verify.ok else " [bold red](NOT clean)[/]")
        )
    out.rule("result")
    out.print(
        render.table(
            "MySQL rows -> MongoDB documents",
            ["collection", "rows", "documents"],
            [[k, f"{res.rows.get(k, 0):,}", f"{v:,}"] for k, v in res.documents.items()],
        )
    )
    for name, doc in res.samples.items():
        out.rule(f"sample: {name}")
        out.print(render.document(doc))
    out.print(
        f"[green]demo finished in {res.seconds:.1f} s.[/] The mapping is at "
        f"{res.mapping_path}; try `migrator plan -m` on your own database next "
        "(`migrator init` writes a mapping for you)."
    )
    if keep:
        out.print(
            f"servers left running: {res.stack.urls()} (PIDs {[p.pid for p in res.stack.procs]})"
        )
