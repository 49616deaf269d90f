"""Documents back to rows: the inverse of the Transform, for reverse sync (MongoDB -> MySQL).

For a collection's document it gives the root row, the rows of every array (the complete set of
child rows that belong to this parent) and, for a sub-document, the parent key it stands for.
Values come out as MySQL query parameters (the reverse applier writes them with
`time_zone = '+00:00'`). Columns the mapping leaves out are absent: MySQL keeps its own values.

Round trip, the property the unit tests check: for a row the Transform converts, converting
the inverse's values again gives the same document.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.errors import ConversionError
from migrator.model.schema import Column
from migrator.model.transform import CollectionPlan, EmbedPlan, TableView
from migrator.model.typerules import zone_for

Inverse = Callable[[Any], Any]
_MISSING = object()


@dataclass
class RowImage:
    table: str
    values: dict[str, Any]  # column -> MySQL parameter (mapped columns and keys only)
    # references only a missing copy could give (its row does not exist): MySQL keeps them
    dangling: set[str] = field(default_factory=set)


@dataclass
class ArrayRows:
    """One array of a document, at any depth: exactly the rows of `node`'s table that belong
    to one enclosing row (those whose columns equal `scope`)."""

    node: EmbedPlan
    scope: dict[str, Any]
    rows: list[RowImage]
    path: str  # where the array is, for messages ("items[2].tracks")


@dataclass
class Copy:
    """A read-only copy in the document (a sub-document of another table's row, merged
    fields, an array of values): its truth is its own table, which reverse sync never writes
    from here. `paths`: the document paths it occupies, dotted as MongoDB's update
    descriptions name them ("items.1.product", "tag_names")."""

    node: EmbedPlan
    paths: list[str]
    part: Any = None  # the document part holding its fields (merged: the enclosing one)
    key: dict[str, Any] = field(default_factory=dict)  # the copied row's `on` columns
    depth: int = 1  # 1: a top-level embed; 2: deeper
    where: str = ""  # the dotted path of `part` ("" for the document itself)

    def touched(self, changed: tuple[str, ...] | None) -> bool:
        """Whether a change may have written this copy: an insert or a replace (None), or an
        update whose description names a path inside it, it, or a part above it."""
        if changed is None:
            return True
        return any(
            c == p or c.startswith(p + ".") or p.startswith(c + ".")
            for c in changed
            for p in self.paths
        )


@dataclass
class DocumentRows:
    root: RowImage
    # top-level embed name -> the child rows of this parent (arrays), all of them
    children: dict[str, list[RowImage]] = field(default_factory=dict)
    # top-level embed name -> {child column: value}: which child rows belong to this parent
    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrays: list[ArrayRows] = field(default_factory=list)  # every array, parents first
    copies: list[Copy] = field(default_factory=list)


def _number(v: Any) -> Decimal:
    if isinstance(v, Decimal128):
        return v.to_decimal()
    if isinstance(v, bool):
        return Decimal(int(v))
    return Decimal(str(v)) if isinstance(v, float) else Decimal(v)


def _int(v: Any) -> int:
    n = _number(v)
    if n != n.to_integral_value():  # MySQL would round it: not what the document says
        raise ConversionError(f"expected an integer, got {v!r}")
    return int(n)


def _plain_json(v: Any) -> Any:
    """BSON values inside a JSON field, as json.dumps takes them."""
    if isinstance(v, dict):
        return {k: _plain_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain_json(x) for x in v]
    if isinstance(v, Decimal128):
        d = v.to_decimal()
        return int(d) if d == d.to_integral_value() else float(d)
    if isinstance(v, Int64):
        return int(v)
    return v


def _json_text(v: Any) -> str:
    return json.dumps(_plain_json(v), ensure_ascii=False, separators=(", ", ": "))


def _datetime_text(zone: tzinfo | None) -> Inverse:
    def inv(v: Any) -> str:
        if not isinstance(v, datetime):
            raise ConversionError(f"expected a date, got {type(v).__name__}")
        if zone is not None:  # documents hold UTC; the column holds the source's zone
            v = v.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)
        return v.isoformat(sep=" ", timespec="microseconds")

    return inv


def _date_text(v: Any) -> str:
    if isinstance(v, datetime | date):
        return v.strftime("%Y-%m-%d")
    raise ConversionError(f"expected a date, got {type(v).__name__}")


def _bytes(v: Any) -> bytes:
    if isinstance(v, Binary | bytes | bytearray):
        return bytes(v)
    if isinstance(v, str):
        return v.encode("utf-8")
    raise ConversionError(f"expected binary, got {type(v).__name__}")


def _text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, dict | list):  # no row of the column holds one
        raise ConversionError(
            f"expected text, got {'an object' if isinstance(v, dict) else 'an array'}"
        )
    if isinstance(v, Decimal128):
        return str(v.to_decimal())
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    return str(v)


def default_inverse(col: Column, zone: tzinfo | None = None) -> Inverse:
    """The inverse of `typerules.default_converter` for this column."""
    t = col.data_type
    if col.is_bool:
        return lambda v: 1 if v else 0
    if col.is_integer or t in ("bit", "year"):
        return _int
    if t in ("decimal", "numeric"):
        return lambda v: str(_number(v))
    if t in ("float", "double", "real"):
        return float
    if t == "datetime":
        return _datetime_text(zone)
    if t == "timestamp":
        return _datetime_text(None)  # written with time_zone = '+00:00'
    if t == "date":
        return _date_text
    if t == "time":
        return _text
    if t == "json":
        return _json_text
    if t == "set":
        return lambda v: ",".join(v) if isinstance(v, list) else _text(v)
    if col.is_binary:
        return _bytes
    return _text


def override_inverse(col: Column, type_name: str, zone: tzinfo | None = None) -> Inverse:
    """The inverse of `typerules.override_converter`."""
    if type_name == "auto":
        return default_inverse(col, zone)
    t = col.data_type
    if type_name == "string":
        if col.is_binary:
            return lambda v: bytes.fromhex(v) if isinstance(v, str) else _bytes(v)
        if col.is_integer or t in ("bit", "year"):
            return lambda v: int(Decimal(v))
        return _text
    if type_name in ("int", "double", "decimal", "bool"):
        if col.is_bool or col.is_integer or t in ("bit", "year"):
            return lambda v: int(_number(v))
        if t in ("float", "double", "real"):
            return lambda v: float(_number(v))
        return lambda v: str(_number(v))
    if type_name in ("datetime", "date"):
        if t == "date":
            return _date_text
        if t in ("datetime", "timestamp"):
            return _datetime_text(zone if t == "datetime" else None)
        return _text
    if type_name == "binary":
        return _bytes if col.is_binary else lambda v: _bytes(v).decode("utf-8")
    if type_name == "json":
        return _json_text
    return default_inverse(col, zone)


# What cannot be restored exactly; `plan` lists these before the switch.
def lossy(col: Column, type_name: str) -> str | None:
    t = col.data_type
    if type_name == "bool" and not col.is_bool:
        return f"{col.name}: `type: bool` keeps only zero / non-zero of {t.upper()}"
    if type_name in ("int",) and t in ("decimal", "numeric", "float", "double", "real"):
        return f"{col.name}: `type: int` drops the fraction of {t.upper()}"
    if type_name == "double" and t in ("decimal", "numeric"):
        return f"{col.name}: `type: double` rounds DECIMAL to 15-17 digits"
    if type_name == "date" and t in ("datetime", "timestamp"):
        return f"{col.name}: `type: date` drops the time of day"
    if type_name == "json" and t != "json":
        return f"{col.name}: `type: json` keeps the value, not the text's formatting"
    return None


def get_path(doc: Any, path: tuple[str, ...]) -> Any:
    """The value at a path, or a marker no value equals when it is absent."""
    return _get(doc, path)


def merged_names(e: EmbedPlan) -> list[str]:
    """The top-level names a merged row puts in the enclosing document or element."""
    names = {f.path[0] for f in e.view.fields}
    for sub in e.embeds:
        names |= set(merged_names(sub)) if sub.merge else {sub.name}
    return sorted(names)


def _get(doc: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(doc, dict) or part not in doc:
            return _MISSING
        doc = doc[part]
    return doc


class DocumentInverse:
    """The inverse of one collection's plan, compiled once: rows for the document's own
    fields and for every array at any depth; a sub-document or merged row only gives the
    enclosing row its reference columns (it is a copy); an array of values gives nothing."""

    def __init__(
        self, plan: CollectionPlan, timezone: str = "UTC", homes: frozenset[str] = frozenset()
    ) -> None:
        self.plan = plan
        zone = zone_for(timezone)
        t = plan.table
        self.id_inv = [default_inverse(t.column(c), zone) for c in plan.pk]
        self.root = _ViewInverse(plan.root, zone)
        self.views = {e.slot: _ViewInverse(e.view, zone) for e in plan.nodes()}
        # tables with a collection of their own: copies of them are the application's to
        # keep (it updates them with the row's document); others have no MongoDB home
        self.homes = homes

    def rows(self, doc: dict[str, Any], key: dict[str, Any] | None = None) -> DocumentRows:
        """`key`: the key of the row the document came from, when its `_id` keeps less."""
        plan = self.plan
        values = self.root.values(doc)
        ident = doc["_id"]
        if key is not None:
            values.update(key)
        elif len(plan.pk) == 1:
            values[plan.pk[0]] = self.id_inv[0](ident)
        else:
            for c, inv in zip(plan.pk, self.id_inv, strict=True):
                values[c] = inv(ident[c])
        out = DocumentRows(RowImage(plan.table.name, values))
        self._walk(plan.embeds, doc, values, "", out)
        for a in out.arrays:
            if a.node in plan.embeds:
                out.scopes[a.node.name] = a.scope
                out.children[a.node.name] = a.rows
        return out

    def _walk(
        self,
        embeds: list[EmbedPlan],
        part: dict[str, Any],
        values: dict[str, Any],
        path: str,
        out: DocumentRows,
        dotted: str = "",
        dangling: set[str] | None = None,
    ) -> None:
        """The arrays and copies under one document or element (`part`, whose row has
        `values`); a reference a copy stands for goes into `values`."""
        for e in embeds:
            here = f"{path}.{e.name}" if path else e.name
            if e.merge or not e.many:
                sub = part if e.merge else part.get(e.name)
                if not isinstance(sub, dict):
                    sub = None
                self._reference(e, sub, values, dangling)
                if e.simple or e.view.table.name in self.homes:
                    continue
                pairs = zip(e.child_columns, e.parent_columns, strict=True)
                key = {cc: values.get(pc) for cc, pc in pairs}
                depth = 2 if dotted else 1
                if e.merge:
                    base = f"{dotted}." if dotted else ""
                    paths = [base + n for n in merged_names(e)]
                    out.copies.append(Copy(e, paths, sub, key, depth, dotted))
                else:
                    at = f"{dotted}.{e.name}" if dotted else e.name
                    out.copies.append(Copy(e, [at], sub, key, depth, at))
                continue
            if e.values_path is not None:  # an array of values: a copy, nothing to write
                if e.view.table.name not in self.homes:
                    here_dotted = f"{dotted}.{e.name}" if dotted else e.name
                    depth = 2 if dotted else 1
                    out.copies.append(Copy(e, [here_dotted], part.get(e.name), {}, depth))
                continue
            scope = self._scope(e, values, path)
            view = self.views[e.slot]
            elements = part.get(e.name) or []
            rows = []
            for i, el in enumerate(elements):
                if not isinstance(el, dict):
                    raise ConversionError(f"{here}[{i}] is not a document: it names no row")
                rows.append(RowImage(e.view.table.name, {**view.values(el), **scope}))
            out.arrays.append(ArrayRows(e, scope, rows, here))
            for i, (el, row) in enumerate(zip(elements, rows, strict=True)):
                inner = f"{dotted}.{e.name}.{i}" if dotted else f"{e.name}.{i}"
                self._walk(e.embeds, el, row.values, f"{here}[{i}]", out, inner, row.dangling)

    def _reference(
        self,
        e: EmbedPlan,
        sub: dict[str, Any] | None,
        values: dict[str, Any],
        dangling: set[str] | None = None,
    ) -> None:
        """A copied row stands for the reference the enclosing row holds to it. In a nested
        tree a missing copy (null: the row it points at does not exist) says nothing about the
        reference, which MySQL keeps; a one-level sub-document's null clears it, as always."""
        view = self.views[e.slot]
        for cc, pc in zip(e.child_columns, e.parent_columns, strict=True):
            if pc in values:
                continue  # mapped in the enclosing row as well: that value wins
            f = e.view.field_for(cc)
            v = _MISSING if sub is None or f is None else _get(sub, f.path)
            if v is None or (sub is None and e.simple):
                if e.simple:
                    values[pc] = None
                elif dangling is not None:
                    dangling.add(pc)
            elif v is not _MISSING:
                values[pc] = view.inverse[cc](v)

    @staticmethod
    def _scope(e: EmbedPlan, enclosing: dict[str, Any], path: str) -> dict[str, Any]:
        missing = [pc for pc in e.parent_columns if pc not in enclosing]
        if missing:
            where = f"{path}.{e.name}" if path else e.name
            raise ConversionError(
                f"array {where!r}: the column(s) {', '.join(missing)} it joins on are not "
                "in the document, so its rows cannot be matched to their parent"
            )
        return {cc: enclosing[pc] for cc, pc in zip(e.child_columns, e.parent_columns, strict=True)}


class _ViewInverse:
    def __init__(self, view: TableView, zone: tzinfo | None) -> None:
        self.view = view
        self.inverse: dict[str, Inverse] = {}
        self.fields: list[tuple[str, tuple[str, ...], Inverse]] = []
        for f in view.fields:
            inv = override_inverse(view.table.column(f.column), f.type_name, zone)
            self.inverse[f.column] = inv
            self.fields.append((f.column, f.path, inv))

    def values(self, doc: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col, path, inv in self.fields:
            v = _get(doc, path)
            if v is _MISSING or v is None:
                out[col] = None  # omitted nulls come back as NULL
                continue
            try:
                out[col] = inv(v)
            except (ValueError, TypeError, ArithmeticError, ConversionError) as exc:
                raise ConversionError(
                    f"{self.view.table.name}.{col}: cannot write {v!r:.80} back: {exc}"
                ) from None
        return out
