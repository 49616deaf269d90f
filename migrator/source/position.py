"""Binlog positions: where CDC starts. Read before the backfill reads a single row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from migrator.errors import CheckFailed
from migrator.model.events import Position
from migrator.source.connection import as_text, query, variables


def is_mariadb(conn: Any) -> bool:
    return "mariadb" in as_text(query(conn, "SELECT VERSION()")[0][0]).lower() or bool(
        variables(conn, "gtid_binlog_pos")
    )


def master_position(conn: Any) -> Position:
    """The source's binlog file/pos now and, on MariaDB, its GTID position: what CDC's
    checkpoints are compared with (the one place positions are read)."""
    rows = query(conn, "SHOW MASTER STATUS")
    if not rows:
        raise CheckFailed(
            "the source has no binary log (log_bin is OFF)",
            hint="start the server with log-bin and binlog-format=ROW",
        )
    gtid = variables(conn, "gtid_binlog_pos").get("gtid_binlog_pos") if is_mariadb(conn) else None
    return Position(file=as_text(rows[0][0]), pos=int(rows[0][1]), gtid=gtid or None)


def current_position(conn: Any) -> dict[str, Any]:
    """Where the backfill records that CDC starts: the master position, with MySQL's
    gtid_executed as its GTID set, the flavor and the time it was read."""
    p = master_position(conn)
    at = datetime.now(UTC).replace(tzinfo=None)
    maria = is_mariadb(conn)
    gtid = p.gtid or "" if maria else variables(conn, "gtid_executed").get("gtid_executed", "")
    return {
        "file": p.file,
        "pos": p.pos,
        "gtid": gtid.replace("\n", ""),
        "flavor": "mariadb" if maria else "mysql",
        "at": at.replace(microsecond=at.microsecond // 1000 * 1000),  # as BSON stores it
    }
