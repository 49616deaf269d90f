"""Column defaults as MySQL fills them when a write leaves a column out, read from
information_schema.COLUMNS (MariaDB quotes string literals there and writes `NULL`; MySQL 8
leaves literals bare and marks expressions DEFAULT_GENERATED)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from migrator.source.connection import as_text, query


@dataclass(frozen=True)
class Default:
    """What MySQL puts in a column an INSERT leaves out: `value` (text, as a SELECT returns
    it; None for NULL), or `computed` (an expression or AUTO_INCREMENT, per row), or
    `missing` (no default: strict mode refuses the insert)."""

    value: Any = None
    computed: str | None = None
    missing: bool = False


def column_defaults(conn: Any, db: str, table: str, *, maria: bool) -> dict[str, Default]:
    rows = query(
        conn,
        "SELECT COLUMN_NAME, COLUMN_DEFAULT, EXTRA, IS_NULLABLE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
        (db, table),
    )
    out: dict[str, Default] = {}
    for name, raw, extra, nullable in rows:
        text = None if raw is None else as_text(raw)
        ex = as_text(extra or "").lower()
        out[as_text(name)] = _default(text, ex, as_text(nullable) == "YES", maria)
    return out


def _default(text: str | None, extra: str, nullable: bool, maria: bool) -> Default:
    if "auto_increment" in extra:
        return Default(computed="AUTO_INCREMENT")
    if "generated" in extra and "default_generated" not in extra:
        return Default(computed="a generated column")
    if text is None:
        return Default() if nullable else Default(missing=True)
    if maria:
        if text.upper() == "NULL":
            return Default()
        if text.startswith("'") and text.endswith("'"):
            return Default(value=text[1:-1].replace("''", "'").replace("\\\\", "\\"))
        if re.fullmatch(r"-?\d+(\.\d+)?([eE][-+]?\d+)?", text):
            return Default(value=text)
        return Default(computed=text)
    if "default_generated" in extra:
        return Default(computed=text)
    return Default(value=text)
