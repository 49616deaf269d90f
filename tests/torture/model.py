"""A seeded random schema and the mapping of it, as plain data the oracle reads.

Tables come in 3-level foreign-key trees (root -> child -> grandchild), plus lookup tables the
roots point at (embedded N:1). Keys are INT (negative and zero included), BIGINT UNSIGNED (above
2^63), VARCHAR, or composite; every foreign-key action appears (CASCADE, SET NULL, RESTRICT on
delete and update); payload columns come from the type corpus below. The mapping embeds children
as arrays and lookups as sub-documents, gives some tables collections of their own, renames,
excludes, nests (dotted names) and overrides a type now and then.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

# kind -> SQL type. The oracle converts each kind by DESIGN.md's rules, independently.
TYPES: dict[str, str] = {
    "int": "INT",
    "bigint_u": "BIGINT UNSIGNED",
    "tinyint": "TINYINT",
    "bool": "TINYINT(1)",
    "varchar": "VARCHAR(40)",
    "char": "CHAR(6)",
    "text": "TEXT",
    "decimal": "DECIMAL(12,3)",
    "decimal_big": "DECIMAL(30,10)",
    "double": "DOUBLE",
    "float": "FLOAT",
    "datetime": "DATETIME",
    "datetime6": "DATETIME(6)",
    "timestamp": "TIMESTAMP(3) NULL",
    "date": "DATE",
    "time": "TIME(3)",
    "year": "YEAR",
    "bit1": "BIT(1)",
    "bit8": "BIT(8)",
    "enum": "ENUM('red','green','blue')",
    "set": "SET('x','y','z')",
    "json": "JSON",
    "blob": "BLOB",
    "varbinary": "VARBINARY(16)",
}
SET_VALUES = ["x", "y", "z"]
KEY_KINDS = ["int", "bigint_u", "varchar", "composite"]
U64 = 2**64 - 1


@dataclass
class Col:
    name: str
    kind: str
    nullable: bool = True

    @property
    def ddl(self) -> str:
        t = TYPES[self.kind]
        if "NULL" in t:
            return f"`{self.name}` {t}"
        return f"`{self.name}` {t}{'' if self.nullable else ' NOT NULL'}"


@dataclass
class FK:
    name: str
    cols: list[str]
    ref: str
    ref_cols: list[str]
    on_delete: str
    on_update: str

    @property
    def ddl(self) -> str:
        return (
            f"CONSTRAINT `{self.name}` FOREIGN KEY ({', '.join(self.cols)}) REFERENCES "
            f"`{self.ref}` ({', '.join(self.ref_cols)}) "
            f"ON DELETE {self.on_delete} ON UPDATE {self.on_update}"
        )


@dataclass
class Table:
    name: str
    cols: list[Col]
    pk: list[str]
    key_kind: str
    fks: list[FK] = field(default_factory=list)
    role: str = "root"  # root | child | grandchild | lookup
    parent: str | None = None  # the table the identifying FK points at

    def col(self, name: str) -> Col:
        return next(c for c in self.cols if c.name == name)

    @property
    def payload(self) -> list[Col]:
        keys = set(self.pk) | {c for fk in self.fks for c in fk.cols}
        return [c for c in self.cols if c.name not in keys]

    @property
    def ddl(self) -> str:
        parts = [c.ddl for c in self.cols] + [f"PRIMARY KEY ({', '.join(self.pk)})"]
        parts += [fk.ddl for fk in self.fks]
        return f"CREATE TABLE `{self.name}` (\n  " + ",\n  ".join(parts) + "\n) ENGINE=InnoDB"


@dataclass
class Projection:
    """How a table's rows become a (sub-)document: renames, excludes, type overrides."""

    rename: dict[str, str] = field(default_factory=dict)  # column -> field name (dotted ok)
    exclude: list[str] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)  # column -> mapping type override
    only: list[str] | None = None  # all_columns: false, these columns only


@dataclass
class Embed:
    as_: str
    table: str
    on: dict[str, str]  # embedded column -> root column
    many: bool
    order_by: list[str]
    proj: Projection


@dataclass
class Coll:
    name: str
    table: str
    proj: Projection
    embeds: list[Embed] = field(default_factory=list)
    nulls: str = "keep"


