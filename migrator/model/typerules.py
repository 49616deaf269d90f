"""Default type rules: one converter per column from what a SELECT returns to a BSON value.

The SELECT path reads with mysqlclient and no driver-side conversion: numbers, dates and binary
values arrive as bytes, text as str. Converting once, here, is both the fastest path and the
single place where the rules live (the README's type table mirrors this file):

integers -> Int64 (BIGINT UNSIGNED above 2^63-1 -> Decimal128); TINYINT(1), BIT(1) -> bool;
BIT(n) -> int; DECIMAL -> Decimal128; FLOAT/DOUBLE -> double; DATETIME/TIMESTAMP -> UTC datetime
(ms); DATE -> datetime at midnight UTC; TIME -> "HH:MM:SS[.fff]"; YEAR -> int; JSON -> embedded
value (integers beyond int64 kept as Decimal128); BLOB/BINARY/GEOMETRY -> binary; ENUM and text
-> string; SET -> array of strings; zero dates -> null; NULL -> null.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.errors import ConversionError
from migrator.model.schema import GEOMETRY_TYPES, Column, type_members

Converter = Callable[[Any], Any]
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)


def _text(v: Any) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes | bytearray) else str(v)


_U64 = (1 << 64) - 1


def _from_parts_public(high: int, low: int) -> Decimal128:
    return Decimal128((high, low))  # type: ignore[arg-type]  # documented (high, low) BID form


def _from_parts_direct(high: int, low: int) -> Decimal128:
    # Skips Decimal128.__init__'s type dispatch (a third of the decimal cost); checked below.
    d = object.__new__(Decimal128)
    d._Decimal128__high = high  # type: ignore[attr-defined]
    d._Decimal128__low = low  # type: ignore[attr-defined]
    return d


def _pick_from_parts() -> Callable[[int, int], Decimal128]:
    try:
        probe = Decimal128("-1.50")
        if _from_parts_direct(*_parts(probe)).bid == probe.bid:
            return _from_parts_direct
    except Exception:  # a future bson without these slots: use the public constructor
        pass
    return _from_parts_public


def _parts(d: Decimal128) -> tuple[int, int]:
    low, high = struct.unpack("<QQ", d.bid)
    return high, low


_from_parts = _pick_from_parts()


def to_decimal128(v: Any) -> Decimal128:
    """DECIMAL text -> Decimal128, keeping the scale ("1.50" stays 1.50).

    bson's Decimal128(str) goes through a decimal context and is the backfill's hottest call;
    for plain [-]digits[.digits] text of at most 34 digits the BID encoding is direct:
    coefficient in the low 113 bits, biased exponent above it, sign on top.
    """
    s = v.decode() if type(v) is bytes else _text(v)
    neg = s[:1] == "-"
    body = s[1:] if neg else s
    whole, _, frac = body.partition(".")
    digits = whole + frac
    if digits.isdigit() and len(digits.lstrip("0")) <= 34 and len(frac) <= 6176:
        coef = int(digits)
        high = (neg << 63) | ((6176 - len(frac)) << 49) | (coef >> 64)
        return _from_parts(high, coef & _U64)
    try:
        return Decimal128(s)
    except (InvalidOperation, ArithmeticError):
        raise ConversionError(
            f"{s} has more than the 34 significant digits Decimal128 holds",
            hint="map the field with type: string to keep every digit",
        ) from None


def _int(v: Any) -> Int64:
    # Always int64, as the rules say, not int32-when-it-fits: one width per column.
    return Int64(v)


def _big_unsigned(v: Any) -> Int64 | Decimal128:
    n = int(v)
    return Int64(n) if n <= INT64_MAX else Decimal128(str(n))


def _bool_int(v: Any) -> bool:
    return int(v) != 0


def _bit(v: Any) -> Int64:
    if isinstance(v, bytes | bytearray):
        return Int64(int.from_bytes(v, "big"))
    return Int64(v)


def _bit_bool(v: Any) -> bool:
    return _bit(v) != 0


def _double(v: Any) -> float:
    return float(v)


def _set(v: Any) -> list[str]:
    s = _text(v)
    return s.split(",") if s else []


@functools.lru_cache(maxsize=1024)
def _set_rank(col: Column) -> Callable[[str], tuple[int, str]]:
    members = col.members or type_members(col.column_type)
    order = {m: i for i, m in enumerate(members)}
    folded = {m.casefold(): i for i, m in reversed(list(enumerate(members)))}
    return lambda m: (order.get(m, folded.get(m.casefold(), len(order))), m)


def set_members(col: Column, members: Iterable[str]) -> list[str]:
    """A SET value's members as a SELECT lists them: in the column's definition order (exact
    case first, then a case-insensitive match), whatever order a decoder or a writer used."""
    return sorted(members, key=_set_rank(col))


def _set_converter(col: Column) -> Converter:
    return lambda v: set_members(col, _set(v))


def _binary(v: Any) -> bytes:
    return bytes(v) if not isinstance(v, str) else v.encode("utf-8")


def _is_zero_date(s: str) -> bool:
    return s.startswith("0000") or s[5:7] == "00" or s[8:10] == "00"


def _make_datetime(zone: tzinfo | None, fsp: int = 6) -> Converter:
    parse = datetime.fromisoformat

    def conv(v: Any) -> datetime | None:
        s = v.decode() if v.__class__ is bytes else _text(v)
        try:
            dt = parse(s)
        except ValueError:
            if _is_zero_date(s):  # 0000-00-00 and zero-in-date values: null
                return None
            raise
        if fsp > 3:  # BSON keeps milliseconds
            dt = dt.replace(microsecond=dt.microsecond // 1000 * 1000)
        if zone is not None:
            dt = dt.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
        return dt

    return conv


def _date(v: Any) -> datetime | None:
    if isinstance(v, date) and not isinstance(v, datetime):
        return datetime(v.year, v.month, v.day)
    s = _text(v)
    if _is_zero_date(s):
        return None
    return datetime(int(s[0:4]), int(s[5:7]), int(s[8:10]))


def format_time(v: Any, fsp: int) -> str:
    """TIME as text: [-]HH:MM:SS, plus .fff when the column has fractional seconds."""
    if isinstance(v, timedelta):
        neg = v < timedelta(0)
        us = abs(v) // timedelta(microseconds=1)
        secs, us = divmod(us, 1_000_000)
        h, rem = divmod(secs, 3600)
        m, sec = divmod(rem, 60)
        s = f"{'-' if neg else ''}{h:02d}:{m:02d}:{sec:02d}.{us:06d}"
    else:
        s = _text(v)
    main, _, frac = s.partition(".")
    if fsp <= 0:
        return main
    return f"{main}.{(frac + '000')[:3]}"


def _json_int(s: str) -> int | Int64 | Decimal128:
    n = int(s)
    if INT64_MIN <= n <= INT64_MAX:
        return n
    return Decimal128(s)  # keep big integers exactly instead of overflowing or rounding


def parse_json(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        v = v.decode("utf-8")
    try:
        return json.loads(v, parse_int=_json_int)
    except ValueError as exc:
        raise ConversionError(f"not valid JSON: {exc}") from None


def as_string(v: Any) -> str:
    return _text(v)


def _identity(v: Any) -> Any:
    return v


def zone_for(name: str) -> tzinfo | None:
    if name.upper() in ("UTC", "+00:00", "Z"):
        return None
    try:
        return ZoneInfo(name)
    except Exception:
        raise ConversionError(f"unknown time zone {name!r}", hint="use an IANA name") from None


def default_converter(col: Column, zone: tzinfo | None = None) -> Converter:
    """The converter the default type rules give this column."""
    t = col.data_type
    if col.is_bool:
        return _bit_bool if t == "bit" else _bool_int
    if col.is_integer:
        return _big_unsigned if (t == "bigint" and col.unsigned) else _int
    if t == "bit":
        return _bit
    if t in ("decimal", "numeric"):
        return to_decimal128
    if t in ("float", "double", "real"):
        return _double
    if t == "datetime":
        return _make_datetime(zone, col.fsp if col.fsp is not None else 6)
    if t == "timestamp":
        # read with time_zone='+00:00': already UTC
        return _make_datetime(None, col.fsp if col.fsp is not None else 6)
    if t == "date":
        return _date
    if t == "time":
        fsp = col.fsp or 0
        return lambda v: format_time(v, fsp)
    if t == "year":
        return _int
    if t == "json":
        return parse_json
    if t == "set":
        return _set_converter(col)
    if col.is_binary:
        return _binary
    return as_string


def override_converter(col: Column, type_name: str, zone: tzinfo | None = None) -> Converter:
    """A field's explicit `type:` wins over the default rule."""
    if type_name == "auto":
        return default_converter(col, zone)
    base = default_converter(col, zone)
    if type_name == "string":
        if col.data_type == "set":
            return lambda v: ",".join(set_members(col, _set(v)))
        if col.is_binary:
            return lambda v: bytes(v).hex() if not isinstance(v, str) else v
        if col.data_type in ("datetime", "timestamp", "date", "time", "json"):
            return as_string
        return as_string
    if type_name == "int":
        return _bit if col.data_type == "bit" else lambda v: Int64(Decimal(_text(v)))
    if type_name == "double":
        return _double if col.data_type != "bit" else lambda v: float(_bit(v))
    if type_name == "decimal":
        return to_decimal128
    if type_name == "bool":
        return _bit_bool if col.data_type == "bit" else lambda v: Decimal(_text(v)) != 0
    if type_name == "datetime":
        return _date if col.data_type == "date" else _make_datetime(zone)
    if type_name == "date":
        return _date
    if type_name == "binary":
        return _binary
    if type_name == "json":
        return parse_json
    return base


