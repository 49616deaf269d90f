"""The one Transform: source rows -> MongoDB documents, compiled from a mapping and a schema.

Backfill, CDC and verify all build documents here, so what is written and what is checked can
never disagree. Rows are tuples in the order of `TableView.columns` holding what a SELECT
returns (see typerules); compile-time checks name the mapping file, line and key.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from bson.decimal128 import Decimal128

from migrator.errors import ConversionError, SchemaError
from migrator.model.bsonorder import sort_key, sorter
from migrator.model.schema import Schema, Table
from migrator.model.settings import CollectionSpec, EmbedSpec, Mapping, Projection
from migrator.model.typerules import (
    Converter,
    KeyRange,
    default_converter,
    key_search,
    override_converter,
    param_value,
    source_param,
    zone_for,
)

Row = Sequence[Any]


def _finite(v: Any, integer: bool) -> bool:
    """A number a key column could hold: finite, and whole for an integer column."""
    if isinstance(v, float):
        return math.isfinite(v) and (not integer or v.is_integer())
    if isinstance(v, Decimal128):
        d = v.to_decimal()
        return d.is_finite() and (not integer or d == d.to_integral_value())
    return True


@dataclass
class FieldPlan:
    name: str  # the document field (dotted = nested)
    path: tuple[str, ...]
    column: str
    index: int
    convert: Converter
    type_name: str = "auto"  # the mapping's `type:` ("auto": the default rule)


@dataclass
class TableView:
    """How rows of one table become a (sub-)document: the columns read and the fields built."""

    table: Table
    columns: list[str]
    fields: list[FieldPlan]
    omit_nulls: bool = False
    index: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.index = {c: i for i, c in enumerate(self.columns)}
        self._fast = _compile_builder(self.fields, self.omit_nulls)
        self._folds: dict[str, Callable[[Any], Any]] = {}
        for c in self.columns:
            col = self.table.column(c)
            if col.folds_case or col.pads:
                self._folds[c] = col.collate
        self._by_column: dict[str, FieldPlan] = {}
        for f in self.fields:  # the first field a column feeds (CDC asks once per event)
            self._by_column.setdefault(f.column, f)

    def build(self, row: Row) -> dict[str, Any]:
        try:
            return self._fast(row)
        except Exception:  # find out which column failed, and say so
            return self._build_slow(row)

    def _build_slow(self, row: Row) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for f in self.fields:
            raw = row[f.index]
            if raw is None:
                if self.omit_nulls:
                    continue
                value = None
            else:
                try:
                    value = f.convert(raw)
                except ConversionError as exc:
                    raise ConversionError(
                        f"{self.table.name}.{f.column}: {exc.message}", hint=exc.hint
                    ) from None
                except (ValueError, TypeError, ArithmeticError) as exc:
                    raise ConversionError(
                        f"{self.table.name}.{f.column}: cannot convert {raw!r:.80}: {exc}"
                    ) from None
            if len(f.path) == 1:
                doc[f.name] = value
            else:
                target = doc
                for part in f.path[:-1]:
                    target = target.setdefault(part, {})
                target[f.path[-1]] = value
        return doc

    def values(self, row: Row, columns: Sequence[str]) -> tuple[Any, ...]:
        return tuple(row[self.index[c]] for c in columns)

    def join_key(self, row: Row, columns: Sequence[str]) -> tuple[Any, ...]:
        """The values an embed joins on, as MySQL compares them: text of a case-insensitive
        collation folded (its foreign key accepts 'acme' for 'ACME', and the join matches)."""
        folds = self._folds
        return tuple(
            folds[c](row[self.index[c]]) if c in folds else row[self.index[c]] for c in columns
        )

    def params(self, row: Row, columns: Sequence[str]) -> tuple[Any, ...]:
        return tuple(param_value(self.table.column(c), row[self.index[c]]) for c in columns)

    def field_for(self, column: str) -> FieldPlan | None:
        return self._by_column.get(column)


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for part in path[:-1]:
        doc = doc.setdefault(part, {})
    doc[path[-1]] = value


def _compile_builder(
    fields: list[FieldPlan],
    omit_nulls: bool,
    id_fields: list[tuple[str, int, Converter]] | None = None,
) -> Any:
    """Generate `build(row) -> dict` for one view: no per-field loop or branching on the path.

    This is the backfill's inner loop; the generic version above it is kept for error reports.
    Text columns arrive as str and skip their converter.
    """
    from migrator.model.typerules import as_string

    ns: dict[str, Any] = {"_put": _put}
    body = ["def build(row):"]
    if not id_fields:
        body.append("    d = {}")
    elif len(id_fields) == 1:
        ns["i0"] = id_fields[0][2]
        body.append(f"    d = {{'_id': i0(row[{id_fields[0][1]}])}}")
    else:
        parts = []
        for n, (col, idx, id_conv) in enumerate(id_fields):
            ns[f"i{n}"] = id_conv
            parts.append(f"{col!r}: i{n}(row[{idx}])")
        body.append(f"    d = {{'_id': {{{', '.join(parts)}}}}}")
    for n, f in enumerate(fields):
        ns[f"c{n}"] = f.convert
        ns[f"p{n}"] = f.path
        expr = f"(v if v.__class__ is str else c{n}(v))" if f.convert is as_string else f"c{n}(v)"
        store = f"d[{f.name!r}] = " if len(f.path) == 1 else f"_put(d, p{n}, "
        close = "" if len(f.path) == 1 else ")"
        body.append(f"    v = row[{f.index}]")
        if omit_nulls:
            body.append(f"    if v is not None: {store}{expr}{close}")
        else:
            body.append(f"    {store}None if v is None else {expr}{close}")
    body.append("    return d")
    exec("\n".join(body), ns)  # code from our own field plan; names are repr()'d
    return ns["build"]


@dataclass
class EmbedPlan:
    """One node of a collection's embed tree: rows of `view.table` inside the enclosing
    document or element (its parent node; at the top, the root row)."""

    spec: EmbedSpec
    view: TableView
    child_columns: list[str]  # columns of the embedded table, in `on` order
    parent_columns: list[str]  # the enclosing table's columns they match
    order_by: list[str]  # embedded-table columns (many: order_by then primary key)
    embeds: list[EmbedPlan] = field(default_factory=list)  # nested, to any depth
    slot: str = ""  # this node's unique name in the tree (its rows' key in a chunk's children)
    path: tuple[str, ...] = ()  # the document path of this node's rows ("items", "product")
    values_path: tuple[str, ...] | None = None
    # the node and field an array of values takes each value from (None: a sub-document)
    values_source: tuple[EmbedPlan, FieldPlan] | None = None
    order_converters: list[tuple[int, Converter]] = field(default_factory=list)
    depth: int = 1  # 1: a top-level embed (enclosed by the root row)

    @property
    def name(self) -> str:
        return self.spec.label

    @property
    def many(self) -> bool:
        return self.spec.many

    @property
    def merge(self) -> bool:
        return self.spec.merge

    @property
    def simple(self) -> bool:
        """A one-level embed of whole rows (a top-level embed with none below it), which CDC
        keeps with element-wise operations; anything deeper (or merged, or values), and every
        node of a deeper tree, CDC rebuilds from the source."""
        return self.depth == 1 and not self.embeds and not self.merge and self.values_path is None

    def own_key(self, row: Row) -> tuple[Any, ...]:
        """The key a row of this node is grouped under (its `on` columns)."""
        if self.simple:  # exact, as CDC's element-wise operations match it
            return self.view.values(row, self.child_columns)
        return self.view.join_key(row, self.child_columns)

    def enclosing_key(self, enclosing: TableView, row: Row) -> tuple[Any, ...]:
        """The key an enclosing row finds this node's rows under."""
        if self.simple:
            return enclosing.values(row, self.parent_columns)
        return enclosing.join_key(row, self.parent_columns)

    def walk(self) -> Iterator[EmbedPlan]:
        """This node and every node below it, parents first."""
        yield self
        for e in self.embeds:
            yield from e.walk()

    @cached_property
    def sort_fields(self) -> list[tuple[str, ...]]:
        """The element fields the array is sorted by ($sort's keys): order_by, then the key.
        Columns left out of the elements (the `on` columns, constant in one array) drop out."""
        paths = []
        for c in self.order_by:
            f = self.view.field_for(c)
            if f is not None:
                paths.append(f.path)
        return paths

    def elements(self, rows: Iterable[Row]) -> list[dict[str, Any]]:
        """A one-level array's elements, in MongoDB's $sort order of their converted fields."""
        docs = [self.view.build(r) for r in rows]
        self._sort(docs)
        return docs

    @cached_property
    def _sort(self) -> Callable[[list[dict[str, Any]]], None]:
        return sorter(self.sort_fields)

    @cached_property
    def _row_order(self) -> Callable[[Row], tuple[Any, ...]]:
        """A tree array's order: order_by then the key, by the converted column values (an
        element may not keep them all: a join row's key can come back merged from its far
        table), compared as MongoDB compares them."""
        plan = self.order_converters

        def key(row: Row) -> tuple[Any, ...]:
            return tuple(sort_key(None if row[i] is None else conv(row[i])) for i, conv in plan)

        return key

    def value(self, enclosing: TableView, row: Row, groups: Groups) -> Any:
        """This node's value in the document or element built from `row` (of `enclosing`):
        an array, a sub-document, or None (a merge node's fields: see `fill`)."""
        key = self.enclosing_key(enclosing, row)
        found = groups[self.slot].get(key) if None not in key else None
        if not self.many:
            return self.element(found, groups) if found is not None else None
        rows = found or []
        if self.simple:
            return self.elements(rows)
        if len(rows) > 1:
            rows = sorted(rows, key=self._row_order)
        elements = [self.element(r, groups) for r in rows]
        if self.values_path is not None:
            return [_get(el, self.values_path) for el in elements]
        return elements

    def element(self, row: Row, groups: Groups) -> dict[str, Any]:
        doc = self.view.build(row)
        fill(doc, self.view, row, self.embeds, groups)
        return doc

    def merged(self, enclosing: TableView, row: Row, groups: Groups) -> dict[str, Any]:
        """A merge node's fields for the enclosing row: the row's, or each one null (left out
        with `nulls: omit`) when there is no row."""
        key = self.enclosing_key(enclosing, row)
        found = groups[self.slot].get(key) if None not in key else None
        if found is None:
            found = (None,) * len(self.view.columns)
        return self.element(found, groups)


