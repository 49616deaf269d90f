"""Schema introspection: information_schema and SHOW CREATE TABLE read into model.schema."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from migrator.model.schema import Column, Schema, Table, parse_foreign_keys, type_members


def _rows(conn: Any, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    cur = conn.cursor()
    cur.execute(sql, args)
    names = [d[0].lower() for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes | bytearray) else str(v)


_GENERATED = ("virtual generated", "stored generated", "persistent generated")


def introspect(conn: Any, database: str) -> Schema:
    """Read the schema of `database` through a (converting) MySQLdb connection."""
    cols = _rows(
        conn,
        """
        SELECT TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION,
               NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME, COLLATION_NAME,
               ORDINAL_POSITION, COLUMN_DEFAULT, EXTRA
        FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s
        ORDER BY TABLE_NAME, ORDINAL_POSITION""",
        (database,),
    )
    json_cols = _mariadb_json_columns(conn, database)
    tables: dict[str, list[Column]] = {}
    for r in cols:
        tname, cname = _s(r["table_name"]), _s(r["column_name"])
        dtype = _s(r["data_type"]).lower()
        extra = _s(r["extra"] or "").lower()
        if (tname, cname) in json_cols:
            dtype = "json"
        tables.setdefault(tname, []).append(
            Column(
                name=cname,
                data_type=dtype,
                column_type=_s(r["column_type"]).lower(),
                members=type_members(_s(r["column_type"])),
                nullable=_s(r["is_nullable"]) == "YES",
                precision=r["numeric_precision"],
                scale=r["numeric_scale"],
                fsp=r["datetime_precision"],
                charset=_s(r["character_set_name"]) if r["character_set_name"] else None,
                collation=_s(r["collation_name"]) if r["collation_name"] else None,
                has_default=r["column_default"] is not None or "auto_increment" in extra,
                generated=any(g in extra for g in _GENERATED),
            )
        )
    meta = {
        _s(r["table_name"]): r
        for r in _rows(
            conn,
            """
        SELECT TABLE_NAME, TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES
        WHERE TABLE_SCHEMA = %s AND TABLE_TYPE = 'BASE TABLE'""",
            (database,),
        )
    }
    pks: dict[str, list[str]] = {}
    for r in _rows(
        conn,
        """
        SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.STATISTICS
        WHERE TABLE_SCHEMA = %s AND INDEX_NAME = 'PRIMARY' ORDER BY TABLE_NAME, SEQ_IN_INDEX""",
        (database,),
    ):
        pks.setdefault(_s(r["table_name"]), []).append(_s(r["column_name"]))
    out: dict[str, Table] = {}
    for tname, columns in tables.items():
        if tname not in meta:
            continue  # a view
        m = meta[tname]
        out[tname] = Table(
            name=tname,
            columns=columns,
            primary_key=pks.get(tname, []),
            rows_estimate=int(m["table_rows"] or 0),
            avg_row_length=int(m["avg_row_length"] or 0),
        )
    unreadable = _read_foreign_keys(conn, database, out)
    return Schema(database=database, tables=out, unreadable=unreadable)


def _mariadb_json_columns(conn: Any, database: str) -> set[tuple[str, str]]:
    """MariaDB stores JSON as LONGTEXT with a json_valid() CHECK constraint."""
    try:
        rows = _rows(
            conn,
            """
            SELECT TABLE_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS
            WHERE CONSTRAINT_SCHEMA = %s""",
            (database,),
        )
    except Exception:  # MySQL < 8.0.16 has no CHECK_CONSTRAINTS
        return set()
    found = set()
    for r in rows:
        m = re.fullmatch(r"\s*json_valid\(`?([^`)]+)`?\)\s*", _s(r["check_clause"]), re.I)
        if m:
            found.add((_s(r["table_name"]), m.group(1)))
    return found


# Refusals of SHOW CREATE TABLE that mean "not for this user" (or "gone since listed"):
# table/column access denied, database access denied, no such table.
_NOT_READABLE = {1142, 1143, 1044, 1146}


def _read_foreign_keys(conn: Any, database: str, tables: dict[str, Table]) -> set[str]:
    """Every table's foreign keys, from SHOW CREATE TABLE: it needs only SELECT, while
    MariaDB shows information_schema.REFERENTIAL_CONSTRAINTS rows (the ON DELETE / ON UPDATE
    rules) only to users with REFERENCES. Returns the tables it could not read."""
    cur = conn.cursor()
    cur.execute("SELECT @@SESSION.sql_mode, @@SESSION.sql_quote_show_create")
    mode, quote = cur.fetchone()
    # backquoted names (spaces, commas) and no sql_mode that changes how the server writes
    # the statement (ANSI_QUOTES, MYSQL40...); put back afterwards
    cur.execute("SET SESSION sql_mode = '', sql_quote_show_create = 1")
    unreadable: set[str] = set()
    try:
        for name, table in tables.items():
            try:
                cur.execute(f"SHOW CREATE TABLE {_quote(database)}.{_quote(name)}")
                row = cur.fetchone()
            except Exception as exc:
                if not exc.args or exc.args[0] not in _NOT_READABLE:
                    raise
                unreadable.add(name)
                continue
            # by name, as information_schema listed them before
            for fk in sorted(parse_foreign_keys(_s(row[1]), name), key=lambda k: k.name):
                if fk.ref_database in (None, database):
                    table.foreign_keys.append(replace(fk, ref_database=None))
                else:
                    table.outside_foreign_keys.append(fk)
    finally:
        cur.execute("SET SESSION sql_mode = %s, sql_quote_show_create = %s", (_s(mode), int(quote)))
    return unreadable


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
