"""Where a nested row lives: how to find the documents that hold (or should hold) a row of
any node of a collection's embed tree. Pure: paths and filters, no I/O.

A one-level embed of whole rows is kept by CDC element by element. Everything deeper, merged
rows and arrays of values are kept by rebuilding the documents a change reaches from the
source: the applier asks this module which documents those are, backfill which indexes make
finding them cheap.

A row of node N sits under the enclosing row whose `parent_columns` equal the row's
`child_columns`. The documents holding that enclosing row are found in MongoDB by the
enclosing row's fields (at the top, the root's `_id` or fields) — which finds a document
whether or not N's row is in it yet (a first element, a parent that was missing). Where the
enclosing row keeps no such field, they are found in MySQL by joining the tree's tables from
the root down, and in MongoDB by N's own copy of the columns (a copy the document still holds
after MySQL deleted the rows that led to it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from migrator.model.transform import CollectionPlan, EmbedPlan, FieldPlan, TableView, Transform
from migrator.model.typerules import Converter


@dataclass(frozen=True)
class TreeRole:
    """A table's rows at one node of a collection's tree (one the applier rebuilds)."""

    plan: CollectionPlan
    chain: tuple[EmbedPlan, ...]  # the top-level embed down to the node

    @property
    def node(self) -> EmbedPlan:
        return self.chain[-1]

    @property
    def enclosing(self) -> TableView:
        return self.chain[-2].view if len(self.chain) > 1 else self.plan.root

    def describe(self) -> str:
        return f"{self.plan.name}.{'.'.join(e.name for e in self.chain)}"


def tree_roles(transform: Transform) -> list[TreeRole]:
    """Every node CDC keeps by rebuilding: all nodes of a tree that is not a one-level embed
    of whole rows."""
    return [r for p in transform.collections for r in tree_roles_of(p)]


def tree_roles_of(p: CollectionPlan) -> list[TreeRole]:
    return [TreeRole(p, chain) for chain in p.chains() if not chain[0].simple]


def root_path(p: CollectionPlan, col: str) -> tuple[str, Converter] | None:
    """A root column's document path (its `_id` part for a key column) and converter."""
    if col in p.pk:
        i = p.pk.index(col)
        return ("_id" if len(p.pk) == 1 else f"_id.{col}", p.id_converters[i])
    f = p.root.field_for(col)
    return (f.name, f.convert) if f is not None else None


def locate(
    p: CollectionPlan, chain: Sequence[EmbedPlan], col: str, own: bool = True
) -> tuple[str, Converter] | None:
    """The document path of a column of the node at the end of `chain` (the root if empty):
    its own field (`own`), else through its `on` pair the enclosing row's. None if neither is
    in the documents (an array of values keeps no element fields)."""
    if not chain:
        return root_path(p, col)
    e = chain[-1]
    if own and all(n.values_path is None for n in chain):
        f = e.view.field_for(col)
        if f is not None:
            return (".".join((*e.path, f.name)), f.convert)
    if col in e.child_columns:
        return locate(p, chain[:-1], e.parent_columns[e.child_columns.index(col)])
    return None