@dataclass
class Model:
    seed: int
    tables: dict[str, Table]
    colls: list[Coll]

    def create_order(self) -> list[Table]:
        order = {"lookup": 0, "root": 1, "child": 2, "grandchild": 3}
        return sorted(self.tables.values(), key=lambda t: order[t.role])

    def mapping_yaml(self, mysql_url: str, mongo_url: str, target_db: str, state_db: str) -> str:
        import yaml

        colls = []
        for c in self.colls:
            d: dict[str, Any] = {"name": c.name, "from": c.table, **_proj(c.proj)}
            if c.nulls != "keep":
                d["nulls"] = c.nulls
            if c.embeds:
                d["embed"] = [
                    {
                        "as": e.as_,
                        "from": e.table,
                        "on": dict(e.on),
                        "many": e.many,
                        **({"order_by": e.order_by} if e.order_by else {}),
                        **_proj(e.proj),
                    }
                    for e in c.embeds
                ]
            colls.append(d)
        doc = {
            "version": 1,
            "source": {"url": mysql_url},
            "target": {"url": mongo_url, "database": target_db},
            "state": {"database": state_db},
            "backfill": {"chunk_size": 37, "workers": 2},
            "collections": colls,
        }
        return yaml.safe_dump(doc, sort_keys=False)


def _proj(p: Projection) -> dict[str, Any]:
    d: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for col in p.only or []:
        fields[p.rename.get(col, col)] = col
    for col, name in p.rename.items():
        fields[name] = {"column": col, "type": p.types[col]} if col in p.types else col
    for col, t in p.types.items():
        if col not in p.rename:
            fields[col] = {"column": col, "type": t}
    if fields:
        d["fields"] = fields
    if p.exclude:
        d["exclude"] = list(p.exclude)
    if p.only is not None:
        d["all_columns"] = False
    return d


# ------------------------------------------------------------------------------ generation
_PAYLOAD = [k for k in TYPES if k not in ("bigint_u",)]


def _key_cols(rnd: random.Random, kind: str, prefix: str) -> list[Col]:
    if kind == "composite":
        return [Col(f"{prefix}_a", "int", False), Col(f"{prefix}_b", "int", False)]
    if kind == "varchar":
        return [Col(f"{prefix}_id", "varchar", False)]
    return [Col(f"{prefix}_id", kind, False)]


def generate(seed: int) -> Model:
    rnd = random.Random(seed)
    tables: dict[str, Table] = {}

    def payload(n: int, prefix: str) -> list[Col]:
        kinds = rnd.sample(_PAYLOAD, n)
        return [Col(f"{prefix}{i}_{k}", k, rnd.random() < 0.7) for i, k in enumerate(kinds)]

    def action(nullable_ok: bool, on: str) -> str:
        choices = ["CASCADE", "RESTRICT", "CASCADE"]
        if nullable_ok:
            choices.append("SET NULL")
        if on == "update":
            choices.append("CASCADE")
        return rnd.choice(choices)

    lookups = []
    for i in range(rnd.randint(1, 2)):
        kind = rnd.choice(["int", "varchar"])
        t = Table(
            f"lk{i}", _key_cols(rnd, kind, f"lk{i}") + payload(2, "v"), [], kind, role="lookup"
        )
        t.pk = [c.name for c in t.cols[:1]]
        tables[t.name] = t
        lookups.append(t)
    for r in range(rnd.randint(1, 2)):
        kind = rnd.choice(KEY_KINDS)
        keys = _key_cols(rnd, kind, f"r{r}")
        root = Table(
            f"root{r}", keys + payload(rnd.randint(2, 4), "p"), [k.name for k in keys], kind
        )
        lk = rnd.choice(lookups)
        ref = lk.col(lk.pk[0])
        fk_col = Col(f"ref_{lk.name}", ref.kind, True)
        root.cols.append(fk_col)
        root.fks.append(
            FK(
                f"fk_{root.name}_{lk.name}",
                [fk_col.name],
                lk.name,
                lk.pk,
                action(True, "delete"),
                action(True, "update"),
            )
        )
        tables[root.name] = root
        for c in range(rnd.randint(1, 2)):
            child = _child(rnd, f"c{r}{c}", root, "child", payload(rnd.randint(1, 3), "q"), action)
            tables[child.name] = child
            if rnd.random() < 0.6:
                g = _child(
                    rnd, f"g{r}{c}", child, "grandchild", payload(rnd.randint(1, 2), "s"), action
                )
                tables[g.name] = g
    return Model(seed, tables, _mapping(rnd, tables))


