"""The applier's upkeep, run between batches: children waiting for a parent, references left
dangling by cascades, and columns a DDL added.

Each repair reads the source *now* and rebuilds whole documents (`rebuild.py`): always safe,
because later binlog events replayed over a rebuilt document apply their rows' later states.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import timedelta
from functools import partial
from typing import Any, Literal, Protocol

from pymongo import DeleteOne, ReplaceOne

from migrator.cdc.cascade import Cascades, Rule
from migrator.errors import MigratorError
from migrator.model.keys import id_key
from migrator.model.transform import Transform
from migrator.sink.mongo import with_retry
from migrator.source.connection import quote_ident
from migrator.source.rebuild import key_params, rebuild_docs, source_value
from migrator.state.store import StateStore, decode_key, now


class Rebuilds(Protocol):
    """What upkeep needs of a batch: documents to read again from the source, then written."""

    rebuild: dict[Any, Any]

    def rebuild_add(self, plan: Any, doc_id: Any = None, key: Any = None) -> None: ...

    def execute(self) -> None: ...


class ApplierView(Protocol):
    """What upkeep needs of the applier (cdc/applier.py), which calls it: upkeep depends on
    this shape, not on the module, so the two do not import each other."""

    transform: Transform
    db: Any
    state: StateStore
    lookup: Any
    cascades: Cascades
    dry_run: bool
    unordered: bool
    # how a batch treats stored waiting children (see Applier)
    stored_pending: Literal["rebuild", "adopt", "leave"]
    pending_bound: float
    pending_count: int
    expired: int

    @property
    def tables(self) -> set[str]: ...

    def new_batch(self) -> Rebuilds: ...


# ------------------------------------------------------------------------------ waiting children
def sweep_pending(a: ApplierView) -> int:
    """End the wait of every child whose parent can be settled from the source now.

    A parent whose row exists (a document that another consumer wrote, or that CDC will reach
    later in the stream) is rebuilt, children included. A parent whose row is gone takes its
    waiting children with it, unless a child row still exists without it (foreign-key checks
    off): that orphan waits up to the bound, then becomes a dead letter. Returns parents
    rebuilt."""
    if a.dry_run or a.state.pending.find_one({}, {"_id": 1}) is None:
        a.pending_count = 0
        return 0
    waiting: dict[str, dict[Hashable, list[dict[str, Any]]]] = {}
    for d in a.state.pending.find({}).sort("_id", 1).limit(10_000):
        waiting.setdefault(d["collection"], {}).setdefault(id_key(d["parent_id"]), []).append(d)
    rebuilt = 0
    done: list[Any] = []
    cutoff = now() - timedelta(seconds=a.pending_bound)
    for coll, parents in waiting.items():
        try:
            plan = a.transform.collection(coll)
        except MigratorError:
            continue
        ids = [docs[0]["parent_id"] for docs in parents.values()]
        keys = [key_params(plan, i) for i in ids]
        current: list[tuple[Any, dict[str, Any] | None]] = a.lookup.run(
            partial(_current, plan=plan, keys=keys)
        )
        created = {id_key(doc_id) for doc_id, doc in current if doc is not None}
        ops = [
            ReplaceOne({"_id": doc_id}, doc, upsert=True)
            if doc is not None
            else DeleteOne({"_id": doc_id})
            for doc_id, doc in current
        ]
        if ops:
            a.state.note_deletes(coll, sum(isinstance(op, DeleteOne) for op in ops))
            with_retry(partial(a.db[coll].bulk_write, ops, ordered=True))
            a.state.touch([(coll, doc_id, None) for doc_id, _doc in current])
        outside: set[Hashable] = set()
        if plan.spec.filter:
            # a parent row outside the collection's filter has no document, by design: its
            # children belong to none
            present = a.lookup.run(partial(_existing, plan=plan, keys=keys))
            outside = {id_key(i) for i, k in zip(ids, keys, strict=True) if k in present}
        for k, docs in parents.items():
            if k in created or k in outside:
                rebuilt += k in created
                done += [d["_id"] for d in docs]
                continue
            for d in docs:  # the parent row is gone
                if not _child_exists(a, d):
                    done.append(d["_id"])
                elif d["at"] <= cutoff:
                    _dead(a, d)
                    done.append(d["_id"])
    if done:
        for i in range(0, len(done), 1000):
            part = done[i : i + 1000]
            with_retry(partial(a.state.pending.delete_many, {"_id": {"$in": part}}))
    a.pending_count = a.state.pending.count_documents({})
    return rebuilt


def _current(conn: Any, *, plan: Any, keys: list[Any]) -> list[tuple[Any, Any]]:
    return rebuild_docs(conn, plan, keys)


def _existing(conn: Any, *, plan: Any, keys: list[Any]) -> set[Any]:
    """The keys whose root row exists, whatever the collection's filter says."""
    from migrator.source.reader import ChunkReader

    reader = ChunkReader(conn, plan)
    found: set[Any] = set()
    for i in range(0, len(keys), 500):
        part = keys[i : i + 500]
        rows = reader.read_by_keys(part, apply_filter=False)
        found |= {key_params(plan, plan.doc_id(r)) for r in rows}
    return found