def param_value(col: Column, v: Any) -> Any:
    """A raw SELECT value as a query parameter (for keyset bounds and IN lists)."""
    if v is None or isinstance(v, str | int):
        return v
    if col.is_integer:
        return int(v)
    if col.is_binary or col.data_type == "bit":
        return bytes(v)
    return _text(v)


def loss_notes(col: Column) -> list[str]:
    """What the default rule loses for this column; plan and init show these."""
    t, notes = col.data_type, []
    if t in ("decimal", "numeric") and (col.precision or 0) > 34:
        notes.append(
            f"DECIMAL({col.precision},{col.scale}) can exceed Decimal128's 34 digits: "
            "values that do go to the dead-letter collection (type: string keeps them)"
        )
    if t in ("datetime", "timestamp") and (col.fsp or 0) > 3:
        notes.append(f"{t.upper()}({col.fsp}) loses microseconds: BSON dates keep milliseconds")
    if t == "time" and (col.fsp or 0) > 3:
        notes.append(f"TIME({col.fsp}) is kept as text with milliseconds")
    if t == "bigint" and col.unsigned:
        notes.append("BIGINT UNSIGNED above 2^63-1 becomes Decimal128 (other values int64)")
    if t == "float":
        notes.append("FLOAT is single precision: stored as the double MySQL prints")
    if t in GEOMETRY_TYPES:
        notes.append(f"{t.upper()} is copied as WKB binary, not GeoJSON")
    if t == "year" and "(2)" in col.column_type:
        notes.append("YEAR(2) is ambiguous")
    return notes


