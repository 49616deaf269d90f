"""A seeded random schema and the mapping of it, as plain data the oracle reads.

Tables come in 3-level foreign-key trees (root -> child -> grandchild), plus lookup tables the
roots point at (embedded N:1). A nested model (most seeds) adds, from its own random stream so
the flat part stays what it was: far lookups the lookups point at (a chain of parents), lookup
references from children (a sub-document in each element), grandchildren as arrays inside the
children's elements, and join tables between roots and lookups (many-to-many: join rows with
the lookup merged in, and arrays of one lookup field).

Keys are INT (negative and zero included), BIGINT UNSIGNED (above 2^63), VARCHAR, or
composite; every foreign-key action appears (CASCADE, SET NULL, RESTRICT on delete and
update); payload columns come from the type corpus below. The mapping embeds children
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
    role: str = "root"  # root | child | grandchild | lookup | far | join
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
    as_: str | None  # None: merged into the enclosing document
    table: str
    on: dict[str, str]  # embedded column -> enclosing table's column
    many: bool
    order_by: list[str]
    proj: Projection
    embeds: list[Embed] = field(default_factory=list)
    merge: bool = False
    values: str | None = None  # an array of this field of each element


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
        order = {"far": -1, "lookup": 0, "root": 1, "child": 2, "grandchild": 3, "join": 4}
        return sorted(self.tables.values(), key=lambda t: order[t.role])

    def mapping_yaml(self, mysql_url: str, mongo_url: str, target_db: str, state_db: str) -> str:
        import yaml

        colls = []
        for c in self.colls:
            d: dict[str, Any] = {"name": c.name, "from": c.table, **_proj(c.proj)}
            if c.nulls != "keep":
                d["nulls"] = c.nulls
            if c.embeds:
                d["embed"] = [_embed(e) for e in c.embeds]
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


def _embed(e: Embed) -> dict[str, Any]:
    d: dict[str, Any] = {} if e.as_ is None else {"as": e.as_}
    d.update({"from": e.table, "on": dict(e.on), "many": e.many})
    if e.order_by:
        d["order_by"] = e.order_by
    if e.merge:
        d["merge"] = True
    if e.values is not None:
        d["values"] = e.values
    d.update(_proj(e.proj))
    if e.embeds:
        d["embed"] = [_embed(x) for x in e.embeds]
    return d


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


def generate(seed: int, nested: bool | None = None) -> Model:
    """The seed's model; `nested` None: the seed decides (most seeds nest)."""
    model = _flat(seed)
    if nested is None:
        nested = random.Random(seed * 7 + 3).random() < 0.7
    if nested:
        _nest(random.Random(seed * 104729 + 11), model)
    return model


def _flat(seed: int) -> Model:
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


# ------------------------------------------------------------------------------ nesting
def _fk_to(rnd: random.Random, name: str, t: Table, ref: Table, nullable: bool) -> Col:
    """A nullable reference column from `t` to `ref`'s key, with a random action."""
    key = ref.col(ref.pk[0])
    col = Col(f"ref_{ref.name}", key.kind, True)
    t.cols.append(col)
    actions = ["CASCADE", "RESTRICT", "SET NULL"] if nullable else ["CASCADE", "RESTRICT"]
    t.fks.append(
        FK(name, [col.name], ref.name, [key.name], rnd.choice(actions), rnd.choice(actions))
    )
    return col


def _lookup_embed(rnd: random.Random, model: Model, lk: Table, ref_col: str, as_: str) -> Embed:
    """A lookup as a sub-document (or merged), with its far lookup nested when it has one."""
    proj = _projection(rnd, lk, set())
    if rnd.random() < 0.3:
        # a copy that keeps its reference columns: rows a cascade from a far lookup deletes
        # silently are found by them (without, `plan` rightly refuses the mapping)
        proj = Projection(only=[lk.pk[0], lk.payload[0].name, *_refs(lk)])
    e = Embed(as_, lk.name, {lk.pk[0]: ref_col}, False, [], proj)
    far = [fk for fk in lk.fks if model.tables[fk.ref].role == "far"]
    if far and rnd.random() < 0.8:
        fk = far[0]
        ft = model.tables[fk.ref]
        merged = rnd.random() < 0.35 and proj.only is None
        e.embeds.append(
            Embed(
                None if merged else f"far_{ft.name}",
                ft.name,
                {ft.pk[0]: fk.cols[0]},
                False,
                [],
                _merged(_projection(rnd, ft, set()), ft.name),
                merge=merged,
            )
        )
    return e


def _merged(p: Projection, table: str) -> Projection:
    """A merged row's fields share the enclosing document: its dotted renames get a sub-document
    of their own (two `nest.` parents would be one name given twice)."""
    p.rename = {c: n.replace("nest.", f"n_{table}.", 1) for c, n in p.rename.items()}
    return p


def _refs(t: Table) -> list[str]:
    return [c for fk in t.fks for c in fk.cols]


def _field_name(proj: Projection, col: str) -> str | None:
    if col in proj.exclude or (proj.only is not None and col not in proj.only):
        return None
    return proj.rename.get(col, col)


