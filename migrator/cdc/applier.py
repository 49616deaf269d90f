"""The applier: ChangeEvents -> idempotent MongoDB operations, in binlog order per collection.

- A root row is an upsert of the document's own fields (`$set`), never of its embedded parts;
  its delete deletes the document. A primary-key change re-reads the aggregate.
- A 1:N child is an element of its parent's array, matched by the child's key: `$set` through
  `arrayFilters` when present, a guarded `$push` (with the embed's `$sort`) when not, `$pull`
  on delete. Replaying any of these converges: no duplicate element, no stale array copy.
- An N:1 parent is a sub-document in every document that points at it: `update_many`.
- ON DELETE CASCADE / SET NULL effects, which the binlog never carries, are applied here.
- A child whose parent document does not exist yet waits in the state store (`pending`) and is
  applied when the parent arrives; past a bound it goes to the dead-letter collection.
- An event that cannot be applied goes to the dead-letter collection with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from bson import ObjectId
from pymongo import DeleteMany, DeleteOne, ReplaceOne, UpdateMany, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DocumentTooLarge, InvalidDocument, WriteError

from ..errors import ConversionError, MigratorError
from ..mapping import CollectionPlan, EmbedPlan, Transform
from ..sink.mongo import with_retry
from ..state import StateStore, now
from .events import ChangeEvent, Position, Transaction
from .lookup import SourceLookup
from .roles import CascadeRule, ChildRole, ParentRole, TableRoles, table_roles

Op = Any  # a pymongo write model


@dataclass
class Pending:
    """A child change waiting for its parent document."""

    collection: str
    parent_id: Any
    embed: str
    kind: str  # upsert | remove
    element: dict[str, Any] | None
    match: dict[str, Any]
    position: dict[str, Any]

    def to_doc(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "parent_id": self.parent_id,
            "embed": self.embed,
            "kind": self.kind,
            "element": self.element,
            "match": self.match,
            "position": self.position,
            "at": now(),
        }


@dataclass
class _Tagged:
    op: Op
    event: ChangeEvent | None
    position: Position


@dataclass
class BatchResult:
    events: int = 0
    applied: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op) -> count
    dead_letters: int = 0
    pending: int = 0
    resolved_pending: int = 0
    operations: int = 0
    coalesced: int = 0
    seconds: float = 0.0


def bson_safe(v: Any) -> Any:
    """Event values as BSON can store them (for dead letters)."""
    if isinstance(v, dict):
        return {str(k): bson_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple | set):
        return [bson_safe(x) for x in v]
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, datetime):
        return v
    if isinstance(v, date | timedelta):
        return str(v)
    return v


def _row(view_columns: Sequence[str], values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(values.get(c) for c in view_columns)


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    for p in path:
        doc = doc.get(p) if isinstance(doc, dict) else None  # type: ignore[assignment]
    return doc


class Applier:
    def __init__(
        self,
        transform: Transform,
        db: Database[Any],
        state: StateStore,
        lookup: SourceLookup,
        *,
        pending_bound_seconds: float = 600.0,
        dry_run: bool = False,
    ) -> None:
        self.dry_run = dry_run  # build every operation, write none (benchmarks, estimates)
        self.transform = transform
        self.db = db
        self.state = state
        self.lookup = lookup
        self.roles: dict[str, TableRoles] = table_roles(transform)
        self.pending_bound = pending_bound_seconds
        self.pending_count = state.pending.count_documents({})

    def set_transform(self, transform: Transform) -> None:
        self.transform = transform
        self.roles = table_roles(transform)

    @property
    def tables(self) -> set[str]:
        return set(self.roles)

    # ------------------------------------------------------------------------------ batch
    def apply(self, txns: list[Transaction]) -> BatchResult:
        t0 = time.monotonic()
        result = BatchResult()
        b = _Batch(self, result)
        b.prefetch_parents(txns)
        for txn in txns:
            for ev in txn.events:
                result.events += 1
                try:
                    b.event(ev, txn.position)
                except (ConversionError, MigratorError) as exc:
                    b.dead(ev, txn.position, exc.message)
                key = (ev.table, ev.op)
                result.applied[key] = result.applied.get(key, 0) + 1
        b.execute()
        result.seconds = time.monotonic() - t0
        return result

    def expire_pending(self) -> int:
        """Children that waited longer than the bound for their parent become dead letters."""
        if not self.pending_count:
            return 0
        cutoff = now() - timedelta(seconds=self.pending_bound)
        moved = 0
        for p in list(self.state.pending.find({"at": {"$lt": cutoff}})):
            self.state.dead_letter(
                source="cdc",
                collection=p["collection"],
                key=p["parent_id"],
                reason=f"parent document {p['parent_id']!r} did not arrive within "
                f"{self.pending_bound:.0f} s for embedded {p['embed']!r} element",
                payload={"element": p["element"], "match": p["match"]},
                position=p["position"],
            )
            with_retry(partial(self.state.pending.delete_one, {"_id": p["_id"]}))
            moved += 1
        self.pending_count = self.state.pending.count_documents({})
        return moved


class _Batch:
    """Turns one batch of events into ordered operations per collection, simulating which
    parent documents exist as it goes, then executes them."""

    def __init__(self, applier: Applier, result: BatchResult) -> None:
        self.a = applier
        self.result = result
        self.ops: dict[str, list[_Tagged]] = {}
        self.exists: dict[str, set[Any]] = {}
        self.new_pending: list[Pending] = []
        self.used_pending: list[ObjectId] = []
        self.dead_letters: list[dict[str, Any]] = []
        self.n1_cache: dict[tuple[Any, ...], Any] = {}
        self.last_root: dict[str, tuple[Any, int, dict[str, Any]]] = {}
        self.touched: dict[tuple[str, Any], tuple[Any, Any]] = {}

    def touch(self, collection: str, doc_id: Any, ev: ChangeEvent | None) -> None:
        at = (ev.commit_time if ev is not None else None) or now()
        self.touched[(collection, _hashable(doc_id))] = (doc_id, at)

    # -- helpers -----------------------------------------------------------------------------
    def add(self, collection: str, op: Op, ev: ChangeEvent | None, pos: Position) -> None:
        self.ops.setdefault(collection, []).append(_Tagged(op, ev, pos))
        self.last_root.pop(collection, None)

    def _root_update(
        self, coll: str, doc_id: Any, update: dict[str, Any], ev: ChangeEvent, pos: Position
    ) -> None:
        """Coalesce: a root update right after another one of the same document replaces it
        (each carries every root field), so a hot row costs one write per batch."""
        key = _hashable(doc_id)
        last = self.last_root.get(coll)
        ops = self.ops.setdefault(coll, [])
        if last is not None and last[0] == key and last[1] == len(ops) - 1:
            prev = last[2]
            merged = {"$set": update["$set"]}
            on_insert = {**prev.get("$setOnInsert", {}), **update.get("$setOnInsert", {})}
            if on_insert:
                merged["$setOnInsert"] = on_insert
            if "$unset" in update:
                merged["$unset"] = update["$unset"]
            ops[-1] = _Tagged(UpdateOne({"_id": doc_id}, merged, upsert=True), ev, pos)
            self.last_root[coll] = (key, len(ops) - 1, merged)
            self.result.coalesced += 1
            return
        ops.append(_Tagged(UpdateOne({"_id": doc_id}, update, upsert=True), ev, pos))
        self.last_root[coll] = (key, len(ops) - 1, update)

    def dead(
        self, ev: ChangeEvent | None, pos: Position, reason: str, collection: str = ""
    ) -> None:
        self.dead_letters.append(
            {
                "source": "cdc",
                "collection": collection,
                "reason": reason,
                "key": None,
                "position": pos.to_dict(),
                "payload": None
                if ev is None
                else {
                    "table": ev.table,
                    "op": ev.op,
                    "before": bson_safe(ev.before),
                    "after": bson_safe(ev.after),
                },
            }
        )

    def _key_ids(self, plan: CollectionPlan, values: dict[str, Any]) -> Any:
        return plan.doc_id(_row(plan.root.columns, values))

    def _parent_id(self, cr: ChildRole, child: dict[str, Any]) -> Any:
        p, e = cr.plan, cr.embed
        row: list[Any] = [None] * len(p.root.columns)
        for ccol, rcol in zip(e.child_columns, e.root_columns, strict=True):
            if child.get(ccol) is None:
                return None
            row[p.root.index[rcol]] = child[ccol]
        return p.doc_id(row)

    def _field_filter(
        self,
        plan: CollectionPlan,
        columns: Sequence[str],
        values: Sequence[Any],
        prefix: str = "",
        view: Any = None,
    ) -> dict[str, Any]:
        view = view or plan.root
        out: dict[str, Any] = {}
        for col, v in zip(columns, values, strict=True):
            f = view.field_for(col)
            if f is None:
                raise MigratorError(
                    f"column {view.table.name}.{col} is not mapped into "
                    f"{plan.name!r}, so CDC cannot find the documents to change"
                )
            out[prefix + f.name] = None if v is None else f.convert(v)
        return out

    # -- prefetch ----------------------------------------------------------------------------
    def prefetch_parents(self, txns: list[Transaction]) -> None:
        want: dict[str, set[Any]] = {}
        roots_created: dict[str, set[Any]] = {}
        for txn in txns:
            for ev in txn.events:
                roles = self.a.roles.get(ev.table)
                if roles is None:
                    continue
                for cr in roles.children:
                    if not cr.parent_is_pk:
                        continue
                    for img in (ev.before, ev.after):
                        if img is not None:
                            try:
                                pid = self._parent_id(cr, img)
                            except Exception:  # reported when the event is applied
                                continue
                            if pid is not None:
                                want.setdefault(cr.plan.name, set()).add(_hashable(pid))
                if ev.op == "insert" and roles.roots:
                    for p in roles.roots:
                        try:
                            roots_created.setdefault(p.name, set()).add(
                                _hashable(self._key_ids(p, ev.after or {}))
                            )
                        except Exception:
                            continue
        for coll, ids in want.items():
            if self.a.dry_run:  # nothing is read either: take every parent as present
                self.exists[coll] = set(ids)
                continue
            found = self.a.db[coll].find({"_id": {"$in": [_unhash(i) for i in ids]}}, {"_id": 1})
            self.exists[coll] = {_hashable(d["_id"]) for d in found}
        self.pending_for: dict[str, dict[Any, list[dict[str, Any]]]] = {}
        if self.a.pending_count and roots_created:
            for coll, ids in roots_created.items():
                q = {"collection": coll, "parent_id": {"$in": [_unhash(i) for i in ids]}}
                for d in self.a.state.pending.find(q).sort("_id", 1):
                    self.pending_for.setdefault(coll, {}).setdefault(
                        _hashable(d["parent_id"]), []
                    ).append(d)

    # -- events ------------------------------------------------------------------------------
    def event(self, ev: ChangeEvent, pos: Position) -> None:
        roles = self.a.roles.get(ev.table)
        if roles is None:
            return
        for p in roles.roots:
            self.root(p, ev, pos)
        for cr in roles.children:
            self.child(cr, ev, pos)
        for pr in roles.parents:
            self.parent(pr, ev, pos)
        if ev.op == "delete" and ev.before is not None:
            for rule in roles.cascades:
                self.cascade(rule, ev, pos)

    def root(self, p: CollectionPlan, ev: ChangeEvent, pos: Position) -> None:
        exists = self.exists.setdefault(p.name, set())
        if ev.after is None:  # delete
            old_id = self._key_ids(p, ev.before or {})
            self.touch(p.name, old_id, ev)
            self.add(p.name, DeleteOne({"_id": old_id}), ev, pos)
            exists.discard(_hashable(old_id))
            return
        row = _row(p.root.columns, ev.after)
        new_id = p.doc_id(row)
        self.touch(p.name, new_id, ev)
        if p.spec.filter and not self.a.lookup.passes_filter(p, row):
            # outside the collection's filter now: the document must not exist
            self.add(p.name, DeleteOne({"_id": new_id}), ev, pos)
            exists.discard(_hashable(new_id))
            return
        old_id = self._key_ids(p, ev.before) if ev.before is not None else new_id
        if ev.before is not None and old_id != new_id:
            self.touch(p.name, old_id, ev)
            # primary-key change: children followed by ON UPDATE CASCADE without a binlog
            # event, so the aggregate is read again from the source
            self.add(p.name, DeleteOne({"_id": old_id}), ev, pos)
            exists.discard(_hashable(old_id))
            doc = p.document(row, {})
            for e in p.embeds:
                doc[e.name] = self.a.lookup.embedded(p, e, row)
            self.add(p.name, ReplaceOne({"_id": new_id}, doc, upsert=True), ev, pos)
        else:
            fields = p.root.build(row)
            unset = {
                f.name: "" for f in p.root.fields if p.root.omit_nulls and row[f.index] is None
            }
            on_insert: dict[str, Any] = {}
            for e in p.embeds:
                changed = ev.before is None or any(
                    ev.before.get(c) != ev.after.get(c) for c in e.root_columns
                )
                if e.many:
                    on_insert[e.name] = []
                elif changed:
                    fields[e.name] = self._parent_of(p, e, row)
            update: dict[str, Any] = {"$set": fields}
            if on_insert:
                update["$setOnInsert"] = on_insert
            if unset:
                update["$unset"] = unset
            self._root_update(p.name, new_id, update, ev, pos)
        exists.add(_hashable(new_id))
        for d in getattr(self, "pending_for", {}).get(p.name, {}).pop(_hashable(new_id), []):
            e = next(x for x in p.embeds if x.name == d["embed"])
            self._element_ops(
                p, e, {"_id": new_id}, d["kind"], d["element"], d["match"], None, pos, many=False
            )
            self.used_pending.append(d["_id"])

    def _parent_of(self, p: CollectionPlan, e: EmbedPlan, row: tuple[Any, ...]) -> Any:
        """The N:1 sub-document for a root row, read once per key and batch."""
        key = (p.name, e.name, p.root.values(row, e.root_columns))
        if key not in self.n1_cache:
            self.n1_cache[key] = self.a.lookup.embedded(p, e, row)
        return self.n1_cache[key]

    def child(self, cr: ChildRole, ev: ChangeEvent, pos: Position) -> None:
        before = self._locate(cr, ev.before) if ev.before is not None else None
        after = self._locate(cr, ev.after) if ev.after is not None else None
        if before and after and before[0] == after[0] and before[2] == after[2]:
            # same parent, same element: replace it in place (and re-sort if its order moved)
            self._upsert_element(cr, after, ev, pos)
            return
        if before:
            self._remove_element(cr, before, ev, pos)
        if after:
            self._upsert_element(cr, after, ev, pos)

    def _locate(
        self, cr: ChildRole, img: dict[str, Any]
    ) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
        """(parent filter, element, match) for a child row image; None if it has no parent."""
        p, e = cr.plan, cr.embed
        element = e.view.build(_row(e.view.columns, img))
        match = {}
        for c in cr.match_columns:
            f = e.view.field_for(c)
            assert f is not None  # compile_transform guarantees key columns stay mapped
            match[f.name] = _get(element, f.path)
        if cr.parent_is_pk:
            pid = self._parent_id(cr, img)
            if pid is None:
                return None
            return ({"_id": pid}, element, match)
        values = [img.get(c) for c in e.child_columns]
        if any(v is None for v in values):
            return None
        return (self._field_filter(p, e.root_columns, values), element, match)

    def _upsert_element(
        self, cr: ChildRole, loc: tuple[Any, ...], ev: ChangeEvent, pos: Position
    ) -> None:
        parent, element, match = loc
        p, e = cr.plan, cr.embed
        if cr.parent_is_pk and _hashable(parent["_id"]) not in self.exists.get(p.name, set()):
            self.new_pending.append(
                Pending(p.name, parent["_id"], e.name, "upsert", element, match, pos.to_dict())
            )
            return
        if cr.parent_is_pk:
            self.touch(p.name, parent["_id"], ev)
        self._element_ops(p, e, parent, "upsert", element, match, ev, pos, many=not cr.parent_is_pk)

    def _remove_element(
        self, cr: ChildRole, loc: tuple[Any, ...], ev: ChangeEvent, pos: Position
    ) -> None:
        parent, _element, match = loc
        p, e = cr.plan, cr.embed
        if cr.parent_is_pk and _hashable(parent["_id"]) not in self.exists.get(p.name, set()):
            self.new_pending.append(
                Pending(p.name, parent["_id"], e.name, "remove", None, match, pos.to_dict())
            )
            return
        if cr.parent_is_pk:
            self.touch(p.name, parent["_id"], ev)
        self._element_ops(p, e, parent, "remove", None, match, ev, pos, many=not cr.parent_is_pk)

    def _element_ops(
        self,
        p: CollectionPlan,
        e: EmbedPlan,
        parent: dict[str, Any],
        kind: str,
        element: dict[str, Any] | None,
        match: dict[str, Any],
        ev: ChangeEvent | None,
        pos: Position,
        *,
        many: bool,
    ) -> None:
        Update = UpdateMany if many else UpdateOne
        name = e.name
        if kind == "remove":
            self.add(p.name, Update(parent, {"$pull": {name: match}}), ev, pos)
            return
        sort = {}
        for c in e.order_by:
            f = e.view.field_for(c)
            if f is not None:
                sort[f.name] = 1
        # present: replace the element in place; absent: push it (the guard makes a replay
        # a no-op instead of a duplicate); then keep the array in the embed's order
        self.add(
            p.name,
            Update(
                parent,
                {"$set": {f"{name}.$[el]": element}},
                array_filters=[{f"el.{k}": v for k, v in match.items()}],
            ),
            ev,
            pos,
        )
        guard = {**parent, name: {"$not": {"$elemMatch": match}}}
        push: dict[str, Any] = {"$each": [element]}
        if sort:
            push["$sort"] = sort
        self.add(p.name, Update(guard, {"$push": {name: push}}), ev, pos)
        if sort:
            self.add(
                p.name, Update(parent, {"$push": {name: {"$each": [], "$sort": sort}}}), ev, pos
            )

    def parent(self, pr: ParentRole, ev: ChangeEvent, pos: Position) -> None:
        p, e = pr.plan, pr.embed

        def docs_pointing_at(img: dict[str, Any]) -> dict[str, Any] | None:
            values = [img.get(c) for c in e.child_columns]
            if any(v is None for v in values):
                return None
            try:
                return self._field_filter(p, e.root_columns, values)
            except MigratorError:  # the root's FK is not mapped: use the embedded key
                return self._field_filter(
                    p, e.child_columns, values, prefix=f"{e.name}.", view=e.view
                )

        old = docs_pointing_at(ev.before) if ev.before is not None else None
        new = docs_pointing_at(ev.after) if ev.after is not None else None
        if old is not None and old != new:
            self.add(p.name, UpdateMany(old, {"$set": {e.name: None}}), ev, pos)
        if new is not None and ev.after is not None:
            element = e.view.build(_row(e.view.columns, ev.after))
            self.add(p.name, UpdateMany(new, {"$set": {e.name: element}}), ev, pos)

    def cascade(self, rule: CascadeRule, ev: ChangeEvent, pos: Position) -> None:
        fk = rule.fk
        assert ev.before is not None
        values = [ev.before.get(c) for c in fk.ref_columns]
        for p in rule.roots:
            flt = self._field_filter(p, fk.columns, values)
            if rule.action == "CASCADE":
                self.add(p.name, DeleteMany(flt), ev, pos)
                continue
            nulls: dict[str, Any] = {k: None for k in flt}
            for e in p.embeds:
                if not e.many and set(e.root_columns) <= set(fk.columns):
                    nulls[e.name] = None
            self.add(p.name, UpdateMany(flt, {"$set": nulls}), ev, pos)
        for p, e in rule.children:
            flt = self._field_filter(p, fk.columns, values, view=e.view)
            if rule.action == "CASCADE":
                self.add(
                    p.name,
                    UpdateMany(
                        {f"{e.name}.{k}": v for k, v in flt.items()}, {"$pull": {e.name: flt}}
                    ),
                    ev,
                    pos,
                )
            else:
                self.add(
                    p.name,
                    UpdateMany(
                        {f"{e.name}.{k}": v for k, v in flt.items()},
                        {"$set": {f"{e.name}.$[c].{k}": None for k in flt}},
                        array_filters=[{f"c.{k}": v for k, v in flt.items()}],
                    ),
                    ev,
                    pos,
                )

    # -- execution ---------------------------------------------------------------------------
    def execute(self) -> None:
        if self.a.dry_run:
            self.result.operations = sum(len(t) for t in self.ops.values())
            return
        # Collections hold different documents: their ordered bulks go in parallel.
        if len(self.ops) > 1:
            with ThreadPoolExecutor(max_workers=min(len(self.ops), 4)) as pool:
                for f in [pool.submit(self._write, c, t) for c, t in self.ops.items()]:
                    f.result()
        else:
            for coll, tagged in self.ops.items():
                self._write(coll, tagged)
        state = self.a.state
        if self.new_pending:
            docs = [x.to_doc() for x in self.new_pending]
            with_retry(lambda: state.pending.insert_many(docs, ordered=True))
            self.result.pending += len(docs)
        if self.used_pending:
            ids = self.used_pending
            with_retry(lambda: state.pending.delete_many({"_id": {"$in": ids}}))
            self.result.resolved_pending += len(ids)
        if self.new_pending or self.used_pending:
            self.a.pending_count = state.pending.count_documents({})
        if self.touched:
            state.touch([(c, doc_id, at) for (c, _k), (doc_id, at) in self.touched.items()])
        for d in self.dead_letters:
            state.dead_letter(**d)
        self.result.dead_letters += len(self.dead_letters)

    def _write(self, coll: str, tagged: list[_Tagged]) -> None:
        """Ordered bulk; an op the server refuses becomes a dead letter and the rest goes on."""
        start = 0
        collection = self.a.db[coll]
        while start < len(tagged):
            chunk = tagged[start:]
            try:
                with_retry(partial(collection.bulk_write, [t.op for t in chunk], ordered=True))
                return
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors:
                    raise
                bad = errors[0]["index"]
                t = chunk[bad]
                self.dead(
                    t.event,
                    t.position,
                    f"MongoDB refused the write: {errors[0].get('errmsg', errors[0])}",
                    coll,
                )
                start += bad + 1
            except (DocumentTooLarge, InvalidDocument, WriteError):
                # refused before it reached the server: find the op by writing one at a time
                for t in chunk:
                    try:
                        with_retry(partial(collection.bulk_write, [t.op], ordered=True))
                    except (BulkWriteError, DocumentTooLarge, InvalidDocument, WriteError) as e2:
                        self.dead(t.event, t.position, f"cannot apply: {e2}", coll)
                return


def _hashable(v: Any) -> Any:
    if isinstance(v, dict):
        return tuple((k, _hashable(x)) for k, x in v.items())
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


def _unhash(v: Any) -> Any:
    if isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2 for x in v):
        return {k: _unhash(x) for k, x in v}
    return v
