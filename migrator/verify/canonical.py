"""Canonical encoding and hashing of documents, and field-level differences.

Equal documents encode equally whatever their key order; types are part of the encoding, so
"1" is not 1, 1.5 (double) is not Decimal128("1.5"), and Decimal128("1.5") is not
Decimal128("1.50"). Integers compare by value (int32 and int64 alike); dates to the millisecond.
Arrays keep their order (embedded arrays are built in the embed's order).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import xxhash
from bson import ObjectId
from bson.decimal128 import Decimal128
from bson.int64 import Int64


def _enc(v: Any, out: list[str]) -> None:
    if v is None:
        out.append("n")
    elif isinstance(v, bool):
        out.append("b1" if v else "b0")
    elif isinstance(v, int):  # int, Int64
        out.append(f"i{int(v)}")
    elif isinstance(v, float):
        out.append(f"d{v!r}")
    elif isinstance(v, Decimal128):
        out.append(f"m{v}")
    elif isinstance(v, str):
        out.append(f"s{len(v)}:{v}")
    elif isinstance(v, bytes):
        out.append(f"x{v.hex()}")
    elif isinstance(v, datetime):
        ms = v.replace(tzinfo=None)
        out.append(f"t{ms.isoformat(timespec='milliseconds')}")
    elif isinstance(v, dict):
        out.append("{")
        for k in sorted(v):
            out.append(f"k{len(k)}:{k}")
            _enc(v[k], out)
        out.append("}")
    elif isinstance(v, list | tuple):
        out.append("[")
        for x in v:
            _enc(x, out)
        out.append("]")
    elif isinstance(v, ObjectId):
        out.append(f"o{v}")
    else:
        out.append(f"?{type(v).__name__}:{v!r}")


def encode(doc: Any) -> str:
    out: list[str] = []
    _enc(doc, out)
    return "".join(out)


def doc_hash(doc: Any) -> int:
    return xxhash.xxh64_intdigest(encode(doc).encode("utf-8", "surrogatepass"))


def type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, Int64 | int):
        return "int"
    return {
        float: "double",
        Decimal128: "decimal",
        str: "string",
        bytes: "binary",
        datetime: "date",
        dict: "object",
        list: "array",
    }.get(type(v), type(v).__name__)


_MISSING = object()
# Values of fields named like credentials are never printed in a report.
_SECRET = re.compile(r"pass(word)?|secret|token|api_?key|credential", re.I)


def field_diffs(
    expected: Any, actual: Any, path: str = "", limit: int = 20
) -> list[dict[str, Any]]:
    """Paths where two documents differ, with both values (bounded in number and size)."""
    out: list[dict[str, Any]] = []

    def walk(e: Any, a: Any, p: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(e, dict) and isinstance(a, dict):
            for k in sorted(set(e) | set(a)):
                walk(e.get(k, _MISSING), a.get(k, _MISSING), f"{p}.{k}" if p else k)
            return
        if isinstance(e, list) and isinstance(a, list) and len(e) == len(a):
            for i, (x, y) in enumerate(zip(e, a, strict=True)):
                walk(x, y, f"{p}[{i}]")
            return
        if e is _MISSING or a is _MISSING or encode(e) != encode(a):
            secret = _SECRET.search(p.rsplit(".", 1)[-1]) is not None
            out.append(
                {
                    "path": p or "(document)",
                    "expected": "(secret, not shown)" if secret else _show(e),
                    "actual": "(secret, not shown)" if secret else _show(a),
                }
            )

    walk(expected, actual, path)
    return out


def _mask(v: Any) -> Any:
    """Values under credential-like keys, at any depth, replaced."""
    if isinstance(v, dict):
        return {
            k: "(secret, not shown)" if _SECRET.search(str(k)) else _mask(x) for k, x in v.items()
        }
    if isinstance(v, list):
        return [_mask(x) for x in v]
    return v


def _show(v: Any, limit: int = 200) -> Any:
    if v is _MISSING:
        return "(missing)"
    v = _mask(v)
    text = f"{type_name(v)} {v!r}"
    if isinstance(v, list):
        text = f"array of {len(v)}: {v!r}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