def _nest(rnd: random.Random, model: Model) -> None:
    tables = model.tables
    lookups = [t for t in tables.values() if t.role == "lookup"]
    # far lookups: a chain of parents (root -> lookup -> far)
    for i, lk in enumerate(lookups):
        if rnd.random() < 0.7:
            far = Table(f"far{i}", [Col(f"far{i}_id", "int", False)], [f"far{i}_id"], "int")
            far.role = "far"
            far.cols += [Col(f"w{i}{j}_{k}", k, True) for j, k in enumerate(["varchar", "int"])]
            tables[far.name] = far
            _fk_to(rnd, f"fk_{lk.name}_{far.name}", lk, far, True)
    for c in model.colls:  # copies made before the far lookups existed keep their references
        for e in c.embeds:
            t = tables[e.table]
            if e.proj.only is not None and t.role == "lookup":
                e.proj.only += [r for r in _refs(t) if r not in e.proj.only]
    by_coll = {c.table: c for c in model.colls}
    for root in [t for t in tables.values() if t.role == "root"]:
        coll = by_coll.get(root.name)
        if coll is None:
            continue
        # lookups already embedded at the top gain their far lookup
        for i, e in enumerate(coll.embeds):
            if not e.many and rnd.random() < 0.8:
                lk = tables[e.table]
                coll.embeds[i] = _lookup_embed(
                    rnd, model, lk, next(iter(e.on.values())), e.as_ or ""
                )
                if rnd.random() < 0.25 and coll.embeds[i].proj.only is None:
                    coll.embeds[i].as_, coll.embeds[i].merge = None, True
                    _merged(coll.embeds[i].proj, lk.name)
                    coll.embeds[i].embeds = [x for x in coll.embeds[i].embeds if not x.merge]
        for e in [e for e in coll.embeds if e.many]:
            child = tables[e.table]
            # each element carries a lookup of its own
            if rnd.random() < 0.6:
                lk = rnd.choice(lookups)
                col = _fk_to(rnd, f"fk_{child.name}_{lk.name}", child, lk, True)
                e.embeds.append(_lookup_embed(rnd, model, lk, col.name, f"one_{lk.name}"))
            # ... and its grandchildren as an array inside it
            for g in [g for g in tables.values() if g.parent == child.name]:
                if rnd.random() < 0.7:
                    fk = g.fks[0]
                    e.embeds.append(
                        Embed(
                            f"arr_{g.name}",
                            g.name,
                            dict(zip(fk.cols, fk.ref_cols, strict=True)),
                            True,
                            [],
                            _projection(rnd, g, set()),
                        )
                    )
        if rnd.random() < 0.8:
            _join(rnd, model, root, coll, rnd.choice(lookups))
    # a lookup a far lookup's delete cascades into, mapped nowhere, would hide which rows of
    # it the cascade took (and so the roots that cascade further): give it a collection
    held = {c.table for c in model.colls}
    stack = [e for c in model.colls for e in c.embeds]
    while stack:
        e = stack.pop()
        held.add(e.table)
        stack += e.embeds
    for lk in lookups:
        if lk.fks and lk.name not in held:
            model.colls.append(Coll(f"col_{lk.name}", lk.name, Projection()))


def _join(rnd: random.Random, model: Model, root: Table, coll: Coll, lk: Table) -> None:
    """A join table between a root and a lookup, embedded as join rows with the lookup merged
    in and as an array of one lookup field."""
    name = f"j_{root.name}_{lk.name}"
    side = [Col(f"jr_{k}", root.col(k).kind, False) for k in root.pk]
    far = Col("jl_id", lk.col(lk.pk[0]).kind, False)
    t = Table(
        name,
        [*side, far, Col("jp_int", "int", True)],
        [c.name for c in side] + ["jl_id"],
        "composite",
        role="join",
    )
    t.fks.append(
        FK(
            f"fk_{name}_r",
            [c.name for c in side],
            root.name,
            list(root.pk),
            rnd.choice(["CASCADE", "RESTRICT"]),
            rnd.choice(["CASCADE", "RESTRICT"]),
        )
    )
    t.fks.append(
        FK(
            f"fk_{name}_l",
            ["jl_id"],
            lk.name,
            [lk.pk[0]],
            rnd.choice(["CASCADE", "RESTRICT"]),
            rnd.choice(["CASCADE", "RESTRICT"]),
        )
    )
    model.tables[name] = t
    on = {c.name: k for c, k in zip(side, root.pk, strict=True)}
    if rnd.random() < 0.8:
        merged = _merged(_projection(rnd, lk, set()), lk.name)
        coll.embeds.append(
            Embed(
                f"links_{lk.name}",
                name,
                on,
                True,
                [],
                Projection(exclude=[c.name for c in side]),
                embeds=[Embed(None, lk.name, {lk.pk[0]: "jl_id"}, False, [], merged, merge=True)],
            )
        )
    lproj = _projection(rnd, lk, set())
    names = [n for c in lk.payload if (n := _field_name(lproj, c.name)) is not None]
    # an array of values keeps no key: lookup rows a cascade deletes silently (from a far
    # lookup) could not be found in it, and `plan` rightly refuses such a mapping
    silent = any(fk.on_delete == "CASCADE" for fk in lk.fks)
    if names and not silent and rnd.random() < 0.7:
        coll.embeds.append(
            Embed(
                f"names_{lk.name}",
                name,
                on,
                True,
                [],
                Projection(),
                embeds=[Embed("lk", lk.name, {lk.pk[0]: "jl_id"}, False, [], lproj)],
                values="lk." + rnd.choice(names),
            )
        )
