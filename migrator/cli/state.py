"""`migrator state ...`: the migration's state database: its whole content, and whose it is."""

from __future__ import annotations

import json
import logging
from datetime import datetime

import click
import yaml

from migrator.cli.common import handle_errors, json_option, load, mapping_option, out, print_json
from migrator.cutover.control import default_actor
from migrator.errors import ConfigError
from migrator.sink.mongo import connect as mongo_connect
from migrator.state.dump import dump
from migrator.state.store import StateStore

log = logging.getLogger("migrator.state")


@click.group("state")
def state_group() -> None:
    """The migration's state database (`state.database` in the mapping)."""


@state_group.command("claim")
@mapping_option
@click.option("--reason", help="Why these records are this migration's (required; audited).")
@click.option("--actor", help="Who is acting, for the audit (default user@host).")
@json_option
@handle_errors
def claim_cmd(mapping_path: str, reason: str | None, actor: str | None, as_json: bool) -> None:
    """Record that a state database holding records but no identity is this migration's.

    Every command refuses such a database (an older version's state, or one whose identity
    was removed): it might be another migration's, and taking it over would run backfill,
    CDC, cutover and rollback on someone else's checkpoints. Claim it only when you know the
    records are this mapping's. A database with another migration's identity cannot be
    claimed.

    \b
    Example:
      migrator state claim -m shop.yaml --reason "state written by migrator 0.9"
    """
    if not reason:
        raise ConfigError("--reason is required: the claim is recorded in the audit log")
    mapping = load(mapping_path)
    client = mongo_connect(mapping.target.url)
    try:
        state = StateStore(client, mapping.state.database)
        claimed = state.adopt(mapping, actor=actor or default_actor(), reason=reason)
    finally:
        client.close()
    log.info(
        "state database claimed" if claimed else "state database was already this migration's",
        extra={"claimed": claimed, "reason": reason},
    )
    if as_json:
        print_json({"state_database": mapping.state.database, "claimed": claimed})
    elif claimed:
        out.print(f"state database {mapping.state.database!r} is now this migration's (audited)")
    else:
        out.print(f"state database {mapping.state.database!r} was already this migration's")


@state_group.command("dump")
@mapping_option
@click.option(
    "--newest", type=click.IntRange(1), default=10, show_default=True, help="Entries per list."
)
@json_option
@handle_errors
def dump_cmd(mapping_path: str, newest: int, as_json: bool) -> None:
    """Print the migration's whole state: identity, phase and control document, the copy and
    its chunks, CDC's checkpoint and status, reverse sync, verification runs and open
    differences, live SDK writers, dead letters and the audit. Read-only; works on a live
    migration (each part is read as it stands when read).

    \b
    Examples:
      migrator state dump -m shop.yaml
      migrator state dump -m shop.yaml --json | jq .cdc.checkpoint
    """
    mapping = load(mapping_path)
    client = mongo_connect(mapping.target.url)
    try:
        data = dump(StateStore(client, mapping.state.database), newest=newest)
    finally:
        client.close()
    log.debug("state dumped", extra={"newest": newest, "parts": list(data)})
    if as_json:
        print_json(data)
        return
    click.echo(yaml.safe_dump(json.loads(json.dumps(data, default=_plain)), sort_keys=False))


def _plain(v: object) -> object:
    """What YAML cannot show as it is: times as ISO text, everything else as text."""
    return v.isoformat() if isinstance(v, datetime) else str(v)
