"""Binlog positions: where CDC starts. Read before the backfill reads a single row."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from migrator.errors import CheckFailed
from migrator.source.connection import as_text, query, variables


def is_mariadb(conn: Any) -> bool:
    return "mariadb" in as_text(query(conn, "SELECT VERSION()")[0][0]).lower() or bool(
        variables(conn, "gtid_binlog_pos")
    )


def current_position(conn: Any) -> dict[str, Any]:
    """The source's binlog file/pos and GTID set now."""
    rows = query(conn, "SHOW MASTER STATUS")
    if not rows:
        raise CheckFailed(
            "the source has no binary log (log_bin is OFF)",
            hint="start the server with log-bin and binlog-format=ROW",
        )
    file, pos = as_text(rows[0][0]), int(rows[0][1])
    at = datetime.now(UTC).replace(tzinfo=None)
    maria = is_mariadb(conn)
    gtid_var = "gtid_binlog_pos" if maria else "gtid_executed"
    gtid = variables(conn, gtid_var).get(gtid_var, "")
    return {
        "file": file,
        "pos": pos,
        "gtid": gtid.replace("\n", ""),
        "flavor": "mariadb" if maria else "mysql",
        "at": at.replace(microsecond=at.microsecond // 1000 * 1000),  # as BSON stores it
    }