Groups = dict[str, dict[tuple[Any, ...], Any]]  # slot -> enclosing key -> row (or rows)


def fill(
    doc: dict[str, Any], view: TableView, row: Row, embeds: list[EmbedPlan], groups: Groups
) -> None:
    """Put the embeds of `row` (a row of `view`) into the document or element built from it."""
    for e in embeds:
        if e.merge:
            for k, v in e.merged(view, row, groups).items():
                doc.setdefault(k, v)  # an `on` column merged over its equal: the same value
        else:
            doc[e.name] = e.value(view, row, groups)


def group_rows(embeds: Iterable[EmbedPlan], children: dict[str, list[Row]]) -> Groups:
    """Each node's rows (read for a whole chunk) by the enclosing key they belong under."""
    groups: Groups = {}
    for top in embeds:
        for e in top.walk():
            g: dict[tuple[Any, ...], Any] = {}
            for r in children.get(e.slot, ()):
                key = e.own_key(r)
                if e.many:
                    g.setdefault(key, []).append(r)
                else:
                    g[key] = r
            groups[e.slot] = g
    return groups


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(part)
    return doc


@dataclass
class CollectionPlan:
    """The Transform for one collection: root row + its embedded rows -> one document."""

    spec: CollectionSpec
    root: TableView
    pk: list[str]
    id_converters: list[Converter]
    embeds: list[EmbedPlan]
    # per key column, how a converted key value finds its row again (typerules.key_search)
    key_searches: list[Converter] = field(default_factory=list)

    def __post_init__(self) -> None:
        ids = [
            (c, self.root.index[c], conv)
            for c, conv in zip(self.pk, self.id_converters, strict=True)
        ]
        self._fast_root = _compile_builder(self.root.fields, self.root.omit_nulls, ids)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def table(self) -> Table:
        return self.root.table

    def nodes(self) -> Iterator[EmbedPlan]:
        """Every embed of the tree, parents first."""
        for e in self.embeds:
            yield from e.walk()

    def chains(self) -> Iterator[tuple[EmbedPlan, ...]]:
        """Every node with the nodes above it (the top-level embed first), parents first."""
        stack: list[tuple[EmbedPlan, ...]] = [(e,) for e in reversed(self.embeds)]
        while stack:
            chain = stack.pop()
            yield chain
            stack += [(*chain, sub) for sub in reversed(chain[-1].embeds)]

    def doc_id(self, row: Row) -> Any:
        idx = self.root.index
        if len(self.pk) == 1:
            return self.id_converters[0](row[idx[self.pk[0]]])
        return {c: conv(row[idx[c]]) for c, conv in zip(self.pk, self.id_converters, strict=True)}

    def key(self, doc_id: Any) -> tuple[Any, ...]:
        """A document `_id` back to its source primary key, as query parameters (a KeyRange
        for a column whose conversion keeps less than it holds)."""
        values = [doc_id.get(c) for c in self.pk] if hasattr(doc_id, "get") else [doc_id]
        searches = self.key_searches or [source_param] * len(values)
        return tuple(search(v) for search, v in zip(searches, values, strict=False))

    def names_a_row(self, doc_id: Any) -> bool:
        """Whether some row's key could give this `_id`: the key's shape (a scalar, or exactly
        the key's fields), no infinite or NaN number (no MySQL column holds one), no fraction
        for an integer column."""
        if len(self.pk) == 1:
            if isinstance(doc_id, dict | list) or hasattr(doc_id, "keys"):
                return False
            parts = [doc_id]
        else:
            if not hasattr(doc_id, "keys") or sorted(doc_id.keys()) != sorted(self.pk):
                return False
            parts = [doc_id[c] for c in self.pk]
        columns = [self.table.column(c) for c in self.pk]
        return all(_finite(v, c.is_integer) for v, c in zip(parts, columns, strict=True))

    def id_of_key(self, key: Sequence[Any]) -> Any:
        """The `_id` a row with this primary key gets (a KeyRange stands for its value)."""
        idx = self.root.index
        row: list[Any] = [None] * len(self.root.columns)
        for c, v in zip(self.pk, key, strict=True):
            row[idx[c]] = v
        parts = [
            v.value if isinstance(v, KeyRange) else conv(row[idx[c]])
            for c, conv, v in zip(self.pk, self.id_converters, key, strict=True)
        ]
        return parts[0] if len(self.pk) == 1 else dict(zip(self.pk, parts, strict=True))

    def document(self, row: Row, groups: Groups) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = self._fast_root(row)
        except Exception:  # the slow path names the column that failed
            doc = {"_id": self.doc_id(row)}
            doc.update(self.root.build(row))
        fill(doc, self.root, row, self.embeds, groups)
        return doc

    def documents(
        self, rows: Iterable[Row], children: dict[str, list[Row]], on_error: Any = None
    ) -> list[dict[str, Any]]:
        """Build documents for a chunk; `children` holds each node's rows for the whole chunk
        (by slot, see ChunkReader.read_embeds).

        A row that cannot be converted is passed to `on_error(row, exc)` (the dead-letter path)
        instead of failing the chunk; without a handler the error propagates.
        """
        groups = group_rows(self.embeds, children)
        docs = []
        for row in rows:
            try:
                docs.append(self.document(row, groups))
            except ConversionError as exc:
                if on_error is None:
                    raise
                on_error(row, exc)
        return docs

    def embedded(self, e: EmbedPlan, row: Row, children: dict[str, list[Row]]) -> Any:
        """One top-level embed's value for one root row, from its subtree's rows (read for
        that row alone). The root row may come from an event, typed otherwise than the
        SELECT's raw values (and a collation matches 'ab' to 'AB'): every top-level row read
        belongs to it."""
        groups = group_rows([e], children)
        top = children.get(e.slot, [])
        key = e.enclosing_key(self.root, row)
        groups[e.slot] = {key: (top if e.many else top[0])} if top else {}
        return e.value(self.root, row, groups)


