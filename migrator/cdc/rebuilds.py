"""What a batch reads again from the source and writes whole: the documents a nested row
reaches (found through `model/placement.py`), the ones a foreign-key cascade the binlog never
carries changed (`cascade.py`), and the ones a root's filter, key or join change may move.

Each rebuild reads the document from the source *now* (`source/rebuild.py`) at the end of the
batch: later binlog events replayed over it apply their rows' later states, so the stream
converges whatever happened in between.
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import partial
from typing import TYPE_CHECKING, Any

from migrator.cdc.cascade import Cascades, Effect, Place, Rule
from migrator.cdc.pending import Pending
from migrator.cdc.upkeep import ApplierView
from migrator.cdc.writer import BatchResult
from migrator.model.events import ChangeEvent, Position
from migrator.model.keys import id_key
from migrator.model.placement import TreeRole, holder_filters, holder_queries, rows_in
from migrator.model.transform import CollectionPlan
from migrator.model.typerules import param_value
from migrator.sink.mongo import with_retry
from migrator.source.rebuild import (
    id_from_params,
    key_params,
    rebuild_ops,
    root_keys,
    source_value,
)


def value_at(doc: Any, path: str | tuple[str, ...]) -> Any:
    """The value at a dotted path of a document (None where it stops)."""
    for p in path.split(".") if isinstance(path, str) else path:
        doc = doc.get(p) if isinstance(doc, dict) else None
    return doc


class Unmapped(Exception):
    """A column a cascade's condition names is in no document field of a place."""


class Rebuilds:
    """The batch's rebuilds: documents it reads again from the source and writes whole."""

    a: ApplierView
    result: BatchResult
    rebuild: dict[str, dict[Hashable, tuple[Any, tuple[Any, ...]]]]
    rebuild_where: list[tuple[CollectionPlan, dict[str, Any]]]
    rebuild_found: list[tuple[CollectionPlan, dict[str, Any]]]
    rebuild_chain: dict[tuple[Any, ...], tuple[TreeRole, list[dict[str, Any]]]]
    derived: list[Rule]
    new_pending: list[Pending]
    drop_pending: list[Any]

    if TYPE_CHECKING:  # the batch's own (applier.py)

        def add(self, collection: str, op: Any, ev: ChangeEvent | None, pos: Position) -> None: ...

        def dead(
            self, ev: ChangeEvent | None, pos: Position, reason: str, collection: str = ""
        ) -> None: ...

        def touch(self, collection: str, doc_id: Any, ev: ChangeEvent | None) -> None: ...

        def flush_writes(self) -> None: ...

    def rebuild_add(self, plan: CollectionPlan, doc_id: Any = None, key: Any = None) -> None:
        """Rebuild this document from the source at the end of the batch."""
        if key is None:
            key = key_params(plan, doc_id)
        if doc_id is None:
            doc_id = id_from_params(plan, key)
        self.rebuild.setdefault(plan.name, {})[id_key(doc_id)] = (doc_id, key)

    def rebuilding(self, plan: CollectionPlan, doc_id: Any) -> bool:
        return id_key(doc_id) in self.rebuild.get(plan.name, {})

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
                except Unmapped as exc:
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
                raise Unmapped(f"{eff.table}.{col} is not mapped there")
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
                    if all(id_key(value_at(el, k)) == id_key(v) for k, v in inner.items())
                ]
            elif e is not None:
                inners = [doc.get(e.name) or {}]
            for inner_doc in inners:
                values: dict[str, Any] = {}
                for c, loc in locs.items():
                    if loc is None:
                        continue
                    src = doc if loc[0] == "root" else inner_doc
                    values[c] = source_value(value_at(src, loc[1]))
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
                raise Unmapped(f"{eff.table}.{col} is not mapped there")
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
            for q in holder_queries(list(unique.values())):
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