def _child_exists(a: ApplierView, d: dict[str, Any]) -> bool:
    """Whether the waiting child's row is still an orphan: it exists and references a parent
    row that does not exist. A child whose reference is NULL now (ON UPDATE SET NULL, its
    own update) or points at a parent that exists has left this wait."""
    table = a.transform.schema.tables.get(d.get("child_table") or "")
    key = decode_key(d.get("child_key") or [])
    if table is None or len(key) != len(table.primary_key):
        return True  # cannot tell: keep waiting until the bound
    try:
        plan = a.transform.collection(d["collection"])
        e = next(e for e in plan.embeds if e.name == d["embed"])
    except (MigratorError, StopIteration):
        return True
    q = quote_ident
    where = " AND ".join(f"{q(c)} = %s" for c in table.primary_key)
    sql = f"SELECT {', '.join(q(c) for c in e.child_columns)} FROM {q(table.name)} WHERE {where}"
    parent_sql = f"SELECT 1 FROM {q(plan.table.name)} WHERE " + " AND ".join(
        f"{q(c)} = %s" for c in e.parent_columns
    )

    def orphan(conn: Any) -> bool:
        cur = conn.cursor()
        cur.execute(sql, key)
        row = cur.fetchone()
        if row is None or any(v is None for v in row):
            return False
        cur.execute(parent_sql, row)
        return cur.fetchone() is None

    return bool(a.lookup.run(orphan))


def _dead(a: ApplierView, p: dict[str, Any]) -> None:
    a.state.dead_letter(
        source="cdc",
        collection=p["collection"],
        key=p["parent_id"],
        reason=f"parent document {p['parent_id']!r} did not arrive within "
        f"{a.pending_bound:.0f} s for embedded {p['embed']!r} element (its row has no "
        "parent row in the source)",
        payload={"element": p["element"], "match": p["match"]},
        position=p["position"],
    )
    a.expired += 1


# ------------------------------------------------------------------------------ dangling refs
def request_sweeps(a: ApplierView, rules: list[Rule]) -> None:
    """Sweep these rules, and every delete rule below them: their discovery depended on rows
    the documents may not have held either."""
    todo, seen = list(rules), set()
    expanded: list[Rule] = []
    while todo:
        r = todo.pop()
        if r in seen:
            continue
        seen.add(r)
        expanded.append(r)
        todo += [x for x in a.cascades.rules.get(r.fk.table, ()) if x.on == "delete" or a.unordered]
    for r in expanded:
        key = f"{r.fk.table}/{r.fk.name}"
        with_retry(
            partial(
                a.state.sweeps.update_one,
                {"_id": key},
                {"$set": {"table": r.fk.table, "fk": r.fk.name, "requested_at": now()}},
                upsert=True,
            )
        )


def sweep_dangling(a: ApplierView) -> int:
    """Documents whose foreign key points at a row the source no longer has, for the rules a
    cascade followed through rows the documents held (a document newer than the event may not
    have held them), or, for sources without a global order, any rule a cascade went through
    (a document may be older than the event): each is rebuilt from the source. Returns
    documents rebuilt."""
    if a.dry_run:
        return 0
    requests = a.state.sweeps
    total = 0
    # without an order across tables, a record older than the sweep may still be on its way:
    # the request stays (and is swept again) until it is that old
    settle = timedelta(seconds=60 if a.unordered else 0)
    for req in list(requests.find({})):
        rule = _rule(a.cascades, req["table"], req["fk"])
        if rule is not None:
            total += _sweep_rule(a, rule)
        if now() - req["requested_at"] >= settle:
            requests.delete_one({"_id": req["_id"], "requested_at": req["requested_at"]})
    return total


def _rule(cas: Cascades, table: str, fk_name: str) -> Rule | None:
    for rules in cas.rules.values():
        for r in rules:
            if r.fk.table == table and r.fk.name == fk_name:
                return r
    return None


def _sweep_rule(a: ApplierView, rule: Rule) -> int:
    fk = rule.fk
    cas = a.cascades
    b = a.new_batch()
    for place in cas.places.get(fk.table, ()):
        locs = [cas.locate(place, c) for c in fk.columns]
        if any(loc is None for loc in locs):
            continue
        e = place.embed
        paths = []
        for loc in locs:
            assert loc is not None
            inner = loc[0] == "inner" and e is not None
            paths.append(f"{e.name}.{loc[1]}" if inner and e is not None else loc[1])
        pipeline: list[dict[str, Any]] = []
        if place.kind == "element" and e is not None:
            pipeline.append({"$unwind": f"${e.name}"})
        # a nested place's paths go through every array above it: each one unwound
        pipeline += [
            {"$unwind": "$" + ".".join(n.path)}
            for n in place.chain
            if n.many and not n.merge and n.values_path is None
        ]
        pipeline.append({"$group": {"_id": {f"k{i}": f"${p}" for i, p in enumerate(paths)}}})
        refs = []
        for d in a.db[place.plan.name].aggregate(pipeline):
            vals = [d["_id"].get(f"k{i}") for i in range(len(paths))]
            if all(v is not None for v in vals):
                refs.append(vals)
        missing = _missing_in_source(a, fk.ref_table, list(fk.ref_columns), refs)
        for vals in missing:
            flt = dict(zip(paths, vals, strict=True))
            for doc in a.db[place.plan.name].find(flt, {"_id": 1}):
                b.rebuild_add(place.plan, doc["_id"])
    n = sum(len(x) for x in b.rebuild.values())
    b.execute()
    return n