@dataclass
class Transform:
    mapping: Mapping
    schema: Schema
    collections: list[CollectionPlan]

    def collection(self, name: str) -> CollectionPlan:
        for c in self.collections:
            if c.name == name:
                return c
        raise SchemaError(f"no collection named {name!r} in {self.mapping.path}")


def _view(
    mapping: Mapping,
    schema: Schema,
    table_name: str,
    proj: Projection,
    key: tuple[str | int, ...],
    extra_columns: Iterable[str],
    omit_nulls: bool,
) -> TableView:
    if table_name not in schema.tables:
        known = ", ".join(sorted(schema.tables)) or "(none)"
        raise SchemaError(
            f"{mapping.where(*key, 'from')}: table {table_name!r} does not exist "
            f"in database {schema.database!r} (tables: {known})"
        )
    table = schema.tables[table_name]
    zone = zone_for(mapping.source.timezone)

    def check(col: str, *where: str | int) -> None:
        if not table.has_column(col):
            raise SchemaError(
                f"{mapping.where(*key, *where)}: table {table_name!r} has no column "
                f"{col!r} (columns: {', '.join(table.column_names)})"
            )

    for i, col in enumerate(proj.exclude):
        check(col, "exclude", i)
    mapped: list[tuple[str, str, str]] = []  # (field name, column, type)
    renamed = set()
    for name, spec in proj.field_items():
        check(spec.column, "fields", name)
        mapped.append((name, spec.column, spec.type))
        renamed.add(spec.column)
    if proj.all_columns:
        taken = {m[0] for m in mapped}
        for col in table.column_names:
            if col not in renamed and col not in proj.exclude and col not in taken:
                mapped.append((col, col, "auto"))
    names = [m[0] for m in mapped]
    for n in names:
        if any(o.startswith(n + ".") for o in names):
            raise SchemaError(
                f"{mapping.where(*key, 'fields', n)}: field {n!r} is both a value "
                "and the parent of another dotted field"
            )
    needed = {m[1] for m in mapped} | set(extra_columns)
    columns = [c for c in table.column_names if c in needed]
    index = {c: i for i, c in enumerate(columns)}
    fields = [
        FieldPlan(
            name=n,
            path=tuple(n.split(".")),
            column=c,
            index=index[c],
            convert=override_converter(table.column(c), t, zone),
            type_name=t,
        )
        for n, c, t in mapped
    ]
    return TableView(table=table, columns=columns, fields=fields, omit_nulls=omit_nulls)


