"""Schema changes met in the binlog, handled per --on-ddl: stop before them (the default),
ignore them, or extend the mapping with added nullable columns (the documents holding existing
rows get the column's default, which the binlog never carries)."""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from migrator.cdc.applier import Applier
from migrator.cdc.binlog import DDL
from migrator.cdc.loop import CdcSummary
from migrator.errors import CheckFailed
from migrator.model.schema import split_top_level
from migrator.runtime import Migration
from migrator.source.defaults import column_defaults as read_defaults
from migrator.source.position import is_mariadb
from migrator.source.schema import introspect
from migrator.state.store import StateStore

OnDDL = Literal["stop", "ignore", "extend"]
log = logging.getLogger("migrator.cdc")


def handle_ddl(
    item: DDL,
    on_ddl: OnDDL,
    mig: Migration,
    tables: set[str],
    source: Any,
    applier: Applier,
    state: StateStore,
    summary: CdcSummary,
) -> None:
    """Apply the --on-ddl policy to a schema change (raises CheckFailed to stop)."""
    db = mig.source_database
    relevant = (item.schema in (None, db) or f"{db}." in item.statement) and (
        not item.tables or any(t in tables for t in item.tables)
    )
    record = {
        "statement": item.statement[:500],
        "position": item.position.to_dict(),
        "action": "ignored (unmapped)" if not relevant else on_ddl,
    }
    summary.ddl.append(record)
    log.warning("ddl seen", extra=record)
    if not relevant or on_ddl == "ignore":
        return
    if on_ddl == "extend":
        problem = adds_only_nullable_columns(item.statement)
        if problem is None:
            conn = mig.connect_source()
            try:
                new_schema = introspect(conn, db)
                # the columns the statement adds, by its text: the schema read at start may
                # already have them (a restart replaying the DDL)
                added = {
                    t: [
                        c
                        for c in added_columns(item.statement)
                        if new_schema.tables[t].has_column(c)
                    ]
                    for t in item.tables[:1]
                    if t in new_schema.tables
                }
                defaults, problem = column_defaults(conn, db, added)
            finally:
                conn.close()
            if problem is None:
                source.set_schema(new_schema)
                applier.set_transform(mig.use_schema(new_schema))
                # existing rows got the new column's default without a binlog event: so do
                # the documents holding them
                applier.fill_added_columns(defaults)
                record["action"] = "extended"
                return
        record["action"] = f"stopped: {problem}"
    # stop: the checkpoint stays before the statement, so a rerun meets it again
    state.save_cdc_checkpoint(item.position.to_dict(), stopped_at_ddl=item.statement[:500])
    raise CheckFailed(
        f"DDL on a mapped table at {item.position}: {item.statement.strip()[:300]}",
        hint="update the mapping if needed, then rerun with --on-ddl ignore (skip it) or "
        "--on-ddl extend (accept added nullable columns)",
    )


def column_defaults(
    conn: Any, db: str, added: dict[str, list[str]]
) -> tuple[dict[str, dict[str, Any]], str | None]:
    """{table: {column: default as a SELECT would return it}} for added columns, or why a
    default cannot be known here (one MySQL computes per row)."""
    out: dict[str, dict[str, Any]] = {}
    maria = is_mariadb(conn)
    for table, cols in added.items():
        defaults = read_defaults(conn, db, table, maria=maria)
        for col in cols:
            d = defaults.get(col)
            if d is not None and d.computed:
                return out, f"{table}.{col} has a default MySQL computes per row ({d.computed})"
            out.setdefault(table, {})[col] = d.value if d is not None else None
    return out, None


def added_columns(statement: str) -> list[str]:
    """The column names an ALTER TABLE … ADD [COLUMN] statement adds."""
    names = re.findall(
        r"\bADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(`(?:[^`]|``)+`|\w+)",
        statement,
        re.I,
    )
    out = []
    for n in names:
        if n.upper() in ("INDEX", "KEY", "UNIQUE", "PRIMARY", "CONSTRAINT", "FOREIGN"):
            continue
        out.append(n[1:-1].replace("``", "`") if n.startswith("`") else n)
    return out


def adds_only_nullable_columns(statement: str) -> str | None:
    """None when the statement only adds nullable columns; else what it does beyond that.

    Judged on the statement itself: the schema read now may already be newer than the event.
    """
    m = re.match(r"\s*ALTER\s+(?:ONLINE\s+|IGNORE\s+)*TABLE\s+\S+\s+(.*)$", statement, re.I | re.S)
    if not m:
        return "it is not an ALTER TABLE … ADD COLUMN"
    clauses = split_top_level(m.group(1))
    for c in (x.strip() for x in clauses):
        if not re.match(
            r"ADD\s+(COLUMN\s+)?(IF\s+NOT\s+EXISTS\s+)?`?\w+`?\s+\w+", c, re.I
        ) or re.match(
            r"ADD\s+(INDEX|KEY|UNIQUE|PRIMARY|CONSTRAINT|FOREIGN|FULLTEXT|SPATIAL)\b", c, re.I
        ):
            return f"{c[:60]!r} is not an added column"
        if re.search(r"\bNOT\s+NULL\b|\bPRIMARY\s+KEY\b|\bAUTO_INCREMENT\b", c, re.I):
            return f"{c[:60]!r} is added NOT NULL (or as a key)"
    return None