@dataclass(frozen=True)
class KeyRange:
    """A key column's values a converted key value stands for, when the converter keeps less
    than the column holds (a DATETIME(6)'s microseconds, a FLOAT's single precision): the
    rows between `lo` and `hi` (as the column takes them in a query) whose own conversion
    gives `value`."""

    lo: Any
    hi: Any
    value: Any


# how far back a time zone's earlier offset is looked for: a gap (a DST change, a zone moving
# its standard time, Samoa skipping a day) lies between a key's instant and at most this much
# before it; each candidate is checked, so looking further than needed finds nothing wrong
_LOOKBACKS = tuple(timedelta(minutes=m) for m in (1, 15, 30, 60, 120, 180, 360, 720, 1500, 2940))


def _skipped_to(v: datetime, zone: tzinfo) -> list[datetime]:
    """The wall-clock times a zone skipped (a gap) that convert to the UTC time `v` (naive)
    as `default_converter` converts them: with the offset before the change."""
    at = v.replace(tzinfo=UTC)
    now = at.astimezone(zone).utcoffset()
    out = []
    for o in {(at - d).astimezone(zone).utcoffset() for d in _LOOKBACKS}:
        if o is None or now is None or o >= now:
            continue
        local = v + o
        if local.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None) == v:
            out.append(local)
    return out


ZERO_DATETIME = "0000-00-00 00:00:00"  # what a null `_id` of a date key stands for


def key_search(col: Column, zone: tzinfo | None = None) -> Converter:
    """How a converted key value finds its source row again: the value as the column takes it
    in a query, or a KeyRange. The inverse of `default_converter` for key columns."""
    t = col.data_type
    if t in ("datetime", "timestamp"):
        local = zone if t == "datetime" else None  # TIMESTAMP is read in UTC
        wide = (col.fsp if col.fsp is not None else 6) > 3

        def when(v: Any) -> Any:
            if v is None:  # a key is never NULL: a zero date converts to null
                return ZERO_DATETIME
            if not isinstance(v, datetime):
                return source_param(v)
            first = last = v
            if local is not None:  # documents hold UTC; the column holds the source's zone
                first = last = v.replace(tzinfo=UTC).astimezone(local).replace(tzinfo=None)
                for earlier in _skipped_to(v, local):  # a skipped local time converts here too
                    first = min(first, earlier)
            if wide:
                last += timedelta(microseconds=999)
            if first == last:
                return first.isoformat(sep=" ", timespec="microseconds")
            text = [t.isoformat(sep=" ", timespec="microseconds") for t in (first, last)]
            return KeyRange(text[0], text[1], v)

        return when
    if t == "date":
        return lambda v: ZERO_DATETIME if v is None else source_param(v)
    if t == "time" and (col.fsp or 0) > 3:  # kept as text with milliseconds

        def clock(v: Any) -> Any:
            if not isinstance(v, str) or "." not in v:
                return source_param(v)
            ends = (v + "000", v + "999")  # a negative time's larger digits are earlier
            return KeyRange(*(ends[::-1] if v.startswith("-") else ends), v)

        return clock
    if t == "float":

        def near(v: Any) -> Any:
            if not isinstance(v, float) or v != v or v in (float("inf"), float("-inf")):
                return source_param(v)
            # MariaDB prints a FLOAT with 6 significant digits (FLT_DIG): the printed value
            # is within half a unit of its 6th digit of the stored one, less than 1e-5 of it
            # (and wider than single precision's own rounding); the rows found are filtered
            # by their own key
            d = abs(v) * 1e-5 + 1e-40
            return KeyRange(v - d, v + d, v)

        return near
    return source_param


def source_param(v: Any) -> Any:
    """A BSON key value as the source would take it in a query (and as converters accept)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):  # Int64 too
        return int(v)
    if isinstance(v, Decimal128):
        return str(v.to_decimal())
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, bytes):
        return bytes(v)
    return v