def _child(
    rnd: random.Random, name: str, parent: Table, role: str, cols: list[Col], action: Any
) -> Table:
    parent_keys = [parent.col(k) for k in parent.pk]
    own = rnd.random() < 0.5 or (len(parent_keys) > 1 and role == "grandchild")
    fk_cols = [Col(f"{name}_{k.name}", k.kind, own) for k in parent_keys]
    if own:  # its own key; the foreign key is a plain (nullable) column
        key = Col(f"{name}_id", "int", False)
        t = Table(name, [key, *fk_cols, *cols], [key.name], "int", role=role, parent=parent.name)
    else:  # composite: the parent's key, then a line number
        line = Col(f"{name}_line", "int", False)
        t = Table(
            name,
            [*fk_cols, line, *cols],
            [*(c.name for c in fk_cols), line.name],
            "composite",
            role=role,
            parent=parent.name,
        )
    t.fks.append(
        FK(
            f"fk_{name}",
            [c.name for c in fk_cols],
            parent.name,
            list(parent.pk),
            action(own, "delete"),
            action(own, "update"),
        )
    )
    return t


def _projection(rnd: random.Random, t: Table, protect: set[str]) -> Projection:
    p = Projection()
    for c in t.payload:
        x = rnd.random()
        if x < 0.15:
            p.rename[c.name] = f"ren_{c.name}"
        elif x < 0.22:
            p.rename[c.name] = f"nest.{c.name}"
        elif x < 0.3 and c.name not in protect:
            p.exclude.append(c.name)
        elif x < 0.36 and c.kind in ("decimal", "int"):
            p.types[c.name] = "string"
    return p


def _mapping(rnd: random.Random, tables: dict[str, Table]) -> list[Coll]:
    colls: list[Coll] = []
    mapped: set[str] = set()
    children = [t for t in tables.values() if t.role == "child"]
    grands = [t for t in tables.values() if t.role == "grandchild"]
    for root in [t for t in tables.values() if t.role == "root"]:
        coll = Coll(f"col_{root.name}", root.name, _projection(rnd, root, set()))
        if rnd.random() < 0.2:
            coll.nulls = "omit"
        for ch in [c for c in children if c.parent == root.name]:
            if rnd.random() < 0.75:
                fk = ch.fks[0]
                order = [c.name for c in ch.payload if c.kind in ("int", "varchar", "date")][:1]
                order = order if rnd.random() < 0.5 else []
                coll.embeds.append(
                    Embed(
                        f"arr_{ch.name}",
                        ch.name,
                        dict(zip(fk.cols, fk.ref_cols, strict=True)),
                        True,
                        order,
                        # an order_by column stays in the elements (the mapping refuses else)
                        _projection(rnd, ch, set(order)),
                    )
                )
                mapped.add(ch.name)
        for fk in root.fks:
            if rnd.random() < 0.7:
                lk = tables[fk.ref]
                proj = _projection(rnd, lk, set())
                if rnd.random() < 0.4:
                    proj = Projection(only=[lk.pk[0], lk.payload[0].name])
                coll.embeds.append(
                    Embed(
                        f"one_{lk.name}",
                        lk.name,
                        dict(zip(fk.ref_cols, fk.cols, strict=True)),
                        False,
                        [],
                        proj,
                    )
                )
        colls.append(coll)
    for ch in children:
        if ch.name not in mapped or rnd.random() < 0.5:
            coll = Coll(f"col_{ch.name}", ch.name, _projection(rnd, ch, set()))
            for g in [g for g in grands if g.parent == ch.name]:
                if rnd.random() < 0.5:
                    fk = g.fks[0]
                    coll.embeds.append(
                        Embed(
                            f"arr_{g.name}",
                            g.name,
                            dict(zip(fk.cols, fk.ref_cols, strict=True)),
                            True,
                            [],
                            _projection(rnd, g, set()),
                        )
                    )
                    mapped.add(g.name)
            colls.append(coll)
            mapped.add(ch.name)
    for g in grands:
        if g.name not in mapped or rnd.random() < 0.4:
            colls.append(Coll(f"col_{g.name}", g.name, _projection(rnd, g, set())))
    for lk in [t for t in tables.values() if t.role == "lookup"]:
        if rnd.random() < 0.5:
            colls.append(Coll(f"col_{lk.name}", lk.name, _projection(rnd, lk, set())))
    return colls
