"""`migrator init`: write a mapping from the live schema."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError
from ..scaffold import generate_mapping
from ..sink.mongo import connect as mongo_connect
from ..source.connection import connect
from ..source.schema import introspect
from ..urls import parse_mysql_url
from .common import err, handle_errors, out


@click.command("init")
@click.option(
    "--source",
    "source_url",
    required=True,
    envvar="MIGRATOR_SOURCE_URL",
    help="mysql://user:password@host:3306/database (or $MIGRATOR_SOURCE_URL).",
)
@click.option(
    "--target",
    "target_url",
    required=True,
    envvar="MIGRATOR_TARGET_URL",
    help="mongodb://host:27017 (or $MIGRATOR_TARGET_URL).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write here (default stdout)."
)
@click.option("--table", "tables", multiple=True, help="Only these tables (repeatable).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@handle_errors
def init_cmd(
    source_url: str, target_url: str, output: str | None, tables: tuple[str, ...], force: bool
) -> None:
    """Introspect the source schema and write a one-table-one-collection mapping.

    Every column is listed; comments mark types that need a decision and foreign keys that
    could become embeds. Passwords are replaced by ${MIGRATOR_SOURCE_PASSWORD} and
    ${MIGRATOR_TARGET_PASSWORD}.

    \b
    Example:
      migrator init --source mysql://app:pw@db:3306/shop \\
                    --target mongodb://mongo:27017 -o shop.yaml
    """
    url = parse_mysql_url(source_url, "--source")
    if not url.database:
        raise ConfigError("--source names no database: mysql://user:pw@host:3306/DATABASE")
    if output and Path(output).exists() and not force:
        raise ConfigError(f"{output} exists; pass --force to overwrite it")
    mongo_connect(target_url, "--target").close()
    conn = connect(url, where="--source")
    try:
        schema = introspect(conn, url.database)
        text, notes = generate_mapping(conn, schema, source_url, target_url, list(tables) or None)
    finally:
        conn.close()
    if output:
        Path(output).write_text(text)
        out.print(
            f"[green]wrote[/] {output}: {len(tables) or len(schema.tables)} table(s); "
            f"next: migrator plan -m {output}"
        )
    else:
        click.echo(text, nl=False)
    for n in notes:
        err.print(f"[yellow]note:[/] {n}")