def compile_transform(mapping: Mapping, schema: Schema) -> Transform:
    """Check the mapping against the schema and build the Transform; errors name file:line key."""
    plans = []
    zone = zone_for(mapping.source.timezone)
    for ci, coll in enumerate(mapping.collections):
        key: tuple[str | int, ...] = ("collections", ci)
        table = _table(mapping, schema, coll.from_, key)
        if not table.primary_key:
            raise SchemaError(
                f"{mapping.where(*key, 'from')}: table {coll.from_!r} has no primary key",
                hint="backfill pages by primary key and CDC matches rows by it: add one "
                "(ALTER TABLE … ADD PRIMARY KEY) or leave the table out",
            )
        tree = _Tree(mapping, schema, coll.nulls == "omit", zone)
        embeds = [
            tree.node(emb, (*key, "embed", ei), table, (table.name,), (), "")
            for ei, emb in enumerate(coll.embed)
        ]
        root_extra = set(table.primary_key) | {c for e in embeds for c in e.parent_columns}
        root = _view(
            mapping, schema, coll.from_, coll, key, root_extra, omit_nulls=coll.nulls == "omit"
        )
        tree.check_names(root, embeds, key)
        id_conv = [default_converter(table.column(c), zone) for c in table.primary_key]
        searches = [key_search(table.column(c), zone) for c in table.primary_key]
        plans.append(
            CollectionPlan(
                spec=coll,
                root=root,
                pk=list(table.primary_key),
                id_converters=id_conv,
                embeds=embeds,
                key_searches=searches,
            )
        )
    return Transform(mapping=mapping, schema=schema, collections=plans)


