"""`migrator state ...`: the migration's state database (whose it is)."""

from __future__ import annotations

import click

from migrator.cli.common import handle_errors, json_option, load, mapping_option, out, print_json
from migrator.cutover.control import default_actor
from migrator.errors import ConfigError
from migrator.sink.mongo import connect as mongo_connect
from migrator.state.store import StateStore


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
    if as_json:
        print_json({"state_database": mapping.state.database, "claimed": claimed})
    elif claimed:
        out.print(f"state database {mapping.state.database!r} is now this migration's (audited)")
    else:
        out.print(f"state database {mapping.state.database!r} was already this migration's")
