"""MongoDB's sort order for document values (as `$push ... $sort` orders array elements).

An embedded array is kept in its embed's order by CDC with `$push: {$each, $sort}`, so the
server sorts the *converted* values. Every array the tool builds itself (backfill, verify's
expected documents, CDC's rebuilds) is sorted with this key so that it equals what `$sort`
keeps, whatever type the mapping gave the order_by columns.

The order is MongoDB's comparison order: null (and a missing field) < numbers (by value,
across int/long/double/decimal; NaN lowest) < strings (by UTF-8 bytes) < objects < arrays
< binary (by length, then subtype, then bytes) < ObjectId < booleans < dates.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson import Binary, Decimal128, Int64, ObjectId

_MISSING = object()


def sort_key(value: Any) -> tuple[Any, ...]:
    """A Python key that orders values as MongoDB's $sort (ascending) does."""
    if value is None or value is _MISSING:
        return (1,)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, int | Int64 | float | Decimal | Decimal128):
        n = value.to_decimal() if isinstance(value, Decimal128) else value
        if (isinstance(n, float) and math.isnan(n)) or (isinstance(n, Decimal) and n.is_nan()):
            return (2, 0)
        return (2, 1, n)
    if isinstance(value, str):
        return (3, value.encode("utf-8", "surrogatepass"))
    if isinstance(value, dict):
        return (4, tuple((_type_rank(v), k.encode(), sort_key(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (5, tuple(sort_key(v) for v in value))
    if isinstance(value, bytes | bytearray):
        subtype = value.subtype if isinstance(value, Binary) else 0
        return (6, len(value), subtype, bytes(value))
    if isinstance(value, ObjectId):
        return (7, value.binary)
    if isinstance(value, datetime):
        return (9, value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value)
    return (10, repr(value))


def _type_rank(value: Any) -> int:
    return int(sort_key(value)[0])


def _get(doc: dict[str, Any], path: Sequence[str]) -> Any:
    cur: Any = doc
    for part in path:
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


# Types whose Python order is $sort's order among themselves: integers by value, text by code
# point (the order of its UTF-8 bytes). bool is not among them (an int subclass, ranked apart).
_PLAIN = {int: 0, Int64: 0, str: 1}


def _general(docs: list[dict[str, Any]], paths: Sequence[Sequence[str]]) -> None:
    docs.sort(key=lambda d: tuple(sort_key(_get(d, p)) for p in paths))


def _sorted_plain(vals: list[Any]) -> bool | None:
    """Whether plain values (one kind, see _PLAIN) are already in order; None if they are not
    all of one plain kind."""
    kind = _PLAIN.get(type(vals[0]))
    if kind is None:
        return None
    ordered = True
    prev = vals[0]
    for v in vals[1:]:
        if _PLAIN.get(type(v)) != kind:
            return None
        if v < prev:
            ordered = False
        prev = v
    return ordered


def sorter(paths: Sequence[Sequence[str]]) -> Callable[[list[dict[str, Any]]], None]:
    """`sort_documents` for fixed paths, made once per array (the backfill and verify sort
    every document's arrays): arrays read in order of plain values are checked, not sorted."""
    paths = [tuple(p) for p in paths]
    if not paths:
        return lambda docs: None
    if len(paths) == 1 and len(paths[0]) == 1:
        field = paths[0][0]

        def one(docs: list[dict[str, Any]]) -> None:
            if len(docs) < 2:
                return
            vals = [d.get(field, _MISSING) for d in docs]
            ordered = _sorted_plain(vals)
            if ordered is None:
                _general(docs, paths)
            elif not ordered:
                order = sorted(range(len(docs)), key=vals.__getitem__)
                docs[:] = [docs[i] for i in order]

        return one

    def many(docs: list[dict[str, Any]]) -> None:
        if len(docs) < 2:
            return
        cols = []
        for p in paths:
            vals = [_get(d, p) for d in docs]
            if _sorted_plain(vals) is None:
                _general(docs, paths)
                return
            cols.append(vals)
        keys = list(zip(*cols, strict=True))
        if any(b < a for a, b in itertools.pairwise(keys)):
            order = sorted(range(len(docs)), key=keys.__getitem__)
            docs[:] = [docs[i] for i in order]

    return many


def sort_documents(docs: list[dict[str, Any]], paths: Sequence[Sequence[str]]) -> None:
    """Sort `docs` in place as `$push: {$each: [...], $sort: {path1: 1, ...}}` does: each
    path's whole value is compared (an array element by element, above null). A query's
    `find().sort()` differs there (an array sorts by its least element); CDC uses $push."""
    sorter(paths)(docs)
