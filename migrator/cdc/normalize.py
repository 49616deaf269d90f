"""Binlog values -> the values a SELECT returns, so both paths feed the Transform the same.

python-mysql-replication decodes differently from the server's text protocol (measured, see
STACK.md): SET as a Python set (empty SET as None), BIT as a bit string, FLOAT as the float32
value, zero DATE/DATETIME as None, zero TIMESTAMP as 1970-01-01, YEAR 0 as 1900, BINARY(n)
without its trailing zero bytes, an empty BLOB as ''. One normaliser per column fixes each.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from migrator.model.schema import Column, Table
from migrator.model.typerules import set_members

Normaliser = Callable[[Any, str], Any]  # (value, none_source) -> SELECT-like value
_EPOCH = datetime(1970, 1, 1)


def float32_text(v: float) -> float:
    """What the server prints for a FLOAT: its value to 6 significant digits (FLT_DIG; 1234577
    is printed 1.23458e6, 16777216 1.67772e7), the value the SELECT path converts. Measured
    on MariaDB 10.11 over 3,000 values, ties and float32's extremes included."""
    return float(f"{v:.6g}")


def fix_negative_time(v: timedelta) -> timedelta:
    """python-mysql-replication decodes a negative TIME with a fraction as -(int + 1 - frac)
    (-01:02:03.456 arrives as -01:02:03.544): undo that."""
    if v >= timedelta(0):
        return v
    us = -(v // timedelta(microseconds=1))
    whole, frac = divmod(us, 1_000_000)
    if not frac:
        return v
    return -timedelta(microseconds=whole * 1_000_000 + (1_000_000 - frac))


def set_text(col: Column, members: Iterable[str]) -> str:
    """A SET value as a SELECT gives it (see typerules.set_members)."""
    return ",".join(set_members(col, members))


def normaliser(col: Column) -> Normaliser:
    t = col.data_type
    if t == "set":

        def n_set(v: Any, src: str) -> Any:
            if v is None:
                return "" if src == "empty set" else None
            return set_text(col, v)  # the binlog decoder hands a Python set

        return n_set
    if t == "bit":
        return lambda v, src: None if v is None else (int(v, 2) if isinstance(v, str) else v)
    if t == "float":
        return lambda v, src: None if v is None else float32_text(v)
    if t in ("decimal", "numeric"):
        return lambda v, src: (
            None if v is None else (format(v, "f") if isinstance(v, Decimal) else v)
        )
    if t in ("date", "datetime"):
        # zero dates arrive as None with a reason; the SELECT path turns them into null too
        return lambda v, src: v
    if t == "timestamp":
        return lambda v, src: None if v is None else ("0000-00-00 00:00:00" if v == _EPOCH else v)
    if t == "time" and (col.fsp or 0) > 0:
        return lambda v, src: None if v is None else fix_negative_time(v)
    if t == "year":
        return lambda v, src: None if v is None else (0 if v == 1900 else v)
    if t == "binary":
        width = col.display_width or 0

        def n_binary(v: Any, src: str) -> Any:
            if v is None:
                return None
            b = v.encode("latin-1") if isinstance(v, str) else bytes(v)
            return b.ljust(width, b"\0")

        return n_binary
    if col.is_binary:
        return lambda v, src: (
            None if v is None else (v.encode("latin-1") if isinstance(v, str) else bytes(v))
        )
    if t == "json":
        return lambda v, src: (
            None if v is None else (v if isinstance(v, str | bytes) else json.dumps(_jsonable(v)))
        )
    return lambda v, src: v


def _jsonable(v: Any) -> Any:
    # MySQL's binary JSON decodes with bytes keys and strings.
    if isinstance(v, dict):
        return {(k.decode() if isinstance(k, bytes) else k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v


class RowNormaliser:
    """Normalises whole binlog rows of one table."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.columns = {c.name: normaliser(c) for c in table.columns}

    def __call__(self, values: dict[str, Any], none_sources: dict[str, str]) -> dict[str, Any]:
        out = {}
        for name, v in values.items():
            fn = self.columns.get(name)
            try:
                out[name] = fn(v, none_sources.get(name, "")) if fn else v
            except Exception:  # leave it as decoded: the Transform then names what is wrong
                out[name] = v
        return out
