"""Schema introspection from information_schema: tables, columns, primary keys, foreign keys."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import SchemaError

INTEGER_TYPES = {"tinyint", "smallint", "mediumint", "int", "integer", "bigint"}
TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
GEOMETRY_TYPES = {
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
}


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str  # lower-case, e.g. "int", "decimal", "json"
    column_type: str  # full, e.g. "bigint(20) unsigned"
    nullable: bool = True
    precision: int | None = None
    scale: int | None = None
    fsp: int | None = None  # fractional seconds precision of TIME/DATETIME/TIMESTAMP
    charset: str | None = None
    has_default: bool = False  # DEFAULT, AUTO_INCREMENT: MySQL fills it when a write omits it
    generated: bool = False  # GENERATED ALWAYS AS (...): MySQL computes it, nobody writes it

    @property
    def unsigned(self) -> bool:
        return "unsigned" in self.column_type

    @property
    def display_width(self) -> int | None:
        m = re.match(r"\w+\((\d+)\)", self.column_type)
        return int(m.group(1)) if m else None

    @property
    def is_bool(self) -> bool:
        """TINYINT(1) and BIT(1) map to bool."""
        if self.data_type == "tinyint":
            return self.column_type.startswith("tinyint(1)")
        return self.data_type == "bit" and self.display_width in (None, 1)

    @property
    def is_integer(self) -> bool:
        return self.data_type in INTEGER_TYPES

    @property
    def is_binary(self) -> bool:
        return self.data_type in BINARY_TYPES or self.data_type in GEOMETRY_TYPES


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str
    on_update: str


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str]
    rows_estimate: int = 0
    avg_row_length: int = 0
    foreign_keys: list[ForeignKey] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {c.name: c for c in self.columns}

    def column(self, name: str) -> Column:
        try:
            return self._by_name[name]
        except KeyError:
            raise SchemaError(f"table {self.name!r} has no column {name!r}") from None

    def has_column(self, name: str) -> bool:
        return name in self._by_name

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass
class Schema:
    database: str
    tables: dict[str, Table]

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise SchemaError(f"database {self.database!r} has no table {name!r}") from None

    def referencing(self, table: str) -> list[ForeignKey]:
        """Foreign keys of other tables that point at `table`."""
        return [fk for t in self.tables.values() for fk in t.foreign_keys if fk.ref_table == table]

    def fingerprint(self, tables: Iterable[str]) -> str:
        """The columns and keys of `tables` (not their sizes), and every foreign key from or
        to them (CDC's cascade rules come from those), as one comparable string."""
        names = sorted(set(tables))
        shape = [
            (t, repr((self.tables[t].columns, self.tables[t].primary_key)))
            if t in self.tables
            else (t, "")
            for t in names
        ]
        fks = sorted(
            repr(fk)
            for t in self.tables.values()
            for fk in t.foreign_keys
            if fk.table in names or fk.ref_table in names
        )
        return hashlib.sha256(repr((shape, fks)).encode()).hexdigest()


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
               NUMERIC_SCALE, DATETIME_PRECISION, CHARACTER_SET_NAME, ORDINAL_POSITION,
               COLUMN_DEFAULT, EXTRA
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
                nullable=_s(r["is_nullable"]) == "YES",
                precision=r["numeric_precision"],
                scale=r["numeric_scale"],
                fsp=r["datetime_precision"],
                charset=_s(r["character_set_name"]) if r["character_set_name"] else None,
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
    fks: dict[str, dict[str, Any]] = {}
    for r in _rows(
        conn,
        """
        SELECT k.CONSTRAINT_NAME, k.TABLE_NAME, k.COLUMN_NAME, k.REFERENCED_TABLE_NAME,
               k.REFERENCED_COLUMN_NAME, c.DELETE_RULE, c.UPDATE_RULE
        FROM information_schema.KEY_COLUMN_USAGE k
        JOIN information_schema.REFERENTIAL_CONSTRAINTS c
          ON c.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND c.CONSTRAINT_NAME = k.CONSTRAINT_NAME
         AND c.TABLE_NAME = k.TABLE_NAME
        WHERE k.TABLE_SCHEMA = %s AND k.REFERENCED_TABLE_NAME IS NOT NULL
        ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION""",
        (database,),
    ):
        key = f"{_s(r['table_name'])}.{_s(r['constraint_name'])}"
        fk = fks.setdefault(
            key,
            {
                "name": _s(r["constraint_name"]),
                "table": _s(r["table_name"]),
                "columns": [],
                "ref_table": _s(r["referenced_table_name"]),
                "ref_columns": [],
                "on_delete": _s(r["delete_rule"]),
                "on_update": _s(r["update_rule"]),
            },
        )
        fk["columns"].append(_s(r["column_name"]))
        fk["ref_columns"].append(_s(r["referenced_column_name"]))
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
            foreign_keys=[
                ForeignKey(
                    name=f["name"],
                    table=f["table"],
                    columns=tuple(f["columns"]),
                    ref_table=f["ref_table"],
                    ref_columns=tuple(f["ref_columns"]),
                    on_delete=f["on_delete"],
                    on_update=f["on_update"],
                )
                for f in fks.values()
                if f["table"] == tname
            ],
        )
    return Schema(database=database, tables=out)


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


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """`text` split at `sep` outside parentheses: `a, DECIMAL(10,2), b` -> 3 parts (SQL column
    lists, privilege lists with column names)."""
    depth, part, parts = 0, "", []
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(part)
            part = ""
        else:
            part += ch
    parts.append(part)
    return parts
