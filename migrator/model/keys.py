"""One hashable form for document `_id`s (and any BSON value), used wherever ids are grouped,
de-duplicated or looked up in a dict: the applier, verify, the state store.

A `_id` can be an int, a Decimal128 (BIGINT UNSIGNED above 2^63-1), a string, bytes, a
datetime, or a sub-document (composite primary key), read back as a dict, a SON or a
RawBSONDocument. Several of those are unhashable, and equal ids can arrive in different Python
types (int vs Int64 vs Decimal128). `id_key` maps equal ids to equal keys:
- numbers compare by value, as MongoDB's `_id` index does (5, Int64(5), Decimal128("5"));
- booleans stay apart from numbers (BSON true is not 1);
- a sub-document keeps its field order ({a, b} and {b, a} are different `_id`s in MongoDB).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128
from bson.raw_bson import RawBSONDocument


def id_key(v: Any) -> Hashable:
    if isinstance(v, bool):
        return ("bool", v)
    if isinstance(v, Decimal128):
        return _number(v.to_decimal())
    if isinstance(v, Decimal):
        return _number(v)
    if isinstance(v, RawBSONDocument | Mapping):
        return ("doc", tuple((k, id_key(x)) for k, x in v.items()))
    if isinstance(v, list | tuple):
        return ("array", tuple(id_key(x) for x in v))
    if isinstance(v, bytes):
        return ("bytes", bytes(v))  # Binary subtype 0 and bytes are the same BSON value
    return v


def _number(d: Decimal) -> Hashable:
    # Decimal(5) == 5 and hash(Decimal(5)) == hash(5): integral decimals meet ints
    if d.is_nan():
        return ("nan",)
    return int(d) if d == d.to_integral_value() else d


class KeyedIds:
    """Distinct ids in first-seen order, each kept as given (for queries) under its key."""

    def __init__(self) -> None:
        self._by_key: dict[Hashable, Any] = {}

    def add(self, v: Any) -> Hashable:
        k = id_key(v)
        self._by_key.setdefault(k, v)
        return k

    def __contains__(self, v: Any) -> bool:
        return id_key(v) in self._by_key

    def __len__(self) -> int:
        return len(self._by_key)

    def values(self) -> list[Any]:
        return list(self._by_key.values())


def dense(lo: int, hi: int, count: int) -> bool:
    """Whether `count` distinct integer keys between `lo` and `hi` are dense enough to read as
    one range and filter (the range holds little else), rather than list them one by one."""
    return hi - lo + 1 <= 4 * count + 100
