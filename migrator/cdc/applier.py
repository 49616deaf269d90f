"""The applier: ChangeEvents -> idempotent MongoDB operations, in binlog order per collection.
This module turns events into operations; the batch's other jobs have their own modules:
rebuilds (`rebuilds.py`), children waiting for a parent (`pending.py`), writing the operations
(`writer.py`) and the upkeep between batches (`upkeep.py`).

- A root row is an upsert of the document's own fields (`$set`), never of its embedded parts;
  its delete deletes the document. A primary-key change re-reads the aggregate.
- A 1:N child is an element of its parent's array, matched by the child's key: `$set` through
  `arrayFilters` when present, a guarded `$push` (with the embed's `$sort`) when not, `$pull`
  on delete. Replaying any of these converges: no duplicate element, no stale array copy.
- An N:1 parent is a sub-document in every document that points at it: `update_many`.
- Consecutive root updates of one document merge into one write that equals applying them all.
- A row of a nested tree (deeper than one level, merged, or in an array of values), a
  foreign-key cascade the binlog never carries, and an aggregate one batch changes element by
  element in bulk are rebuilt from the source (`rebuilds.py`).
- A child whose parent document does not exist yet waits (`pending.py`).
- An event that cannot be applied goes to the dead-letter collection with the reason.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

from pymongo import DeleteOne, UpdateMany, UpdateOne
from pymongo.database import Database

from migrator.cdc.cascade import Cascades, Rule
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.newdocs import NewDocs, pull_element, set_fields, upsert_element
from migrator.cdc.pending import Pending, Waiting
from migrator.cdc.rebuilds import Rebuilds, value_at
from migrator.cdc.roles import ChildRole, ParentRole, TableRoles, table_roles
from migrator.cdc.upkeep import (
    fill_added_columns,
    request_sweeps,
    sweep_dangling,
    sweep_pending,
)
from migrator.cdc.writer import BatchResult, OpWriter, Tagged
from migrator.errors import ConnectError, ConversionError, MigratorError
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.keys import id_key
from migrator.model.placement import TreeRole
from migrator.model.transform import CollectionPlan, EmbedPlan, Transform
from migrator.model.typerules import param_value
from migrator.sink.mongo import find_by_ids, has_unique_index, with_retry
from migrator.state.store import StateStore, now, storable

Op = Any  # a pymongo write model
# More element changes than this for one document in one batch: rebuild it instead.
BULK_ELEMENTS = 32
UNIQUE_INDEX_TTL = 30.0  # seconds a collection's unique indexes, as read, are trusted


def _row(view_columns: Sequence[str], values: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(map(values.get, view_columns))


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
        self._unique: dict[str, tuple[float, bool]] = {}  # collection -> (read at, unique index)
        self.set_transform(transform)
        self.pending_count = 0 if dry_run else state.pending.count_documents({})
        self.expired = 0  # waiting children turned into dead letters by this applier
        # what a root this applier writes does with children stored as waiting for it:
        # "rebuild" the document from the source (CDC); "adopt": keep the written document
        # and set its arrays from the child rows that name it in the source (the SDK after
        # the switch, when MySQL lags MongoDB and a rebuild lost the write); "leave" them for
        # CDC (the SDK before the switch: CDC releases them from the root's binlog event)
        self.stored_pending: Literal["rebuild", "adopt", "leave"] = "rebuild"

    def unique_index(self, collection: str) -> bool:
        """Whether a unique index of the user's is on the collection (read again after a
        while: one may be added during a migration; not once per batch: the SDK applies one
        write at a time)."""
        at, unique = self._unique.get(collection, (0.0, False))
        if time.monotonic() - at > UNIQUE_INDEX_TTL:
            unique = has_unique_index(self.db[collection])
            self._unique[collection] = (time.monotonic(), unique)
        return unique

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


class _Batch(Rebuilds, Waiting):
    """Turns one batch of events into ordered operations per collection, simulating which
    parent documents exist as it goes, then executes them."""

    a: Applier

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
        self.new_docs = NewDocs()
        # collection -> _id keys of roots this batch inserts that MongoDB did not hold
        self.absent: dict[str, set[Hashable]] = {}
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
    def add(
        self, collection: str, op: Op, ev: ChangeEvent | None, pos: Position, doc: Any = None
    ) -> None:
        """Append an operation; `doc`: the one document's `_id` it changes (None: any)."""
        self.new_docs.close(collection, None if doc is None else id_key(doc))
        self.ops.setdefault(collection, []).append(Tagged(op, ev, pos))
        self.last_root.pop(collection, None)

    def _root_update(
        self, coll: str, doc_id: Any, update: dict[str, Any], ev: ChangeEvent, pos: Position
    ) -> None:
        """Coalesce: a root update right after another one of the same document merges with
        it, so that the one write equals applying both (a hot row costs one write per batch)."""
        key = id_key(doc_id)
        op = UpdateOne({"_id": doc_id}, update, upsert=True)
        nd = self.new_docs.get(coll, key)
        if nd is not None:  # a document this batch creates (newdocs.py)
            set_fields(nd.doc, update)
            self.new_docs.fold(nd, [Tagged(op, ev, pos)])
            return
        if ev.before is None and key in self.absent.get(coll, ()):
            # new: written whole at the end of the batch's changes to it (newdocs.py)
            self.absent[coll].discard(key)
            self.last_root.pop(coll, None)
            slot = Tagged(op, ev, pos)
            self.ops.setdefault(coll, []).append(slot)
            arrays = {k: list(v) for k, v in update.get("$setOnInsert", {}).items()}
            self.new_docs.start(coll, key, {"_id": doc_id, **update["$set"], **arrays}, slot)
            return
        last = self.last_root.get(coll)
        ops = self.ops.setdefault(coll, [])
        if last is not None and last[0] == key and last[1] == len(ops) - 1:
            merged = merge_updates(last[2], update)
            ops[-1] = Tagged(UpdateOne({"_id": doc_id}, merged, upsert=True), ev, pos)
            self.last_root[coll] = (key, len(ops) - 1, merged)
            self.result.coalesced += 1
            return
        ops.append(Tagged(op, ev, pos))
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
        # roots inserted: written whole if new (newdocs.py); not where MongoDB is the truth
        inserted: dict[str, dict[Hashable, Any]] = {}
        fold = not self.a.dry_run and self.a.stored_pending != "adopt"
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
                        if ev.before is None and fold:
                            inserted.setdefault(p.name, {})[id_key(rid)] = rid
        # under a unique index of the user's, a document written whole could hold a value
        # another one gives up only later in the batch: statements, in their order
        inserted = {c: ids for c, ids in inserted.items() if not self.a.unique_index(c)}
        for coll, ids in inserted.items():
            want[coll] = {**want.get(coll, {}), **ids}
        for coll, ids in want.items():
            if self.a.dry_run:  # nothing is read either: take every parent as present
                self.exists[coll] = set(ids)
                continue
            self.exists[coll] = set()
            found = find_by_ids(self.a.db[coll], list(ids.values()), {"_id": 1})
            self.exists[coll] |= {id_key(d["_id"]) for d in found}
            self.absent[coll] = set(inserted.get(coll, {})) - self.exists[coll]
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
            self.add(p.name, DeleteOne({"_id": old_id}), ev, pos, doc=old_id)
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
            self.add(p.name, DeleteOne({"_id": old_id}), ev, pos, doc=old_id)
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
                        op = UpdateOne({"_id": new_id}, {"$set": {e.name: value}})
                        self.add(p.name, op, ev, pos, doc=new_id)
        exists.add(id_key(new_id))
        self._release_waiting(p, new_id, pos)

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
            match[f.name] = value_at(element, f.path)
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
        ops = element_updates(e, parent, kind, element, match, ev, many=many)
        nd = None if many else self.new_docs.get(p.name, id_key(parent["_id"]))
        if nd is None:
            for op in ops:
                self.add(p.name, op, ev, pos, doc=None if many else parent["_id"])
            return
        # a document this batch creates: the change is made to it here (newdocs.py)
        if not match:
            nd.doc[e.name] = [element] if kind == "upsert" else []
        elif kind == "remove":
            pull_element(nd.doc, e.name, match)
        else:
            assert element is not None
            upsert_element(nd.doc, e.name, element, match, _written(e, ev), e.sort_fields)
        self.new_docs.fold(nd, [Tagged(op, ev, pos) for op in ops])

    def parent(self, pr: ParentRole, ev: ChangeEvent, pos: Position) -> None:
        p, e = pr.plan, pr.embed

        def docs_pointing_at(img: dict[str, Any]) -> dict[str, Any] | None:
            values = [img.get(c) for c in e.child_columns]
            if any(v is None for v in values):
                return None
            try:
                return self._field_filter(p, e.parent_columns, values)
            except MigratorError:  # the root's FK is not mapped: use the embedded key
                pass
            try:
                return self._field_filter(
                    p, e.child_columns, values, prefix=f"{e.name}.", view=e.view
                )
            except MigratorError:
                # the documents keep neither: the roots pointing at the row, read in MySQL,
                # are rebuilt (a row they no longer point at went with their own change)
                self.rebuild_where.append((p, dict(zip(e.parent_columns, values, strict=True))))
                return None

        old = docs_pointing_at(ev.before) if ev.before is not None else None
        new = docs_pointing_at(ev.after) if ev.after is not None else None
        if old is not None and old != new:
            self.add(p.name, UpdateMany(old, {"$set": {e.name: None}}), ev, pos)
        if new is not None and ev.after is not None:
            element = e.view.build(_row(e.view.columns, ev.after))
            self.add(p.name, UpdateMany(new, {"$set": {e.name: element}}), ev, pos)

    # -- execution ---------------------------------------------------------------------------
    def flush_writes(self) -> None:
        """Write the operations built so far (in order), keeping the rest of the batch's work."""
        self.new_docs.close_all()
        if self.a.dry_run:
            self.result.operations += sum(len(t) for t in self.ops.values())
        else:
            self._writer().write(self.ops)
        self.ops = {}
        self.last_root = {}

    def _writer(self) -> OpWriter:
        return OpWriter(self.a.db, self.a.state, self.result, self.dead)

    def execute(self) -> None:
        self.new_docs.close_all()
        self.result.folded += self.new_docs.folded
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


