"""The one Transform: source rows -> MongoDB documents, compiled from a mapping and a schema.

Backfill, CDC and verify all build documents here, so what is written and what is checked can
never disagree. Rows are tuples in the order of `TableView.columns` holding what a SELECT
returns (see typerules); compile-time checks name the mapping file, line and key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from migrator.errors import ConversionError, SchemaError
from migrator.model.bsonorder import sorter
from migrator.model.schema import Schema, Table
from migrator.model.settings import CollectionSpec, EmbedSpec, Mapping, Projection
from migrator.model.typerules import (
    Converter,
    default_converter,
    override_converter,
    param_value,
    zone_for,
)

Row = Sequence[Any]


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
    spec: EmbedSpec
    view: TableView
    child_columns: list[str]  # columns of the embedded table, in `on` order
    root_columns: list[str]  # the root table's columns they match
    order_by: list[str]  # embedded-table columns (many: order_by then primary key)

    @property
    def name(self) -> str:
        return self.spec.as_

    @property
    def many(self) -> bool:
        return self.spec.many

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
        """An array's elements, in MongoDB's $sort order of their converted fields."""
        docs = [self.view.build(r) for r in rows]
        self._sort(docs)
        return docs

    @cached_property
    def _sort(self) -> Callable[[list[dict[str, Any]]], None]:
        return sorter(self.sort_fields)


@dataclass
class CollectionPlan:
    """The Transform for one collection: root row + its embedded rows -> one document."""

    spec: CollectionSpec
    root: TableView
    pk: list[str]
    id_converters: list[Converter]
    embeds: list[EmbedPlan]

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

    def doc_id(self, row: Row) -> Any:
        idx = self.root.index
        if len(self.pk) == 1:
            return self.id_converters[0](row[idx[self.pk[0]]])
        return {c: conv(row[idx[c]]) for c, conv in zip(self.pk, self.id_converters, strict=True)}

    def document(self, row: Row, embedded: dict[str, Any]) -> dict[str, Any]:
        try:
            doc: dict[str, Any] = self._fast_root(row)
        except Exception:  # the slow path names the column that failed
            doc = {"_id": self.doc_id(row)}
            doc.update(self.root.build(row))
        for e in self.embeds:
            val = embedded.get(e.name)
            if e.many:
                doc[e.name] = e.elements(val or ())
            else:
                doc[e.name] = e.view.build(val) if val is not None else None
        return doc

    def documents(
        self, rows: Iterable[Row], children: dict[str, list[Row]], on_error: Any = None
    ) -> list[dict[str, Any]]:
        """Build documents for a chunk; `children` holds each embed's rows for the whole chunk.

        A row that cannot be converted is passed to `on_error(row, exc)` (the dead-letter path)
        instead of failing the chunk; without a handler the error propagates.
        """
        groups: dict[str, dict[tuple[Any, ...], Any]] = {}
        for e in self.embeds:
            g: dict[tuple[Any, ...], Any] = {}
            for r in children.get(e.name, ()):
                key = e.view.values(r, e.child_columns)
                if e.many:
                    g.setdefault(key, []).append(r)
                else:
                    g[key] = r
            groups[e.name] = g
        docs = []
        for row in rows:
            embedded = {
                e.name: groups[e.name].get(self.root.values(row, e.root_columns))
                for e in self.embeds
            }
            try:
                docs.append(self.document(row, embedded))
            except ConversionError as exc:
                if on_error is None:
                    raise
                on_error(row, exc)
        return docs


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
    for ci, coll in enumerate(mapping.collections):
        key: tuple[str | int, ...] = ("collections", ci)
        if coll.from_ not in schema.tables:
            known = ", ".join(sorted(schema.tables)) or "(none)"
            raise SchemaError(
                f"{mapping.where(*key, 'from')}: table {coll.from_!r} does not exist "
                f"in database {schema.database!r} (tables: {known})"
            )
        table = schema.tables[coll.from_]
        if not table.primary_key:
            raise SchemaError(
                f"{mapping.where(*key, 'from')}: table {coll.from_!r} has no primary key",
                hint="backfill pages by primary key and CDC matches rows by it: add one "
                "(ALTER TABLE … ADD PRIMARY KEY) or leave the table out",
            )
        root_extra = set(table.primary_key)
        embeds = []
        for ei, emb in enumerate(coll.embed):
            ekey = (*key, "embed", ei)
            if emb.from_ not in schema.tables:
                raise SchemaError(
                    f"{mapping.where(*ekey, 'from')}: table {emb.from_!r} does not "
                    f"exist in database {schema.database!r}"
                )
            child = schema.tables[emb.from_]
            for ccol, rcol in emb.on.items():
                if not child.has_column(ccol):
                    raise SchemaError(
                        f"{mapping.where(*ekey, 'on', ccol)}: table {emb.from_!r} "
                        f"has no column {ccol!r}"
                    )
                if not table.has_column(rcol):
                    raise SchemaError(
                        f"{mapping.where(*ekey, 'on', ccol)}: root table "
                        f"{coll.from_!r} has no column {rcol!r}"
                    )
            for oi, ocol in enumerate(emb.order_by):
                if not child.has_column(ocol):
                    raise SchemaError(
                        f"{mapping.where(*ekey, 'order_by', oi)}: table "
                        f"{emb.from_!r} has no column {ocol!r}"
                    )
            if emb.many and not child.primary_key:
                raise SchemaError(
                    f"{mapping.where(*ekey, 'from')}: embedded table {emb.from_!r} "
                    "has no primary key; CDC matches array elements by it"
                )
            order = list(emb.order_by) + [c for c in child.primary_key if c not in emb.order_by]
            view = _view(
                mapping,
                schema,
                emb.from_,
                emb,
                ekey,
                [*emb.on.keys(), *order, *child.primary_key],
                omit_nulls=False,
            )
            if emb.many:
                for oi, ocol in enumerate(emb.order_by):
                    if view.field_for(ocol) is None and ocol not in emb.on:
                        raise SchemaError(
                            f"{mapping.where(*ekey, 'order_by', oi)}: column {ocol!r} is "
                            "excluded from the elements; CDC keeps the array in order by "
                            "sorting on the elements' own fields, so an order_by column "
                            "must stay in them"
                        )
                # Within one parent's array the `on` columns are constant; the rest of the
                # child's key tells elements apart.
                for c in [k for k in child.primary_key if k not in emb.on]:
                    if view.field_for(c) is None:
                        raise SchemaError(
                            f"{mapping.where(*ekey)}: the primary key column {c!r} of "
                            f"{emb.from_!r} must stay in the embedded elements "
                            "(CDC finds an element by it); do not exclude it"
                        )
            root_extra |= set(emb.on.values())
            embeds.append(
                EmbedPlan(
                    spec=emb,
                    view=view,
                    child_columns=list(emb.on.keys()),
                    root_columns=list(emb.on.values()),
                    order_by=order,
                )
            )
        root = _view(
            mapping, schema, coll.from_, coll, key, root_extra, omit_nulls=coll.nulls == "omit"
        )
        for e in embeds:
            if e.name in {f.path[0] for f in root.fields}:
                raise SchemaError(
                    f"{mapping.where(*key, 'embed')}: embed {e.name!r} has the same "
                    "name as a field of the collection"
                )
        zone = zone_for(mapping.source.timezone)
        id_conv = [default_converter(table.column(c), zone) for c in table.primary_key]
        plans.append(
            CollectionPlan(
                spec=coll,
                root=root,
                pk=list(table.primary_key),
                id_converters=id_conv,
                embeds=embeds,
            )
        )
    return Transform(mapping=mapping, schema=schema, collections=plans)
