"""`migrator init --documents`: documents proposed from the foreign-key graph, as a designer
would first draw them, every uncertain choice written as a comment for the user to decide.

- A join table (its primary key made of two foreign keys) becomes a many-to-many embed: its
  rows as an array in the table referenced more (the hub: a film with its actors), the other
  side's row merged into each element; the other direction is written commented out.
- A child whose primary key starts with its parent's key (an order's items) nests under that
  parent as an array, its own children inside it, to any depth; such a child is not a
  collection of its own. A child with its own key and one parent is proposed the same way;
  with several parents it stays a collection and the choice is a comment.
- A parent a row points at becomes a copied sub-document when it is small (a lookup: a
  country, a brand), with its own parents inside it (address -> city -> country); a large one
  is left as a reference, the copy suggested in a comment (each of its changes would touch
  every document that copies it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from migrator.model.schema import ForeignKey, Schema, Table

SMALL = 10_000  # rows: a parent this small is copied into the documents that point at it
MAX_DEPTH = 6  # tables on one path from the root: deeper proposals are left to the user


@dataclass
class Proposal:
    roots: list[str] = field(default_factory=list)  # tables that become collections
    nested: dict[str, ForeignKey] = field(default_factory=dict)  # child -> its nesting FK
    joins: dict[str, tuple[ForeignKey, ForeignKey]] = field(default_factory=dict)  # hub first
    notes: dict[str, list[str]] = field(default_factory=dict)  # table -> comments


def analyse(schema: Schema, tables: list[str]) -> Proposal:
    chosen = {n: schema.tables[n] for n in tables if schema.tables[n].primary_key}
    fks = {n: [fk for fk in t.foreign_keys if fk.ref_table in chosen] for n, t in chosen.items()}
    referenced: dict[str, int] = {}
    for lst in fks.values():
        for fk in lst:
            referenced[fk.ref_table] = referenced.get(fk.ref_table, 0) + 1
    prop = Proposal()
    for n, t in chosen.items():
        pair = _join_pair(t, fks[n])
        if pair is not None and pair[0].ref_table == pair[1].ref_table:
            # rows linking rows of one table (followers): a document cannot hold its own
            # table again below it, so the links stay a collection
            prop.notes.setdefault(n, []).append(
                f"{n} links {pair[0].ref_table} rows to each other: kept as a collection"
            )
        elif pair is not None and n not in referenced:
            a, b = pair
            hub = (
                (a, b)
                if (referenced.get(a.ref_table, 0), -chosen[a.ref_table].rows_estimate)
                >= (referenced.get(b.ref_table, 0), -chosen[b.ref_table].rows_estimate)
                else (b, a)
            )
            prop.joins[n] = hub
    for n, t in chosen.items():
        if n in prop.joins:
            continue
        owners = [fk for fk in fks[n] if fk.ref_table != n and not _small(chosen[fk.ref_table])]
        # the parent whose key starts this table's key owns it, whatever its size
        identifying = [
            fk for fk in fks[n] if fk.ref_table != n and set(fk.columns) < set(t.primary_key)
        ]
        if len(identifying) == 1:
            prop.nested[n] = identifying[0]
        elif len(owners) == 1 and not identifying and n not in referenced:
            fk = owners[0]
            if any(t.column(c).nullable for c in fk.columns):
                # a row without a parent would be in no document: keep it a collection
                prop.notes.setdefault(n, []).append(
                    f"{n} has one parent ({fk.ref_table}) but may have none ("
                    f"{', '.join(fk.columns)} can be NULL): kept as a collection; nest it "
                    "under its parent only if every row has one"
                )
            else:
                prop.nested[n] = fk
                prop.notes.setdefault(n, []).append(
                    f"{n} has a key of its own and one parent ({fk.ref_table}): nested "
                    "under it; make it a collection of its own if it is read on its own"
                )
        elif len(owners) > 1:
            prop.notes.setdefault(n, []).append(
                f"{n} points at {', '.join(sorted({fk.ref_table for fk in owners}))}: kept as "
                "a collection; nest it under one of them (an array there) if that is how it "
                "is read"
            )
    _no_cycles(prop)
    prop.roots = [n for n in chosen if n not in prop.nested and n not in prop.joins]
    return prop


def _join_pair(t: Table, fks: list[ForeignKey]) -> tuple[ForeignKey, ForeignKey] | None:
    if len(fks) != 2:
        return None
    a, b = fks
    if set(a.columns) | set(b.columns) != set(t.primary_key):
        return None
    return a, b


def _small(t: Table) -> bool:
    return 0 < t.rows_estimate <= SMALL or (t.rows_estimate == 0 and not t.foreign_keys)


def _no_cycles(prop: Proposal) -> None:
    """A nesting chain that comes back to a table it left stays a collection."""
    for start in list(prop.nested):
        seen = {start}
        cur = prop.nested.get(start)
        while cur is not None:
            if cur.ref_table in seen:
                prop.nested.pop(start, None)
                break
            seen.add(cur.ref_table)
            cur = prop.nested.get(cur.ref_table)


def yaml_lines(schema: Schema, prop: Proposal) -> list[str]:
    """The collections: list, one tree per root, comments included."""
    out: list[str] = []
    for root in prop.roots:
        t = schema.tables[root]
        out.append(f"  - name: {_q(root)}")
        out.append(f"    from: {_q(root)}")
        for note in prop.notes.get(root, []):
            out.append(f"    # {note}")
        out += _embed_block(_embeds(schema, prop, t, (root,), "    "), "    ")
    return out


def _embeds(
    schema: Schema,
    prop: Proposal,
    t: Table,
    chain: tuple[str, ...],
    pad: str,
    copy: bool = False,
) -> list[str]:
    """The embeds of `t` in a document: its parents (copies), and unless `t` is itself a
    copy, its nested children and many-to-many arrays."""
    out: list[str] = []
    deep = len(chain) >= MAX_DEPTH
    taken = {c.name for c in t.columns}  # an embed's name must not be a field's
    for fk in t.foreign_keys:  # parents: copies, or references
        p = schema.tables.get(fk.ref_table)
        if p is None or not p.primary_key or fk.ref_table in chain:
            continue
        if prop.nested.get(t.name) is fk:
            continue  # the parent this table is nested under: it is the enclosing row
        name = _as(fk, taken)
        on = _on(fk.ref_columns, fk.columns)
        line = f"{{as: {_q(name)}, from: {_q(p.name)}, on: {on}, many: false}}"
        if _small(p) and not deep:
            sub = _embed_block(
                _embeds(schema, prop, p, (*chain, p.name), pad + "    ", copy=True), pad + "    "
            )
            out.append(f"{pad}  # a copy of the {p.name} row (~{p.rows_estimate:,} rows)")
            out.append(f"{pad}  - as: {_q(name)}")
            out.append(f"{pad}    from: {_q(p.name)}")
            out.append(f"{pad}    on: {on}")
            out.append(f"{pad}    many: false")
            out += sub
        else:
            out.append(
                f"{pad}  # - {line}  # {p.name} has ~{p.rows_estimate:,} rows: each change "
                "of one would touch every document copying it"
            )
    if copy:
        return out  # a copied row brings its own parents, not its children
    for child, fk in prop.nested.items():  # children nested here
        if fk.ref_table != t.name or child in chain or deep:
            continue
        c = schema.tables[child]
        order = [k for k in c.primary_key if k not in fk.columns]
        out.append(f"{pad}  - as: {_q(_unique(child, taken))}")
        out.append(f"{pad}    from: {_q(child)}")
        out.append(f"{pad}    on: {_on(fk.columns, fk.ref_columns)}")
        out.append(f"{pad}    many: true")
        if order:
            out.append(f"{pad}    order_by: [{', '.join(map(_q, order))}]")
        out.append(f"{pad}    exclude: [{', '.join(map(_q, fk.columns))}]")
        for note in prop.notes.get(child, []):
            out.append(f"{pad}    # {note}")
        out += _embed_block(_embeds(schema, prop, c, (*chain, child), pad + "    "), pad + "    ")
    for join, (near, far) in prop.joins.items():  # many-to-many through a join table
        for mine, other, commented in ((near, far, False), (far, near, True)):
            if mine.ref_table != t.name or other.ref_table in chain or deep:
                continue
            name = far_name = schema.tables[other.ref_table].name
            if not commented:
                name = _unique(far_name, taken)
            out += _many_to_many(schema, join, mine, other, pad, commented, name)
    return out


def _embed_block(lines: list[str], pad: str) -> list[str]:
    """`embed:` and its entries; only the comments when every entry is commented out (an
    `embed:` with nothing under it would be null)."""
    if any(not ln.strip().startswith("#") for ln in lines):
        return [f"{pad}embed:", *lines]
    return lines


def _many_to_many(
    schema: Schema,
    join: str,
    mine: ForeignKey,
    other: ForeignKey,
    pad: str,
    commented: bool,
    name: str,
) -> list[str]:
    j, far = schema.tables[join], schema.tables[other.ref_table]
    kept = [c.name for c in j.columns if c.name not in mine.columns]
    # the far row's fields merge into each element: a name both have would be given twice
    # (the `on` pair excepted, whose values are equal)
    same = {fc for fc, jc in zip(other.ref_columns, other.columns, strict=True) if fc == jc}
    clash = [c.name for c in far.columns if c.name in kept and c.name not in same]
    lines = [
        f"# many-to-many through {join}: its rows, the {far.name} row merged into each",
        f"- as: {_q(name)}",
        f"  from: {_q(join)}",
        f"  on: {_on(mine.columns, mine.ref_columns)}",
        "  many: true",
        f"  exclude: [{', '.join(map(_q, mine.columns))}]",
        "  embed:",
        f"    - from: {_q(far.name)}",
        f"      on: {_on(other.ref_columns, other.columns)}",
        "      many: false",
        "      merge: true",
    ]
    if clash:
        lines.append(f"      exclude: [{', '.join(map(_q, clash))}]  # also in {join}")
    if commented:
        head = f"{pad}  # the other direction ({mine.ref_table} holding its {far.name}):"
        return [head] + [f"{pad}  # {x}" for x in lines]
    return [f"{pad}  {lines[0]}"] + [f"{pad}  {x}" for x in lines[1:]]


def _on(child: tuple[str, ...] | list[str], parent: tuple[str, ...] | list[str]) -> str:
    pairs = ", ".join(f"{_q(c)}: {_q(p)}" for c, p in zip(child, parent, strict=True))
    return "{" + pairs + "}"


def _unique(name: str, taken: set[str]) -> str:
    """`name`, or `name_2`, ... when a field or another embed of the document has it."""
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _as(fk: ForeignKey, taken: set[str]) -> str:
    """`customer` for customer_id, else the table's name; a name taken gets a number."""
    col = fk.columns[0]
    name = col[:-3] if len(fk.columns) == 1 and col.endswith("_id") and len(col) > 3 else ""
    name = name if name and name not in taken else fk.ref_table
    base, n = name, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    taken.add(name)
    return name


def _q(s: str) -> str:
    import json

    if s and s.replace("_", "").isalnum() and not s[0].isdigit():
        return s
    return json.dumps(s)
