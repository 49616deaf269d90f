"""Schema introspection from information_schema: tables, columns, primary keys, foreign keys."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
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
    # ENUM/SET members in definition order, as written (column_type is lower-cased; a SET
    # value's members are listed in this order)
    members: tuple[str, ...] = ()

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


def type_members(column_type: str) -> tuple[str, ...]:
    """The members of an ENUM(...) or SET(...) type, unquoted, in definition order."""
    m = re.match(r"(?:enum|set)\((.*)\)$", column_type, re.S | re.I)
    if not m:
        return ()
    return tuple(_unescape(x) for x in re.findall(r"'((?:[^'\\]|''|\\.)*)'", m.group(1), re.S))


# How the server writes a member in COLUMN_TYPE and SHOW CREATE TABLE (append_unescaped):
# quotes doubled, and these characters after a backslash
_ESCAPES = {"\\": "\\", "0": "\0", "Z": "\x1a", "n": "\n", "r": "\r", "'": "'", "t": "\t"}


def _unescape(text: str) -> str:
    return re.sub(
        r"''|\\(.)",
        lambda e: "'" if e.group(0) == "''" else _ESCAPES.get(e.group(1), e.group(1)),
        text,
        flags=re.S,
    )


@dataclass(frozen=True)
class ForeignKey:
    name: str
    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_delete: str  # CASCADE | SET NULL | RESTRICT | NO ACTION | SET DEFAULT
    on_update: str
    # None: the table's own database. Left out of repr: the fingerprint a write switch saves
    # is made of these reprs, and keys to other databases are not in it.
    ref_database: str | None = field(default=None, repr=False)


@dataclass
class Table:
    name: str
    columns: list[Column]
    primary_key: list[str]
    rows_estimate: int = 0
    avg_row_length: int = 0
    foreign_keys: list[ForeignKey] = field(default_factory=list)  # to this database's tables
    outside_foreign_keys: list[ForeignKey] = field(default_factory=list)  # to other databases

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
    # tables whose columns are visible but whose definition SHOW CREATE TABLE refused:
    # their foreign keys are unknown
    unreadable: set[str] = field(default_factory=set)

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
                members=type_members(_s(r["column_type"])),
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


_TOKEN = re.compile(
    r"""\s+|/\*.*?\*/|(?P<id>`(?:[^`]|``)*`|"(?:[^"]|"")*")|(?P<str>'(?:[^'\\]|''|\\.)*')"""
    r"""|(?P<word>[^\s`"'(),.;/]+)|(?P<punct>[(),.;/])""",
    re.S,
)
_RULE = re.compile(r"ON (DELETE|UPDATE) (CASCADE|SET NULL|SET DEFAULT|RESTRICT|NO ACTION)\b")
Token = tuple[str, str]  # (kind, text): id (a quoted name, unquoted), str, word, punct


def _tokens(text: str) -> list[Token]:
    out: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # an unclosed quote or comment: nothing after it is a key
            break
        pos = m.end()
        if m.lastgroup == "id":
            q = m["id"][0]
            out.append(("id", m["id"][1:-1].replace(q + q, q)))
        elif m.lastgroup is not None:
            out.append((m.lastgroup, m[m.lastgroup]))
    return out


def _kw(tok: Token) -> str:
    """The keyword a token is (upper case), or "" for names, strings and punctuation."""
    return tok[1].upper() if tok[0] == "word" else ""


def parse_foreign_keys(create_table: str, table: str) -> list[ForeignKey]:
    """The foreign keys in a `SHOW CREATE TABLE` statement (MySQL or MariaDB), in order.
    An absent ON DELETE / ON UPDATE is RESTRICT; `ref_database` is set only when the statement
    names one (the server writes it for a table of another database)."""
    # the table's items: between the first "(" and its ")", split at top-level commas
    items: list[list[Token]] = []
    depth = 0
    for tok in _tokens(create_table):
        if tok == ("punct", "("):
            depth += 1
            if depth == 1:
                items.append([])
                continue
        elif tok == ("punct", ")"):
            depth -= 1
            if depth == 0:
                break
        if depth == 1 and tok == ("punct", ","):
            items.append([])
        elif depth >= 1:
            items[-1].append(tok)
    keys = (_foreign_key(item, table) for item in items)
    return [fk for fk in keys if fk is not None]


def _foreign_key(item: list[Token], table: str) -> ForeignKey | None:
    item = [*item, ("end", "")]  # so that item[i] exists wherever parsing stops
    i, name = 0, ""
    if _kw(item[0]) == "CONSTRAINT":
        i = 1
        if item[i][0] == "id" or (item[i][0] == "word" and _kw(item[i]) != "FOREIGN"):
            name, i = item[i][1], i + 1
    if _kw(item[i]) != "FOREIGN" or _kw(item[i + 1]) != "KEY":
        return None
    i += 2
    if item[i][0] in ("id", "word"):
        i += 1  # an index name (CREATE TABLE may give one; SHOW CREATE TABLE does not)
    columns, i = _names(item, i)
    if _kw(item[i]) != "REFERENCES" or item[i + 1][0] not in ("id", "word"):
        return None
    ref_db, ref_table, i = None, item[i + 1][1], i + 2
    if item[i] == ("punct", ".") and item[i + 1][0] in ("id", "word"):
        ref_db, ref_table, i = ref_table, item[i + 1][1], i + 2
    ref_columns, i = _names(item, i)
    if not columns or len(columns) != len(ref_columns):
        return None
    rules = {"DELETE": "RESTRICT", "UPDATE": "RESTRICT"}
    clauses = " ".join(_kw(t) or "-" for t in item[i:])
    for m in _RULE.finditer(clauses):
        rules[m[1]] = m[2]
    return ForeignKey(
        name=name,
        table=table,
        columns=tuple(columns),
        ref_table=ref_table,
        ref_columns=tuple(ref_columns),
        on_delete=rules["DELETE"],
        on_update=rules["UPDATE"],
        ref_database=ref_db,
    )


def _names(item: list[Token], i: int) -> tuple[list[str], int]:
    """The names of `(a, b)` at item[i], and the index after its ")"."""
    if item[i] != ("punct", "("):
        return [], i
    names = []
    i += 1
    while item[i][0] != "end" and item[i] != ("punct", ")"):
        if item[i][0] in ("id", "word"):
            names.append(item[i][1])
        i += 1
    return names, i + 1
