"""The source schema as data: tables, columns, keys and foreign keys (pure: introspection
fills it, see source/schema.py), and the parser of SHOW CREATE TABLE's foreign keys."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from migrator.errors import SchemaError

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
    # text columns: how MySQL compares them ('A' = 'a' in *_ci). Left out of repr: the
    # fingerprint a write switch saves is made of these reprs
    collation: str | None = field(default=None, repr=False)
    has_default: bool = False  # DEFAULT, AUTO_INCREMENT: MySQL fills it when a write omits it
    generated: bool = False  # GENERATED ALWAYS AS (...): MySQL computes it, nobody writes it
    # ENUM/SET members in definition order, as written (column_type is lower-cased; a SET
    # value's members are listed in this order)
    members: tuple[str, ...] = ()

    @property
    def folds_case(self) -> bool:
        """A text column MySQL compares case-insensitively (a `_ci` collation): a join on it
        matches 'ACME' to 'acme'."""
        return self.collation is not None and "_ci" in self.collation

    @property
    def pads(self) -> bool:
        """A text column whose collation ignores trailing spaces ('ACME ' = 'ACME'): every
        PAD SPACE collation; MySQL 8's `_0900_` ones and MariaDB's `_nopad_` ones do not."""
        c = self.collation or ""
        return bool(c) and "nopad" not in c and "_0900_" not in c

    def collate(self, v: Any) -> Any:
        """A value as this column's collation compares it (text: case folded for `_ci`,
        accents dropped unless `_as_`, trailing spaces ignored for PAD SPACE)."""
        if not (self.folds_case or self.pads):
            return v
        accents = not self.folds_case or "_as_" in (self.collation or "")
        return _fold(v, case=self.folds_case, accents=accents, pad=self.pads)

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


def _fold(v: Any, case: bool = True, accents: bool = False, pad: bool = True) -> Any:
    """Text as its collation compares it: case folded (`_ci`), accents dropped unless the
    collation keeps them, trailing spaces ignored (PAD SPACE)."""
    if isinstance(v, bytes | bytearray):
        v = bytes(v).decode("utf-8", "surrogateescape")
    if not isinstance(v, str):
        return v
    text = v.rstrip(" ") if pad else v
    if case:
        text = text.casefold()
    if accents:
        return text
    plain = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in plain if not unicodedata.combining(ch))