def _missing_in_source(
    a: ApplierView, table: str, columns: list[str], refs: list[list[Any]]
) -> list[list[Any]]:
    """The referenced keys (BSON values) with no row in the source table."""
    out: list[list[Any]] = []
    cols = ", ".join(map(quote_ident, columns))
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    for i in range(0, len(refs), 500):
        part = refs[i : i + 500]
        params = [[source_value(v) for v in r] for r in part]
        sql = (
            f"SELECT {cols} FROM {quote_ident(table)} WHERE ({cols}) IN "
            f"({', '.join([one] * len(part))})"
        )

        def q(conn: Any, sql: str = sql, params: list[list[Any]] = params) -> set[Any]:
            cur = conn.cursor()
            cur.execute(sql, [v for p in params for v in p])
            return {tuple(_norm(v) for v in row) for row in cur.fetchall()}

        found = a.lookup.run(q)
        for r, p in zip(part, params, strict=True):
            if tuple(_norm(v) for v in p) not in found:
                out.append(r)
    return out


def _norm(v: Any) -> Any:
    """Raw SELECT bytes and query parameters compare as text (keys are ints or strings)."""
    if isinstance(v, bytes | bytearray):
        return v.decode("utf-8", "surrogateescape").lower()
    if isinstance(v, str):
        return v.lower()  # the source matched it by a case-insensitive collation
    return str(v)


# ------------------------------------------------------------------------------ added columns
def fill_added_columns(a: ApplierView, defaults: dict[str, dict[str, Any]]) -> None:
    """Columns added by a DDL took their default in every existing row, with no binlog event:
    every document (and embedded element) holding those rows takes it too."""
    if a.dry_run:
        return
    for p in a.transform.collections:
        if any(
            view.field_for(col) is not None
            for e in p.nodes()
            if not e.simple
            for view in [e.view]
            for col in defaults.get(view.table.name, {})
        ):
            _rebuild_all(a, p)  # a nested copy of the rows: read the documents again
        places: list[tuple[Any, str | None, bool]] = [(p.root, None, False)]
        places += [(e.view, e.name, e.many) for e in p.embeds if e.simple]
        for view, embed, many in places:
            for col, raw in defaults.get(view.table.name, {}).items():
                f = view.field_for(col)
                if f is None:
                    continue
                value = None if raw is None else f.convert(raw)
                if value is None and embed is None and view.omit_nulls:
                    continue
                _fill(a.db[p.name], embed, many, f.name, value)


def _fill(coll: Any, embed: str | None, many: bool, name: str, value: Any) -> None:
    """The default into every document or element that lacks the field, and only those: a
    copy or a rebuild may have written documents ahead of the statement, whose rows hold
    other values by now (an element CDC inserts later is only pushed, never rewritten)."""
    missing = {"$exists": False}
    if embed is None:
        update = partial(coll.update_many, {name: missing}, {"$set": {name: value}})
    elif many:
        update = partial(
            coll.update_many,
            {embed: {"$elemMatch": {name: missing}}},
            {"$set": {f"{embed}.$[el].{name}": value}},
            array_filters=[{f"el.{name}": missing}],
        )
    else:
        flt = {embed: {"$type": "object"}, f"{embed}.{name}": missing}
        update = partial(coll.update_many, flt, {"$set": {f"{embed}.{name}": value}})
    with_retry(update)


def _rebuild_all(a: ApplierView, plan: Any, batch: int = 500) -> None:
    """Every document of a collection read again from the source, `batch` at a time (a DDL
    added a column to a table its trees copy; the binlog carries no row of it)."""
    last: Any = None
    coll = a.db[plan.name]
    while True:
        flt = {} if last is None else {"_id": {"$gt": last}}
        ids: list[Any] = with_retry(partial(_ids_after, coll, flt, batch))
        if not ids:
            return
        keys = [key_params(plan, i) for i in ids]
        current = a.lookup.run(partial(_current, plan=plan, keys=keys))
        ops = [ReplaceOne({"_id": i}, doc, upsert=True) for i, doc in current if doc is not None]
        if ops:
            with_retry(partial(coll.bulk_write, ops, ordered=False))
        last = ids[-1]


def _ids_after(coll: Any, flt: dict[str, Any], batch: int) -> list[Any]:
    return [d["_id"] for d in coll.find(flt, {"_id": 1}).sort("_id", 1).limit(batch)]