def _table(mapping: Mapping, schema: Schema, name: str, key: tuple[str | int, ...]) -> Table:
    if name not in schema.tables:
        known = ", ".join(sorted(schema.tables)) or "(none)"
        raise SchemaError(
            f"{mapping.where(*key, 'from')}: table {name!r} does not exist "
            f"in database {schema.database!r} (tables: {known})"
        )
    return schema.tables[name]


@dataclass
class _Tree:
    """Compiles one collection's embed tree, node by node, checking each against the schema."""

    mapping: Mapping
    schema: Schema
    omit_nulls: bool
    zone: Any

    def where(self, key: tuple[str | int, ...], *more: str | int) -> str:
        return self.mapping.where(*key, *more)

    def node(
        self,
        emb: EmbedSpec,
        key: tuple[str | int, ...],
        parent: Table,
        chain: tuple[str, ...],
        path: tuple[str, ...],
        parent_slot: str,
    ) -> EmbedPlan:
        child = _table(self.mapping, self.schema, emb.from_, key)
        if len(chain) > 1 and emb.from_ in chain:
            loop = " > ".join([*chain, emb.from_])
            raise SchemaError(
                f"{self.where(key, 'from')}: the tree loops back: {emb.from_!r} is embedded "
                f"inside itself ({loop}); a document cannot hold its own table again below it"
            )
        self._check_columns(emb, key, child, parent)
        # a top-level embed's slot is its name (stored records name it); merges are numbered
        label = emb.as_ if emb.as_ is not None else f"+{emb.from_}#{key[-1]}"
        slot = f"{parent_slot}/{label}" if parent_slot else label
        here = path if emb.merge else (*path, emb.label)
        subs = [
            self.node(sub, (*key, "embed", i), child, (*chain, emb.from_), here, slot)
            for i, sub in enumerate(emb.embed)
        ]
        order = list(emb.order_by) + [c for c in child.primary_key if c not in emb.order_by]
        extra = [*emb.on.keys(), *order, *child.primary_key]
        extra += [c for s in subs for c in s.parent_columns]
        view = _view(
            self.mapping,
            self.schema,
            emb.from_,
            emb,
            key,
            extra,
            omit_nulls=self.omit_nulls and emb.merge,
        )
        self.check_names(view, subs, key)
        plan = EmbedPlan(
            spec=emb,
            view=view,
            child_columns=list(emb.on.keys()),
            parent_columns=list(emb.on.values()),
            order_by=order,
            embeds=subs,
            slot=slot,
            path=here,
            order_converters=[(view.index[c], _order_converter(view, c, self.zone)) for c in order],
            depth=len(chain),
        )
        if emb.values is not None:
            plan.values_path = self._values_path(plan, key)
            plan.values_source = _source_of(plan, plan.values_path)
        if emb.many and plan.simple:
            self._check_simple_array(plan, key)
        return plan

    def _check_columns(
        self, emb: EmbedSpec, key: tuple[str | int, ...], child: Table, parent: Table
    ) -> None:
        for ccol, pcol in emb.on.items():
            if not child.has_column(ccol):
                raise SchemaError(
                    f"{self.where(key, 'on', ccol)}: table {emb.from_!r} has no column {ccol!r}"
                )
            if not parent.has_column(pcol):
                raise SchemaError(
                    f"{self.where(key, 'on', ccol)}: the enclosing table {parent.name!r} "
                    f"has no column {pcol!r}"
                )
        for oi, ocol in enumerate(emb.order_by):
            if not child.has_column(ocol):
                raise SchemaError(
                    f"{self.where(key, 'order_by', oi)}: table {emb.from_!r} has no column {ocol!r}"
                )
        if emb.many and not child.primary_key:
            raise SchemaError(
                f"{self.where(key, 'from')}: embedded table {emb.from_!r} has no primary "
                "key; array elements are told apart and ordered by it"
            )

    def _check_simple_array(self, e: EmbedPlan, key: tuple[str | int, ...]) -> None:
        """A one-level array is kept by CDC element by element: its elements must keep the
        columns that order them and tell them apart."""
        for oi, ocol in enumerate(e.spec.order_by):
            if e.view.field_for(ocol) is None and ocol not in e.spec.on:
                raise SchemaError(
                    f"{self.where(key, 'order_by', oi)}: column {ocol!r} is "
                    "excluded from the elements; CDC keeps the array in order by "
                    "sorting on the elements' own fields, so an order_by column "
                    "must stay in them"
                )
        # Within one parent's array the `on` columns are constant; the rest of the child's
        # key tells elements apart.
        for c in [k for k in e.view.table.primary_key if k not in e.spec.on]:
            if e.view.field_for(c) is None:
                raise SchemaError(
                    f"{self.where(key)}: the primary key column {c!r} of "
                    f"{e.spec.from_!r} must stay in the embedded elements "
                    "(CDC finds an element by it); do not exclude it"
                )

    def check_names(
        self, view: TableView, embeds: list[EmbedPlan], key: tuple[str | int, ...]
    ) -> None:
        """Every name in a document or element comes from one place: its own fields, an
        embed, or a merged row (an `on` column merged over its equal excepted)."""
        owner: dict[str, tuple[str, Any]] = {}
        for f in view.fields:
            owner.setdefault(f.path[0], (f"field {f.name!r}", (view.table.name, f.column)))
        for i, e in enumerate(embeds):
            ekey = (*key, "embed", i)
            if not e.merge:
                self._claim(owner, e.name, (f"embed {e.name!r}", None), ekey, "as")
                continue
            equal = {(e.view.table.name, c): (view.table.name, p) for c, p in e.spec.on.items()}
            for name, (what, source) in _names(e).items():
                first = owner.get(name)
                if first is not None and source is not None and equal.get(source) == first[1]:
                    continue  # the `on` column and its equal: one value
                self._claim(
                    owner, name, (f"{what} merged from {e.spec.from_!r}", source), ekey, "merge"
                )

    def _claim(
        self,
        owner: dict[str, tuple[str, Any]],
        name: str,
        what: tuple[str, Any],
        key: tuple[str | int, ...],
        at: str,
    ) -> None:
        first = owner.setdefault(name, what)
        if first is not what:
            raise SchemaError(
                f"{self.where(key, at)}: {name!r} is given twice in one document: by "
                f"{first[0]} and by {what[0]}; rename one (fields: {{new_name: column}})"
            )

    def _values_path(self, e: EmbedPlan, key: tuple[str | int, ...]) -> tuple[str, ...]:
        assert e.spec.values is not None
        path = tuple(e.spec.values.split("."))
        if path not in _paths(e):
            have = ", ".join(".".join(p) for p in sorted(_paths(e)) if len(p) <= 3) or "(none)"
            raise SchemaError(
                f"{self.where(key, 'values')}: the elements have no field {e.spec.values!r} "
                f"(they have: {have})"
            )
        return path