def holder_filters(
    role: TreeRole, image: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """How to find the documents holding the row `image` of the role's node: MongoDB filters,
    and enclosing-row values to search the root keys for in MySQL (None: not needed). The
    enclosing row's fields are enough when the documents keep them; otherwise the node's own
    copy of its link columns and, in an array of values, the value itself find what the
    documents hold, and MySQL where the row belongs now. A NULL link: in no document."""
    e = role.node
    values = [image.get(c) for c in e.child_columns]
    if any(v is None for v in values):
        return [], None
    enclosing = dict(zip(e.parent_columns, values, strict=True))
    by_enclosing = _filter(role.plan, role.chain[:-1], enclosing)
    if by_enclosing is not None:
        # text MySQL's collation matches otherwise than equality ('acme' = 'ACME'): the
        # documents holding the other spellings are found through MySQL as well
        table = role.enclosing.table
        loose = any(
            isinstance(v, str | bytes) and (table.column(c).folds_case or table.column(c).pads)
            for c, v in enclosing.items()
        )
        return [by_enclosing], enclosing if loose else None
    return copies(role, image), enclosing


def holder_queries(filters: Sequence[dict[str, Any]], batch: int = 1000) -> list[dict[str, Any]]:
    """Queries that together find the documents any of `filters` finds: the filters on one
    path as one `$in` (what a path's index answers: SecantusDB scans the whole collection for
    any `$or`, 6 s on 100,000 documents against 0.04 s), the others (several paths) as `$or`
    batches."""
    by_path: dict[str, list[Any]] = {}
    others: list[dict[str, Any]] = []
    for f in filters:
        if len(f) == 1:
            ((path, value),) = f.items()
            by_path.setdefault(path, []).append(value)
        else:
            others.append(f)
    out: list[dict[str, Any]] = []
    for path, values in by_path.items():
        for i in range(0, len(values), batch):
            part = values[i : i + batch]
            out.append({path: part[0]} if len(part) == 1 else {path: {"$in": part}})
    for i in range(0, len(others), 200):
        part = others[i : i + 200]
        out.append(part[0] if len(part) == 1 else {"$or": part})
    return out


def copies(role: TreeRole, image: dict[str, Any]) -> list[dict[str, Any]]:
    """Filters for the documents holding a copy of this row: by its own link fields, or by
    the value an array of values took from it."""
    e, out = role.node, []
    own = _own_paths(role.chain)
    values = [image.get(c) for c in e.child_columns]
    if own is not None and all(v is not None for v in values):
        out.append({path: conv(v) for (path, conv), v in zip(own, values, strict=True)})
    for path, f in _value_paths(role):
        # a NULL value is a null element: the documents holding one are all candidates
        raw = image.get(f.column)
        out.append({path: None if raw is None else f.convert(raw)})
    return out


def findable_in_documents(role: TreeRole) -> bool:
    """Whether the documents holding this node's rows can be found in MongoDB alone (rows a
    cascade deleted or unlinked in MySQL can be found nowhere else)."""
    e = role.node
    if all(locate(role.plan, role.chain[:-1], c) is not None for c in e.parent_columns):
        return True
    return _own_paths(role.chain) is not None or bool(_value_paths(role))


def _own_paths(chain: Sequence[EmbedPlan]) -> list[tuple[str, Converter]] | None:
    """The document paths of the node's own copies of its link columns (None: not kept)."""
    e = chain[-1]
    if any(n.values_path is not None for n in chain):
        return None
    out = []
    for col in e.child_columns:
        f = e.view.field_for(col)
        if f is None:
            return None
        out.append((".".join((*e.path, f.name)), f.convert))
    return out


def _value_paths(role: TreeRole) -> list[tuple[str, FieldPlan]]:
    """Arrays of values (above the node, none above them) made of a field of the node."""
    out = []
    for i, v in enumerate(role.chain):
        source = v.values_source
        if source is None or source[0] is not role.node:
            continue
        if all(n.values_path is None for n in role.chain[:i]):
            out.append((".".join(v.path), source[1]))
    return out


def _filter(
    p: CollectionPlan, chain: Sequence[EmbedPlan], values: dict[str, Any]
) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    for col, v in values.items():
        loc = locate(p, chain, col)
        if loc is None:
            return None
        out[loc[0]] = loc[1](v)
    return out


def target_indexes(p: CollectionPlan) -> list[list[str]]:
    """The indexes CDC finds documents by (each list one index; `backfill` makes them, `plan`
    lists them): an N:1 sub-document's key (fan-out), and the paths of nested rows."""
    out: list[list[str]] = []
    for e in p.embeds:
        if e.many or not e.simple:
            continue  # children are found through their parent's _id; trees below
        paths = []
        for c in e.child_columns:
            f = e.view.field_for(c)
            if f is not None:
                paths.append(f"{e.name}.{f.name}")
        if paths:
            out.append(paths)
    return out + [k for k in discovery_indexes(p) if k not in out]


def discovery_indexes(p: CollectionPlan) -> list[list[str]]:
    """The document paths CDC finds nested rows by (each list one index), `_id` left out."""
    out: list[list[str]] = []
    for role in tree_roles_of(p):
        e = role.node
        paths: list[list[str]] = []
        enclosing = [locate(p, role.chain[:-1], c) for c in e.parent_columns]
        if all(loc is not None for loc in enclosing):
            paths.append([loc[0] for loc in enclosing if loc is not None])
        else:
            own = _own_paths(role.chain)
            if own is not None:
                paths.append([path for path, _conv in own])
            paths += [[path] for path, _f in _value_paths(role)]
        for keys in paths:
            keys = [k for k in keys if k != "_id" and not k.startswith("_id.")]
            if keys and keys not in out:
                out.append(keys)
    return out


def held_columns(chain: Sequence[EmbedPlan]) -> set[str]:
    """The columns of the node at the end of `chain` whose change can change a document: all
    it reads, unless it sits in an array of values, which keeps only its values (then: the
    links and order that make the array, and the path down to the value's column)."""
    e = chain[-1]
    for v in chain:
        if v.values_path is None:
            continue
        source = v.values_source
        route = _route(v, source[0]) if source is not None else None
        if route is None or e not in route:
            return set(e.child_columns) if e is v else set()
        held = set(e.child_columns)
        if e is v:
            held |= set(v.order_by)
        nxt = route.index(e) + 1
        if nxt < len(route):
            held |= set(route[nxt].parent_columns)
        elif source is not None:
            held.add(source[1].column)
        return held
    return set(e.view.columns)


def _route(top: EmbedPlan, target: EmbedPlan) -> list[EmbedPlan] | None:
    """The nodes from `top` down to `target` (both included), or None."""
    if top is target:
        return [top]
    for sub in top.embeds:
        found = _route(sub, target)
        if found is not None:
            return [top, *found]
    return None


def rows_in(
    doc: dict[str, Any], p: CollectionPlan, chain: Sequence[EmbedPlan], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """The rows of the node at the end of `chain` a document holds, each as the document
    values of `columns` (its own fields, or through its `on` pairs the enclosing rows'); a
    column it cannot show is left out. Nothing from inside an array of values."""
    if any(n.values_path is not None for n in chain):
        return []
    out: list[dict[str, Any]] = []

    def walk(part: dict[str, Any], depth: int, parts: list[dict[str, Any]]) -> None:
        e = chain[depth]
        if e.merge:
            found = [part]
        elif e.many:
            found = [x for x in part.get(e.name) or [] if isinstance(x, dict)]
        else:
            sub = part.get(e.name)
            found = [sub] if isinstance(sub, dict) else []
        for q in found:
            if depth + 1 < len(chain):
                walk(q, depth + 1, [*parts, q])
                continue
            row = {}
            for c in columns:
                v = _value_of(p, chain, [*parts, q], len(chain), c)
                if v is not _ABSENT:
                    row[c] = v
            out.append(row)

    walk(doc, 0, [doc])
    return out


_ABSENT = object()


def _value_of(
    p: CollectionPlan, chain: Sequence[EmbedPlan], parts: list[dict[str, Any]], k: int, col: str
) -> Any:
    """A column of the row at level k (0: the root) from the document parts down to it."""
    if k == 0:
        if col in p.pk:
            ident = parts[0].get("_id")
            return ident if len(p.pk) == 1 else (ident or {}).get(col, _ABSENT)
        f = p.root.field_for(col)
        return _at(parts[0], f.path) if f is not None else _ABSENT
    e = chain[k - 1]
    f = e.view.field_for(col)
    if f is not None:
        return _at(parts[k], f.path)
    if col in e.child_columns:
        return _value_of(p, chain, parts, k - 1, e.parent_columns[e.child_columns.index(col)])
    return _ABSENT


def _at(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return _ABSENT
        doc = doc[part]
    return doc