def _written(e: EmbedPlan, ev: ChangeEvent | None) -> set[str] | None:
    """The element's top-level fields an event may change (None: all of them)."""
    if ev is None or ev.only is None:
        return None
    return {f.path[0] for f in e.view.fields if f.column in ev.only}


def _order_moved(e: EmbedPlan, ev: ChangeEvent | None) -> bool:
    """Whether a change of an element may move it in its array's order."""
    if ev is None or ev.before is None or ev.after is None:
        return True
    if ev.only is not None:
        return any(c in ev.only for c in e.order_by)
    return any(ev.before.get(c) != ev.after.get(c) for c in e.order_by)


def element_updates(
    e: EmbedPlan,
    parent: dict[str, Any],
    kind: str,
    element: dict[str, Any] | None,
    match: dict[str, Any],
    ev: ChangeEvent | None,
    *,
    many: bool,
) -> list[Op]:
    """The statements that make one element change, each idempotent.

    Present, the element is replaced in place (only the fields of the columns written, when
    the event says which); absent, it is pushed (the guard makes a replay a no-op instead of a
    duplicate, and `$sort` keeps the embed's order); then the array is sorted again if the
    change may have moved the element. An inserted row's element is only pushed: if it is
    there already, the copy or an earlier apply wrote it, and every later change of the row
    follows in the stream (which sets it, and sorts again if it moves)."""
    Update = UpdateMany if many else UpdateOne
    name = e.name
    if not match:
        # the child's key is its parent's: one element at most (a 1:1 table as an array)
        return [Update(parent, {"$set": {name: [element] if kind == "upsert" else []}})]
    if kind == "remove":
        return [Update(parent, {"$pull": {name: match}})]
    ops: list[Op] = []
    sort = {".".join(path): 1 for path in e.sort_fields}
    inserted = ev is not None and ev.before is None
    tops = _written(e, ev)
    in_place: dict[str, Any] = {"$set": {f"{name}.$[el]": element}}
    if tops is not None and element is not None:
        in_place = {}
        if tops & element.keys():
            in_place["$set"] = {f"{name}.$[el].{k}": element[k] for k in tops & element.keys()}
        if tops - element.keys():
            in_place["$unset"] = {f"{name}.$[el].{k}": "" for k in tops - element.keys()}
    if in_place and not inserted:
        filters: list[Mapping[str, Any]] = [{f"el.{k}": v for k, v in match.items()}]
        ops.append(Update(parent, in_place, array_filters=filters))
    guard = {**parent, name: {"$not": {"$elemMatch": match}}}
    push: dict[str, Any] = {"$each": [element]}
    if sort:
        push["$sort"] = sort
    ops.append(Update(guard, {"$push": {name: push}}))
    if sort and not inserted and _order_moved(e, ev):
        ops.append(Update(parent, {"$push": {name: {"$each": [], "$sort": sort}}}))
    return ops