def _order_converter(view: TableView, column: str, zone: Any) -> Converter:
    f = view.field_for(column)
    return f.convert if f is not None else default_converter(view.table.column(column), zone)


def _names(e: EmbedPlan) -> dict[str, tuple[str, Any]]:
    """The top-level names a node puts in its element (a merge node: in the enclosing one)."""
    out: dict[str, tuple[str, Any]] = {}
    for f in e.view.fields:
        out.setdefault(f.path[0], (f"field {f.name!r}", (e.view.table.name, f.column)))
    for sub in e.embeds:
        if sub.merge:
            out.update({k: v for k, v in _names(sub).items() if k not in out})
        else:
            out.setdefault(sub.name, (f"embed {sub.name!r}", None))
    return out


def _source_of(e: EmbedPlan, path: tuple[str, ...]) -> tuple[EmbedPlan, FieldPlan] | None:
    """The node and field a path into one element of `e` reads (None: a sub-document)."""
    for f in e.view.fields:
        if f.path == path:
            return (e, f)
    for sub in e.embeds:
        if sub.merge:
            found = _source_of(sub, path)
            if found is not None:
                return found
        elif not sub.many and path[0] == sub.name and len(path) > 1:
            return _source_of(sub, path[1:])
    return None


def _paths(e: EmbedPlan) -> set[tuple[str, ...]]:
    """Every path into one element of `e` that holds a value (not through an array)."""
    out: set[tuple[str, ...]] = set()
    for f in e.view.fields:
        out |= {f.path[:i] for i in range(1, len(f.path) + 1)}
    for sub in e.embeds:
        if sub.merge:
            out |= _paths(sub)
        else:
            out.add((sub.name,))
            if not sub.many:
                out |= {(sub.name, *p) for p in _paths(sub)}
    return out
