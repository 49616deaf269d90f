"""The applier: ChangeEvents -> idempotent MongoDB operations, in binlog order per collection.

- A root row is an upsert of the document's own fields (`$set`), never of its embedded parts;
  its delete deletes the document. A primary-key change re-reads the aggregate.
- A 1:N child is an element of its parent's array, matched by the child's key: `$set` through
  `arrayFilters` when present, a guarded `$push` (with the embed's `$sort`) when not, `$pull`
  on delete. Replaying any of these converges: no duplicate element, no stale array copy.
- An N:1 parent is a sub-document in every document that points at it: `update_many`.
- Consecutive root updates of one document merge into one write that equals applying them all.
- Foreign-key cascades, which the binlog never carries, are found and their documents rebuilt
  from the source (`cascade.py`, `rebuild.py`); so is an aggregate that one batch changes
  element by element in bulk (one read and one write instead of thousands of array updates).
- A child whose parent document does not exist yet waits: first in the batch (its parent may
  come later in it), then in the state store (`pending`), shared by every consumer. When the
  parent appears the aggregate is rebuilt; when the parent is deleted the wait ends; past a
  bound the change goes to the dead-letter collection.
- An event that cannot be applied goes to the dead-letter collection with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from pymongo import DeleteOne, UpdateMany, UpdateOne
from pymongo.database import Database

from migrator.cdc.cascade import Cascades, Effect, Place, Rule
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.roles import ChildRole, ParentRole, TableRoles, table_roles
from migrator.cdc.upkeep import (
    fill_added_columns,
    request_sweeps,
    sweep_dangling,
    sweep_pending,
)
from migrator.cdc.writer import OpWriter, Tagged
from migrator.errors import ConnectError, ConversionError, MigratorError
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.keys import id_key
from migrator.model.placement import TreeRole, holder_filters, rows_in
from migrator.model.transform import CollectionPlan, EmbedPlan, Transform
from migrator.model.typerules import param_value
from migrator.sink.mongo import find_by_ids, with_retry
from migrator.source.rebuild import (
    id_from_params,
    key_params,
    rebuild_ops,
    root_keys,
    source_value,
)
from migrator.state.store import StateStore, encode_key, now, storable

Op = Any  # a pymongo write model
# More element changes than this for one document in one batch: rebuild it instead.
BULK_ELEMENTS = 32


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
    child_table: str = ""
    child_key: list[Any] = field(default_factory=list)  # the child row's primary key

    def to_doc(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "parent_id": self.parent_id,
            "embed": self.embed,
            "kind": self.kind,
            "element": self.element,
            "match": self.match,
            "position": self.position,
            "child_table": self.child_table,
            "child_key": encode_key(self.child_key),
            "at": now(),
        }


@dataclass
class BatchResult:
    events: int = 0
    applied: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op) -> count
    dead_letters: int = 0
    pending: int = 0
    resolved_pending: int = 0
    operations: int = 0
    coalesced: int = 0
    rebuilt: int = 0
    cascades: int = 0
    seconds: float = 0.0


def _row(view_columns: Sequence[str], values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(map(values.get, view_columns))


def _get(doc: Any, path: str | tuple[str, ...]) -> Any:
    for p in path.split(".") if isinstance(path, str) else path:
        doc = doc.get(p) if isinstance(doc, dict) else None
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
        unordered: bool = False,
    ) -> None:
        self.dry_run = dry_run  # build every operation, write none (benchmarks, estimates)
        # events of different tables do not arrive in commit order (Debezium: a topic per
        # table): documents are read again from the source instead of being patched (see
        # _Batch.resync), and every cascade's rules get a dangling-reference sweep
        self.unordered = unordered
        self.db = db
        self.state = state
        self.lookup = lookup
        self.pending_bound = pending_bound_seconds
        self.set_transform(transform)
        self.pending_count = 0 if dry_run else state.pending.count_documents({})
        self.expired = 0  # waiting children turned into dead letters by this applier
        # what a root this applier writes does with children stored as waiting for it:
        # "rebuild" the document from the source (CDC); "adopt": keep the written document
        # and set its arrays from the child rows that name it in the source (the SDK after
        # the switch, when MySQL lags MongoDB and a rebuild lost the write); "leave" them for
        # CDC (the SDK before the switch: CDC releases them from the root's binlog event)
        self.stored_pending: Literal["rebuild", "adopt", "leave"] = "rebuild"

    def set_transform(self, transform: Transform) -> None:
        self.transform = transform
        self.roles: dict[str, TableRoles] = table_roles(transform)
        self.cascades = Cascades(transform)

    @property
    def tables(self) -> set[str]:
        return set(self.roles)

    # ------------------------------------------------------------------------------ batch
    def apply(self, txns: list[Transaction]) -> BatchResult:
        t0 = time.monotonic()
        result = BatchResult()
        b = _Batch(self, result)
        b.prefetch(txns)
        for txn in txns:
            for ev in txn.events:
                result.events += 1
                try:
                    b.event(ev, txn.position)
                except ConnectError:
                    raise  # a server away is not a bad event: nothing is checkpointed, it replays
                except (ConversionError, MigratorError) as exc:
                    b.dead(ev, txn.position, exc.message)
                key = (ev.table, ev.op)
                result.applied[key] = result.applied.get(key, 0) + 1
        b.execute()
        result.seconds = time.monotonic() - t0
        return result

    # -- upkeep (upkeep.py): waiting children, dangling references, added columns -----------
    def sweep_pending(self) -> int:
        return sweep_pending(self)

    def sweep_dangling(self) -> int:
        return sweep_dangling(self)

    def fill_added_columns(self, defaults: dict[str, dict[str, Any]]) -> None:
        fill_added_columns(self, defaults)

    def new_batch(self) -> _Batch:
        return _Batch(self, BatchResult())


def parent_id(cr: ChildRole, child: dict[str, Any]) -> Any:
    """The _id of the document whose array holds this child row (None: a NULL reference)."""
    p, e = cr.plan, cr.embed
    row: list[Any] = [None] * len(p.root.columns)
    for ccol, rcol in zip(e.child_columns, e.parent_columns, strict=True):
        if child.get(ccol) is None:
            return None
        row[p.root.index[rcol]] = child[ccol]
    return p.doc_id(row)


class _Unmapped(Exception):
    pass


class _Batch:
    """Turns one batch of events into ordered operations per collection, simulating which
    parent documents exist as it goes, then executes them."""

    def __init__(self, applier: Applier, result: BatchResult) -> None:
        self.a = applier
        self.result = result
        self.ops: dict[str, list[Tagged]] = {}
        self.exists: dict[str, set[Hashable]] = {}
        self.new_pending: list[Pending] = []
        self.stored_pending: dict[str, dict[Hashable, list[dict[str, Any]]]] = {}
        self.drop_pending: list[Any] = []  # _ids of stored pending documents that are done
        self.dead_letters: list[dict[str, Any]] = []
        self.n1_cache: dict[tuple[Any, ...], Any] = {}
        self.last_root: dict[str, tuple[Hashable, int, dict[str, Any]]] = {}
        self.touched: dict[tuple[str, Hashable], tuple[Any, Any]] = {}
        # collection -> {id key: (document _id, primary-key params)}: rebuilt at the end
        self.rebuild: dict[str, dict[Hashable, tuple[Any, tuple[Any, ...]]]] = {}
        self.derived: list[Rule] = []  # cascade rules followed through rows documents held
        # (collection, {root column: value}): documents whose root row matches, rebuilt
        self.rebuild_where: list[tuple[CollectionPlan, dict[str, Any]]] = []
        # documents found in MongoDB by these filters, rebuilt (nested rows, tree.py)
        self.rebuild_found: list[tuple[CollectionPlan, dict[str, Any]]] = []
        # (collection, node, columns) -> enclosing-row values: root keys read from MySQL
        self.rebuild_chain: dict[tuple[Any, ...], tuple[TreeRole, list[dict[str, Any]]]] = {}

    def touch(self, collection: str, doc_id: Any, ev: ChangeEvent | None) -> None:
        at = (ev.commit_time if ev is not None else None) or now()
        self.touched[(collection, id_key(doc_id))] = (doc_id, at)

    # -- helpers -----------------------------------------------------------------------------
    def add(self, collection: str, op: Op, ev: ChangeEvent | None, pos: Position) -> None:
        self.ops.setdefault(collection, []).append(Tagged(op, ev, pos))
        self.last_root.pop(collection, None)

    def rebuild_add(self, plan: CollectionPlan, doc_id: Any = None, key: Any = None) -> None:
        """Rebuild this document from the source at the end of the batch."""
        if key is None:
            key = key_params(plan, doc_id)
        if doc_id is None:
            doc_id = id_from_params(plan, key)
        self.rebuild.setdefault(plan.name, {})[id_key(doc_id)] = (doc_id, key)

    def rebuilding(self, plan: CollectionPlan, doc_id: Any) -> bool:
        return id_key(doc_id) in self.rebuild.get(plan.name, {})

    def _root_update(
        self, coll: str, doc_id: Any, update: dict[str, Any], ev: ChangeEvent, pos: Position
    ) -> None:
        """Coalesce: a root update right after another one of the same document merges with
        it, so that the one write equals applying both (a hot row costs one write per batch)."""
        key = id_key(doc_id)
        last = self.last_root.get(coll)
        ops = self.ops.setdefault(coll, [])
        if last is not None and last[0] == key and last[1] == len(ops) - 1:
            merged = merge_updates(last[2], update)
            ops[-1] = Tagged(UpdateOne({"_id": doc_id}, merged, upsert=True), ev, pos)
            self.last_root[coll] = (key, len(ops) - 1, merged)
            self.result.coalesced += 1
            return
        ops.append(Tagged(UpdateOne({"_id": doc_id}, update, upsert=True), ev, pos))
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
                    "before": storable(ev.before),
                    "after": storable(ev.after),
                },
            }
        )

    def _key_ids(self, plan: CollectionPlan, values: dict[str, Any]) -> Any:
        return plan.doc_id(_row(plan.root.columns, values))

    def _parent_id(self, cr: ChildRole, child: dict[str, Any]) -> Any:
        return parent_id(cr, child)

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
    def prefetch(self, txns: list[Transaction]) -> None:
        """Which parent documents exist; which aggregates this batch changes in bulk; which
        stored pending children wait for roots this batch writes."""
        want: dict[str, dict[Hashable, Any]] = {}
        roots: dict[str, dict[Hashable, Any]] = {}
        per_parent: dict[tuple[str, Hashable], int] = {}
        plans: dict[str, CollectionPlan] = {}
        for txn in txns:
            for ev in txn.events:
                roles = self.a.roles.get(ev.table)
                if roles is None:
                    continue
                for cr in roles.children:
                    if not cr.parent_is_pk:
                        continue
                    for img in (ev.before, ev.after):
                        if img is None:
                            continue
                        try:
                            pid = self._parent_id(cr, img)
                        except Exception:  # reported when the event is applied
                            continue
                        if pid is not None:
                            k = id_key(pid)
                            want.setdefault(cr.plan.name, {})[k] = pid
                            n = per_parent.get((cr.plan.name, k), 0) + 1
                            per_parent[(cr.plan.name, k)] = n
                            plans[cr.plan.name] = cr.plan
                            if n == BULK_ELEMENTS + 1:
                                self.rebuild_add(cr.plan, pid)
                for p in roles.roots:
                    for img in (ev.after, ev.before):
                        if img is None:
                            continue
                        try:
                            rid = self._key_ids(p, img)
                        except Exception:
                            continue
                        roots.setdefault(p.name, {})[id_key(rid)] = rid
        for coll, ids in want.items():
            if self.a.dry_run:  # nothing is read either: take every parent as present
                self.exists[coll] = set(ids)
                continue
            self.exists[coll] = set()
            found = find_by_ids(self.a.db[coll], list(ids.values()), {"_id": 1})
            self.exists[coll] |= {id_key(d["_id"]) for d in found}
        if self.a.dry_run or not roots or self.a.stored_pending == "leave":
            return
        if self.a.state.pending.find_one({}, {"_id": 1}) is None:
            return
        for coll, rids in roots.items():
            q = {"collection": coll, "parent_id": {"$in": list(rids.values())}}
            for d in self.a.state.pending.find(q).sort("_id", 1):
                self.stored_pending.setdefault(coll, {}).setdefault(
                    id_key(d["parent_id"]), []
                ).append(d)

    # -- events ------------------------------------------------------------------------------
    def event(self, ev: ChangeEvent, pos: Position) -> None:
        roles = self.a.roles.get(ev.table)
        if roles is None:
            return
        if ev.op != "insert" and self.a.cascades.triggers(ev.table):
            # first, while the documents still show the rows as they were before this event
            effects = self.a.cascades.effects_of(ev)
            if effects:
                self.cascade(effects, ev, pos)
        elif self.a.unordered and ev.after is not None and self.a.cascades.triggers(ev.table):
            # Debezium sends a primary-key change as a delete of the old key and a create of
            # the new one: rows ON UPDATE CASCADE moved to the new key are read where they are
            self.followers_of(ev.table, ev.after)
        if self.a.unordered and ev.op == "delete" and self.a.cascades.triggers(ev.table):
            # ...and the delete half may be an ON UPDATE SET NULL or CASCADE, not a delete:
            # every rule referencing the table is swept for the old key
            self.derived += [
                r
                for r in self.a.cascades.rules.get(ev.table, ())
                if r.fk.table in self.a.cascades.relevant
            ]
        for p in roles.roots:
            if self.a.unordered and any(e.many for e in p.embeds):
                self.resync_root(p, ev)
            else:
                self.root(p, ev, pos)
        for cr in roles.children:
            if self.a.unordered:
                self.resync_child(cr, ev)
            else:
                self.child(cr, ev, pos)
        for pr in roles.parents:
            self.parent(pr, ev, pos)
        for tr in roles.trees:
            self.tree(tr, ev)

    def tree(self, tr: TreeRole, ev: ChangeEvent) -> None:
        """A row of a nested node: every document that holds it (its old place) or should
        hold it (its new place) is read again from the source at the end of the batch."""
        for img in (ev.before, ev.after):
            if img is not None:
                self.tree_image(tr, img)

    def tree_image(self, tr: TreeRole, img: dict[str, Any]) -> None:
        """Queue the documents whose tree holds (or should hold) this row of the node."""
        p, e = tr.plan, tr.node
        if len(tr.chain) == 1 and sorted(e.parent_columns) == sorted(p.pk):
            by_col = dict(zip(e.parent_columns, e.child_columns, strict=True))
            key = tuple(img.get(by_col[c]) for c in p.pk)
            if all(v is not None for v in key):
                self.rebuild_add(p, key=key)
            return
        filters, enclosing = holder_filters(tr, img)
        self.rebuild_found += [(p, flt) for flt in filters]
        if enclosing is not None:
            slot = (p.name, e.slot, tuple(sorted(enclosing)))
            self.rebuild_chain.setdefault(slot, (tr, []))[1].append(enclosing)

    # Events of different tables out of commit order (a topic per table): an array built
    # from them in arrival order could miss a child whose event came before its parent's
    # re-creation. So a document with arrays that an event touches is read again from the
    # source at the end of the batch, which gives the source's current state whatever the
    # order (one read per collection and batch). A document of one table is patched from the
    # image as usual: one row's events stay in order (one key, one partition).
    def resync_root(self, p: CollectionPlan, ev: ChangeEvent) -> None:
        for img in (ev.before, ev.after):
            if img is not None:
                doc_id = self._key_ids(p, img)
                self.touch(p.name, doc_id, ev)
                self.rebuild_add(p, doc_id)

    def resync_child(self, cr: ChildRole, ev: ChangeEvent) -> None:
        pairs = list(zip(cr.embed.child_columns, cr.embed.parent_columns, strict=True))
        for img in (ev.before, ev.after):
            if img is None:
                continue
            values = {rc: img.get(cc) for cc, rc in pairs}
            if any(v is None for v in values.values()):
                continue
            if cr.parent_is_pk:
                pid = self._parent_id(cr, img)
                self.touch(cr.plan.name, pid, ev)
                self.rebuild_add(cr.plan, pid)
            else:
                self.rebuild_where.append((cr.plan, values))

    def root(self, p: CollectionPlan, ev: ChangeEvent, pos: Position) -> None:
        exists = self.exists.setdefault(p.name, set())
        if ev.after is None:  # delete
            old_id = self._key_ids(p, ev.before or {})
            self.touch(p.name, old_id, ev)
            self.add(p.name, DeleteOne({"_id": old_id}), ev, pos)
            exists.discard(id_key(old_id))
            self._end_wait(p, old_id)
            return
        row = _row(p.root.columns, ev.after)
        new_id = p.doc_id(row)
        self.touch(p.name, new_id, ev)
        old_id = self._key_ids(p, ev.before) if ev.before is not None else new_id
        rekeyed = ev.before is not None and id_key(old_id) != id_key(new_id)
        if rekeyed:
            self.touch(p.name, old_id, ev)
            self.add(p.name, DeleteOne({"_id": old_id}), ev, pos)
            exists.discard(id_key(old_id))
            self._end_wait(p, old_id)
        rejoined = ev.before is not None and any(
            ev.before.get(c) != ev.after.get(c)
            for e in p.embeds
            if e.many or not e.simple
            for c in e.parent_columns
        )
        # a new root with a nested tree is read whole (its rows may be there already)
        trees = ev.before is None and any(not e.simple for e in p.embeds)
        if p.spec.filter or rekeyed or rejoined or trees:
            # Read the aggregate again from the source at the end of the batch: only the
            # server can say whether a row passes the collection's SQL filter (and one entering
            # it needs its embedded parts); a primary-key change moved its children by ON
            # UPDATE CASCADE without an event; a changed join column brings other children.
            self.rebuild_add(p, new_id)
            exists.add(id_key(new_id))
            self._release_waiting(p, new_id, pos)
            return
        fields = p.root.build(row)
        unset: dict[str, Any] = {}
        if p.root.omit_nulls:
            # whole top-level names: a sub-document whose parts are all NULL is left out,
            # as the Transform leaves it out (and a dotted $unset would conflict with $set)
            unset = {f.path[0]: "" for f in p.root.fields if f.path[0] not in fields}
        if ev.only is not None:
            tops = {f.path[0] for f in p.root.fields if f.column in ev.only}
            fields = {k: v for k, v in fields.items() if k in tops}
            unset = {k: v for k, v in unset.items() if k in tops}
        on_insert: dict[str, Any] = {}
        for e in p.embeds:
            if not e.simple:
                continue  # unchanged links (a change is rebuilt above)
            changed = ev.before is None or any(
                ev.before.get(c) != ev.after.get(c) for c in e.parent_columns
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
        if ev.before is None and self.a.stored_pending == "adopt":
            # a new document where MongoDB is the truth: child rows that already name it in
            # MySQL (rows no document holds: written before their parent, waiting or not,
            # whatever the join) are its elements, or reverse sync would delete them
            for e in p.embeds:
                if e.many and e.simple:
                    value = self.a.lookup.embedded(p, e, row)
                    if value:
                        self.add(
                            p.name, UpdateOne({"_id": new_id}, {"$set": {e.name: value}}), ev, pos
                        )
        exists.add(id_key(new_id))
        self._release_waiting(p, new_id, pos)

    def _release_waiting(self, p: CollectionPlan, doc_id: Any, pos: Position) -> None:
        """The parent document exists now: the children that waited for it (earlier in this
        batch, or in earlier batches, maybe another consumer's) land by reading the aggregate
        whole at the end of the batch. Replaying their images could bring back a state a
        later change (a cascade, a newer event elsewhere) already replaced. ("adopt": the
        new document read them from the source already, see root.)"""
        k = id_key(doc_id)
        mine = [x for x in self.new_pending if x.collection == p.name and id_key(x.parent_id) == k]
        stored = self.stored_pending.get(p.name, {}).pop(k, [])
        if mine or stored:
            self.new_pending = [x for x in self.new_pending if x not in mine]
            if self.a.stored_pending != "adopt":
                self.rebuild_add(p, doc_id)
            self.drop_pending += [d["_id"] for d in stored]
            self.result.resolved_pending += len(mine) + len(stored)

    def _end_wait(self, p: CollectionPlan, doc_id: Any) -> None:
        """The parent is gone: its waiting children have nothing to wait for."""
        k = id_key(doc_id)
        self.new_pending = [
            x for x in self.new_pending if not (x.collection == p.name and id_key(x.parent_id) == k)
        ]
        self.drop_pending += [d["_id"] for d in self.stored_pending.get(p.name, {}).pop(k, [])]

    def _parent_of(self, p: CollectionPlan, e: EmbedPlan, row: tuple[Any, ...]) -> Any:
        """The N:1 sub-document for a root row, read once per key and batch."""
        key = (p.name, e.name, p.root.values(row, e.parent_columns))
        if key not in self.n1_cache:
            self.n1_cache[key] = self.a.lookup.embedded(p, e, row)
        return self.n1_cache[key]

    def child(self, cr: ChildRole, ev: ChangeEvent, pos: Position) -> None:
        if not cr.parent_is_pk:
            # the parent is found by a non-key column: its document may not exist yet and its
            # _id is unknown, so the documents whose root row matches are read again
            for img in (ev.before, ev.after):
                if img is not None:
                    values = {
                        rc: img.get(cc)
                        for cc, rc in zip(
                            cr.embed.child_columns, cr.embed.parent_columns, strict=True
                        )
                    }
                    if all(v is not None for v in values.values()):
                        self.rebuild_where.append((cr.plan, values))
            return
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
        return (self._field_filter(p, e.parent_columns, values), element, match)

    def _upsert_element(
        self, cr: ChildRole, loc: tuple[Any, ...], ev: ChangeEvent, pos: Position
    ) -> None:
        self._element(cr, loc, "upsert", ev, pos)

    def _remove_element(
        self, cr: ChildRole, loc: tuple[Any, ...], ev: ChangeEvent, pos: Position
    ) -> None:
        self._element(cr, loc, "remove", ev, pos)

    def _element(
        self, cr: ChildRole, loc: tuple[Any, ...], kind: str, ev: ChangeEvent, pos: Position
    ) -> None:
        parent, element, match = loc
        p, e = cr.plan, cr.embed
        if cr.parent_is_pk:
            pid = parent["_id"]
            self.touch(p.name, pid, ev)
            if self.rebuilding(p, pid):
                return  # the whole aggregate is read again at the end of the batch
            if id_key(pid) not in self.exists.get(p.name, set()):
                el = element if kind == "upsert" else None
                img = (ev.after if kind == "upsert" else ev.before) or {}
                t = e.view.table
                key = [param_value(t.column(c), img.get(c)) for c in t.primary_key]
                self.new_pending.append(
                    Pending(p.name, pid, e.name, kind, el, match, pos.to_dict(), t.name, key)
                )
                return
        self._element_ops(p, e, parent, kind, element, match, ev, pos, many=not cr.parent_is_pk)

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
        if not match:
            # the child's key is its parent's: one element at most (a 1:1 table as an array)
            value = [element] if kind == "upsert" else []
            self.add(p.name, Update(parent, {"$set": {name: value}}), ev, pos)
            return
        if kind == "remove":
            self.add(p.name, Update(parent, {"$pull": {name: match}}), ev, pos)
            return
        sort = {".".join(path): 1 for path in e.sort_fields}
        # present: replace the element in place (only the fields of the columns written, when
        # the event says which); absent: push it (the guard makes a replay a no-op instead of
        # a duplicate); then keep the array in the embed's order
        in_place: dict[str, Any] = {"$set": {f"{name}.$[el]": element}}
        if ev is not None and ev.only is not None and element is not None:
            tops = {f.path[0] for f in e.view.fields if f.column in ev.only}
            in_place = {}
            if tops & element.keys():
                in_place["$set"] = {f"{name}.$[el].{k}": element[k] for k in tops & element.keys()}
            if tops - element.keys():
                in_place["$unset"] = {f"{name}.$[el].{k}": "" for k in tops - element.keys()}
        if in_place:
            self.add(
                p.name,
                Update(parent, in_place, array_filters=[{f"el.{k}": v for k, v in match.items()}]),
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
                return self._field_filter(p, e.parent_columns, values)
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

    # -- foreign-key cascades ----------------------------------------------------------------
    def cascade(self, effects: list[Effect], ev: ChangeEvent, pos: Position) -> None:
        """Find the documents holding the rows MySQL changed silently, to any depth, and
        rebuild them from the source at the end of the batch."""
        self.result.cascades += 1
        if self.a.dry_run:
            return
        self.flush_writes()  # discovery must see what the events before this one wrote
        cas = self.a.cascades
        for e in effects:
            # documents may be older than the event (no order across tables), or MySQL may
            # have matched a text key through its collation ('us' = 'US'): the rule also gets
            # a sweep for references the documents still hold
            if e.rule is not None and (
                self.a.unordered or any(isinstance(v, str | bytes) for v in e.cond.values())
            ):
                self.derived.append(e.rule)
        queue, seen = list(effects), set()
        while queue:
            eff = queue.pop(0)
            if eff.key() in seen:
                continue
            seen.add(eff.key())
            need = cas.needs_rows(eff)
            rows: list[dict[str, Any]] | None = None
            for place in cas.places.get(eff.table, ()):
                # the triggering row's own aggregate is rebuilt by its root event; it is only
                # read here, for the keys of rows the next level needs
                skipped = cas.skipped(place, eff)
                if (skipped and not need) or not cas.affected(place, eff):
                    continue
                try:
                    found = self._discover(place, eff, need, rebuild=not skipped)
                except _Unmapped as exc:
                    via = eff.rule.describe() if eff.rule else eff.table
                    self.dead(
                        ev,
                        pos,
                        f"cannot follow {via} into {place.describe()}: {exc}",
                        place.plan.name,
                    )
                    continue
                if found is not None:
                    rows = (rows or []) + found
            nxt, problems = cas.follow(eff, rows if need else None, self.derived)
            for problem in problems:
                self.dead(ev, pos, f"cannot follow the cascade: {problem}")
            queue += nxt

    def followers_of(self, table: str, row: dict[str, Any], depth: int = 0) -> None:
        """Documents of rows that reference this row through ON UPDATE CASCADE, to any depth,
        read again from the source (their keys come from the source too)."""
        cas = self.a.cascades
        if depth > 16:
            return
        for rule in cas.rules.get(table, ()):
            fk = rule.fk
            if rule.on != "update" or rule.action != "CASCADE" or fk.table not in cas.relevant:
                continue
            values = [row.get(r) for r in fk.ref_columns]
            if any(v is None for v in values):
                continue
            cond = dict(zip(fk.columns, values, strict=True))
            child = self.a.transform.schema.tables[fk.table]
            for place in cas.places.get(fk.table, ()):
                e = place.embed
                if place.kind == "nested":
                    if e is not None and set(e.child_columns) <= set(cond):
                        self.tree_image(TreeRole(place.plan, place.chain), cond)
                elif e is None:
                    self.rebuild_where.append((place.plan, cond))
                elif place.kind == "element" and set(e.child_columns) <= set(cond):
                    pairs = zip(e.child_columns, e.parent_columns, strict=True)
                    self.rebuild_where.append((place.plan, {rc: cond[cc] for cc, rc in pairs}))
            if any(r.on == "update" for r in cas.rules.get(fk.table, ())):
                rows = self.a.lookup.run(partial(rows_where, table=child, values=cond))
                for r in rows:
                    self.followers_of(fk.table, r, depth + 1)

    def _discover(
        self, place: Place, eff: Effect, need: list[str], *, rebuild: bool = True
    ) -> list[dict[str, Any]] | None:
        """Queue the documents of `place` that hold rows matching the effect for a rebuild;
        return those rows' values of `need` (None when this place does not hold them all)."""
        if place.kind == "nested":
            return self._discover_nested(place, eff, need, rebuild)
        cas = self.a.cascades
        p, e = place.plan, place.embed
        outer: dict[str, Any] = {}
        inner: dict[str, Any] = {}
        for col, v in eff.cond.items():
            loc = cas.locate(place, col)
            if loc is None:
                raise _Unmapped(f"{eff.table}.{col} is not mapped there")
            where, path, conv = loc
            (outer if where == "root" else inner)[path] = None if v is None else conv(v)
        flt = dict(outer)
        if e is not None and inner:
            if place.kind == "element":
                flt[e.name] = {"$elemMatch": inner}
            else:
                flt.update({f"{e.name}.{k}": v for k, v in inner.items()})
        want = [c for c in need if c not in eff.cond]
        joined = e.child_columns if e is not None else p.pk  # where the rows go on a change
        locs = {c: cas.locate(place, c) for c in {*want, *eff.cond, *joined}}
        have_all = all(locs[c] is not None for c in want)
        rows: list[dict[str, Any]] = []
        moves = set(eff.changes) & set(p.pk if e is None else e.child_columns)
        if rebuild and eff.kind == "update" and (self.a.unordered or p.spec.filter or moves):
            # Rows where the change put them may have no document to find: rows it brings
            # into the collection's filter; with events out of order, rows whose insert comes
            # after this event; rows moved to a new key whose old documents a sweep (which
            # reads the source ahead of the stream) already removed. They are read from the
            # source where they are now.
            new = {c: eff.changes.get(c, v) for c, v in eff.cond.items()}
            if all(v is not None for v in new.values()):
                if e is None:
                    self.rebuild_where.append((p, new))
                elif (
                    place.kind == "element"
                    and (self.a.unordered or moves)
                    and set(e.child_columns) <= set(new)
                ):
                    root_values = {
                        rc: new[cc]
                        for cc, rc in zip(e.child_columns, e.parent_columns, strict=True)
                    }
                    self.rebuild_where.append((p, root_values))
        for doc in self.a.db[p.name].find(flt):
            if rebuild:
                self.rebuild_add(p, doc["_id"])
            inners = [doc]
            if place.kind == "element" and e is not None:
                inners = [
                    el
                    for el in doc.get(e.name) or []
                    if all(id_key(_get(el, k)) == id_key(v) for k, v in inner.items())
                ]
            elif e is not None:
                inners = [doc.get(e.name) or {}]
            for inner_doc in inners:
                values: dict[str, Any] = {}
                for c, loc in locs.items():
                    if loc is None:
                        continue
                    src = doc if loc[0] == "root" else inner_doc
                    values[c] = source_value(_get(src, loc[1]))
                rows.append(values)
                if rebuild:
                    self._moved(place, eff, values)
        return rows if have_all else None

    def _discover_nested(
        self, place: Place, eff: Effect, need: list[str], rebuild: bool
    ) -> list[dict[str, Any]] | None:
        """The documents holding the rows of a nested node the effect changed, rebuilt (an
        update that moves them also rebuilds where they went); those rows' values of `need`
        (None when the documents do not show them all)."""
        p, cas = place.plan, self.a.cascades
        flt: dict[str, Any] = {}
        match: dict[str, Any] = {}
        for col, v in eff.cond.items():
            loc = cas.locate(place, col)
            if loc is None:
                raise _Unmapped(f"{eff.table}.{col} is not mapped there")
            flt[loc[1]] = match[col] = None if v is None else loc[2](v)
        want = [c for c in need if c not in eff.cond]
        have_all = all(cas.locate(place, c) is not None for c in want)
        rows: list[dict[str, Any]] = []
        docs = with_retry(partial(_found, self.a.db[p.name], flt, rebuild or bool(want)))
        for doc in docs:
            if rebuild:
                self.rebuild_add(p, doc["_id"])
            if want and have_all:
                for row in rows_in(doc, p, place.chain, [*match, *want]):
                    if all(id_key(row.get(c)) == id_key(v) for c, v in match.items()):
                        rows.append({c: source_value(row[c]) for c in row})
        self._moved_nested(place, eff, rebuild)
        return rows if have_all else None

    def _moved_nested(self, place: Place, eff: Effect, rebuild: bool) -> None:
        if not rebuild:
            return
        p, e = place.plan, place.embed
        if eff.kind == "update" and e is not None and set(eff.changes) & set(e.child_columns):
            new = {c: eff.changes.get(c, v) for c, v in eff.cond.items()}
            if set(e.child_columns) <= set(new):
                self.tree_image(TreeRole(p, place.chain), new)

    def _moved(self, place: Place, eff: Effect, old: dict[str, Any]) -> None:
        """An update that changes a document's key (or which document an element belongs to)
        also rebuilds where the rows went."""
        if eff.kind != "update":
            return
        p, e = place.plan, place.embed
        if e is None:
            if not set(eff.changes) & set(p.pk):
                return
            key = tuple(eff.changes.get(c, old.get(c)) for c in p.pk)
            if all(v is not None for v in key):
                self.rebuild_add(p, key=key)
            return
        if place.kind != "element" or not set(eff.changes) & set(e.child_columns):
            return
        new_root = {
            rc: eff.changes.get(cc, old.get(cc))
            for cc, rc in zip(e.child_columns, e.parent_columns, strict=True)
        }
        if any(v is None for v in new_root.values()):
            return
        if sorted(new_root) == sorted(p.pk):
            self.rebuild_add(p, key=tuple(new_root[c] for c in p.pk))
            return
        flt = {}
        for rc, v in new_root.items():
            loc = Cascades._root_path(p, rc)
            if loc is None:
                return
            flt[loc[1]] = loc[2](v)
        for doc in self.a.db[p.name].find(flt, {"_id": 1}):
            self.rebuild_add(p, doc["_id"])

    # -- execution ---------------------------------------------------------------------------
    def flush_writes(self) -> None:
        """Write the operations built so far (in order), keeping the rest of the batch's work."""
        if self.a.dry_run:
            self.result.operations += sum(len(t) for t in self.ops.values())
        else:
            self._writer().write(self.ops)
        self.ops = {}
        self.last_root = {}

    def _writer(self) -> OpWriter:
        return OpWriter(self.a.db, self.a.state, self.result, self.dead)

    def _resolve_rebuild_where(self) -> None:
        for plan, values in self.rebuild_where:
            for key in self.a.lookup.run(partial(keys_where, plan=plan, values=values)):
                self.rebuild_add(plan, key=key)
        self.rebuild_where = []
        self._resolve_nested()

    def _resolve_nested(self) -> None:
        """The documents nested rows reach: found in MongoDB, or their root keys in MySQL."""
        found: dict[str, tuple[CollectionPlan, dict[str, dict[str, Any]]]] = {}
        for plan, flt in self.rebuild_found:
            found.setdefault(plan.name, (plan, {}))[1][repr(sorted(flt.items()))] = flt
        self.rebuild_found = []
        for plan, unique in found.values():
            filters = list(unique.values())
            for i in range(0, len(filters), 200):
                q = {"$or": filters[i : i + 200]}
                docs: list[dict[str, Any]] = with_retry(
                    partial(_found_ids, self.a.db[plan.name], q)
                )
                for doc in docs:
                    self.rebuild_add(plan, doc["_id"])
        for tr, rows in self.rebuild_chain.values():
            find = partial(root_keys, plan=tr.plan, chain=tr.chain[:-1], rows=rows)
            for key in self.a.lookup.run(find):
                self.rebuild_add(tr.plan, key=key)
        self.rebuild_chain = {}

    def _rebuild_ops(self) -> None:
        """The aggregates queued for a rebuild, read from the source now, written last."""
        self._resolve_rebuild_where()
        for coll, entries in self.rebuild.items():
            plan = self.a.transform.collection(coll)
            keys = [k for _id, k in entries.values()]

            def bad(doc_id: Any, reason: str, coll: str = coll) -> None:
                self.dead(None, Position(), f"rebuilding {doc_id!r}: {reason}", coll)

            ops: list[Any] = self.a.lookup.run(
                partial(_rebuild_with, plan=plan, keys=keys, bad=bad)
            )
            for op in ops:
                self.add(coll, op, None, Position())
            for doc_id, _k in entries.values():
                self.touch(coll, doc_id, None)
            self.result.rebuilt += len(entries)
            # children waiting for these parents are in the rebuilt documents now
            waiting = [d for d, _k in entries.values()]
            self.new_pending = [
                x
                for x in self.new_pending
                if not (x.collection == coll and id_key(x.parent_id) in entries)
            ]
            if self.a.state.pending.find_one({}, {"_id": 1}) is not None:
                for i in range(0, len(waiting), 500):
                    q = {"collection": coll, "parent_id": {"$in": waiting[i : i + 500]}}
                    self.drop_pending += [
                        d["_id"] for d in self.a.state.pending.find(q, {"_id": 1})
                    ]

    def execute(self) -> None:
        if self.a.dry_run:
            self.result.operations += sum(len(t) for t in self.ops.values())
            return
        if self.rebuild or self.rebuild_where or self.rebuild_found or self.rebuild_chain:
            self._rebuild_ops()
        self._writer().write(self.ops)
        self.ops = {}
        state = self.a.state
        if self.new_pending:
            docs = [x.to_doc() for x in self.new_pending]
            with_retry(lambda: state.pending.insert_many(docs, ordered=True))
            self.result.pending += len(docs)
        if self.drop_pending:
            ids = list(dict.fromkeys(self.drop_pending))
            with_retry(lambda: state.pending.delete_many({"_id": {"$in": ids}}))
        if self.new_pending or self.drop_pending:
            self.a.pending_count = state.pending.count_documents({})
        if self.touched:
            state.touch([(c, doc_id, at) for (c, _k), (doc_id, at) in self.touched.items()])
        if self.derived:
            request_sweeps(self.a, self.derived)
        for d in self.dead_letters:
            state.dead_letter(**d)
        self.result.dead_letters += len(self.dead_letters)


def rows_where(conn: Any, *, table: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a table whose columns equal `values`, as column -> raw value."""
    from migrator.source.connection import quote_ident

    where = " AND ".join(f"{quote_ident(c)} = %s" for c in values)
    cols = table.column_names
    cur = conn.cursor()
    try:
        cur.execute(
            f"SELECT {', '.join(map(quote_ident, cols))} FROM {quote_ident(table.name)} "
            f"WHERE {where}",
            [param_value(table.column(c), v) for c, v in values.items()],
        )
        rows = cur.fetchall()
    finally:
        cur.close()
    return [
        {c: param_value(table.column(c), v) for c, v in zip(cols, r, strict=True)} for r in rows
    ]


def keys_where(conn: Any, *, plan: CollectionPlan, values: dict[str, Any]) -> list[Any]:
    """Primary keys of the root rows whose columns equal `values` (no filter applied)."""
    from migrator.source.connection import quote_ident

    where = " AND ".join(f"{quote_ident(c)} = %s" for c in values)
    cols = ", ".join(map(quote_ident, plan.pk))
    cur = conn.cursor()
    try:
        cur.execute(
            f"SELECT {cols} FROM {quote_ident(plan.table.name)} WHERE {where}",
            [param_value(plan.table.column(c), v) for c, v in values.items()],
        )
        rows = cur.fetchall()
    finally:
        cur.close()
    return [
        tuple(param_value(plan.table.column(c), v) for c, v in zip(plan.pk, r, strict=True))
        for r in rows
    ]


def _found_ids(coll: Any, flt: dict[str, Any]) -> list[dict[str, Any]]:
    return list(coll.find(flt, {"_id": 1}))


def _found(coll: Any, flt: dict[str, Any], whole: bool) -> list[dict[str, Any]]:
    return list(coll.find(flt) if whole else coll.find(flt, {"_id": 1}))


def _rebuild_with(conn: Any, *, plan: CollectionPlan, keys: list[Any], bad: Any) -> list[Any]:
    return rebuild_ops(conn, plan, keys, bad)


def merge_updates(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """One update equal to applying `first`, then `second` ($set, $unset, $setOnInsert of
    top-level fields, as root updates are built)."""
    sets = {**first.get("$set", {}), **second.get("$set", {})}
    unsets = {k: "" for k in first.get("$unset", {}) if k not in second.get("$set", {})}
    unsets.update(second.get("$unset", {}))
    for k in unsets:
        sets.pop(k, None)
    on_insert = {**first.get("$setOnInsert", {}), **second.get("$setOnInsert", {})}
    merged: dict[str, Any] = {"$set": sets}
    if unsets:
        merged["$unset"] = unsets
    on_insert = {k: v for k, v in on_insert.items() if k not in sets and k not in unsets}
    if on_insert:
        merged["$setOnInsert"] = on_insert
    return merged
