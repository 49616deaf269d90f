"""`migrator init`: write a mapping from the live schema."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import click

from migrator.cli.common import err, handle_errors, out
from migrator.errors import ConfigError
from migrator.model.secrets import SOURCE_PASSWORD_FILE_ENV, read_secret_file
from migrator.model.settings import with_password_file
from migrator.model.urls import MySQLURL, parse_mysql_url
from migrator.preflight.scaffold import generate_mapping
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect
from migrator.source.schema import introspect

log = logging.getLogger("migrator.init")


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
@click.option(
    "--documents",
    is_flag=True,
    help="Propose documents from the foreign keys (children nested, small parents copied, "
    "join tables as many-to-many arrays) instead of one collection per table.",
)
@click.option(
    "--source-password-file",
    type=click.Path(dir_okay=False),
    help="Read the source password from this file; the mapping says ${file:PATH}.",
)
@click.option(
    "--target-password-file",
    type=click.Path(dir_okay=False),
    help="Read the target password from this file; the mapping says ${file:PATH}.",
)
@handle_errors
def init_cmd(
    source_url: str,
    target_url: str,
    output: str | None,
    tables: tuple[str, ...],
    force: bool,
    documents: bool,
    source_password_file: str | None,
    target_password_file: str | None,
) -> None:
    """Introspect the source schema and write a one-table-one-collection mapping, or with
    --documents the documents a designer would draw from the foreign keys.

    Every column is listed; comments mark types that need a decision and foreign keys that
    could become embeds. With --documents, children nest in their parent (to any depth),
    small parents are copied in, join tables become many-to-many arrays, and every choice
    that could go either way is a comment. Passwords are replaced by ${MIGRATOR_SOURCE_PASSWORD} and
    ${MIGRATOR_TARGET_PASSWORD} (either may also come from a file named by
    $MIGRATOR_SOURCE_PASSWORD_FILE / $MIGRATOR_TARGET_PASSWORD_FILE), or by ${file:PATH} with
    --source-password-file / --target-password-file. TLS options in the URLs are kept.

    \b
    Examples:
      migrator init --source mysql://app:pw@db:3306/shop \\
                    --target mongodb://mongo:27017 -o shop.yaml
      migrator init --documents --source mysql://app:pw@db:3306/shop \\
                    --target mongodb://mongo:27017 -o shop.yaml
      migrator init --source 'mysql://app@db:3306/shop?ssl-mode=VERIFY_IDENTITY&ssl-ca=/ca.pem' \\
                    --source-password-file /run/secrets/mysql \\
                    --target 'mongodb://app@mongo:27017/?tls=true&authSource=admin' \\
                    --target-password-file /run/secrets/mongo -o shop.yaml
    """
    url = _source_url(source_url, source_password_file)
    connect_target = _target_url(target_url, target_password_file)
    if not url.database:
        raise ConfigError("--source names no database: mysql://user:pw@host:3306/DATABASE")
    if output and Path(output).exists() and not force:
        raise ConfigError(f"{output} exists; pass --force to overwrite it")
    log.info(
        "init started",
        extra={
            "source": f"{url.address}/{url.database}",
            "documents": documents,
            "tables": list(tables) or "all",
        },
    )
    mongo_connect(connect_target, "--target").close()
    conn = connect(url, where="--source")
    try:
        schema = introspect(conn, url.database)
        text, notes = generate_mapping(
            conn,
            schema,
            source_url,
            target_url,
            list(tables) or None,
            source_password_file=source_password_file,
            target_password_file=target_password_file,
            documents=documents,
        )
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
        log.info("init note", extra={"note": n})
        err.print(f"[yellow]note:[/] {n}")
    log.info(
        "init finished",
        extra={"output": output or "stdout", "tables": len(tables) or len(schema.tables)},
    )


def _source_url(source_url: str, password_file: str | None) -> MySQLURL:
    """The --source URL with its password from --source-password-file or the environment's
    password file (the mapping written keeps the placeholder, not the secret)."""
    url = parse_mysql_url(source_url, "--source")
    if password_file:
        if url.password:
            raise ConfigError("--source has a password and --source-password-file is given")
        return url.with_password(read_secret_file(password_file, "--source-password-file"))
    return with_password_file(url, SOURCE_PASSWORD_FILE_ENV)


def _target_url(target_url: str, password_file: str | None) -> str:
    """The --target URL to connect with: the password of --target-password-file escaped in."""
    if not password_file:
        return target_url
    parts = urlsplit(target_url)
    if parts.password or not parts.username:
        raise ConfigError("--target-password-file needs a --target URL with a user and no password")
    secret = quote(read_secret_file(password_file, "--target-password-file"), safe="")
    # the user part as written: urlsplit leaves it %-escaped, so quoting it again would
    # turn `app%40corp` into another user
    user, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user}:{secret}@{host}"))
