"""Debezium MySQL-connector records (Kafka JSON, with or without schemas) -> ChangeEvents.

Values are decoded to what a SELECT returns, so the same Transform builds the documents:
DECIMAL from precise bytes (scale from the schema), string or double; the three time modes
(adaptive_time_microseconds, connect, isostring); binary as base64 or hex. Schemaless precise
decimals carry no scale and are refused rather than guessed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from migrator.cdc.normalize import float32_text, set_text
from migrator.errors import ConfigError, ConversionError
from migrator.model.events import ChangeEvent, Op, Position
from migrator.model.schema import Column, Schema

TimeMode = Literal["adaptive_time_microseconds", "adaptive", "connect", "isostring"]
DecimalMode = Literal["precise", "string", "double"]
BinaryMode = Literal["bytes", "base64", "base64-url-safe", "hex"]
_EPOCH = datetime(1970, 1, 1)
_OPS: dict[str, Op] = {"c": "insert", "r": "insert", "u": "update", "d": "delete"}


@dataclass
class DebeziumSettings:
    """The connector's handling modes; only needed for records without schemas."""

    time_precision_mode: TimeMode = "adaptive_time_microseconds"
    decimal_handling_mode: DecimalMode = "precise"
    binary_handling_mode: BinaryMode = "bytes"


@dataclass
class Record:
    topic: str
    key: Any
    value: Any
    partition: int = 0
    offset: int = 0


def _payload(v: Any) -> tuple[Any, dict[str, Any] | None]:
    """(payload, connect schema or None) of a JSON-converter message."""
    if isinstance(v, dict) and set(v) == {"schema", "payload"}:
        return v["payload"], v["schema"]
    return v, None


def _field_schemas(schema: dict[str, Any] | None, which: str) -> dict[str, dict[str, Any]]:
    if not schema:
        return {}
    for f in schema.get("fields", []):
        if f.get("field") == which:
            return {x["field"]: x for x in f.get("fields", [])}
    return {}


class DebeziumDecoder:
    def __init__(self, schema: Schema, settings: DebeziumSettings | None = None) -> None:
        self.schema = schema
        self.settings = settings or DebeziumSettings()

    def decode(self, rec: Record) -> ChangeEvent | None:
        """A ChangeEvent, or None for tombstones, schema changes and other tables."""
        if rec.value is None:
            return None  # tombstone: the delete before it did the work
        payload, cschema = _payload(rec.value)
        if not isinstance(payload, dict) or "op" not in payload:
            return None  # schema-change topic, heartbeats, transaction metadata
        src = payload.get("source") or {}
        table = src.get("table") or rec.topic.rsplit(".", 1)[-1]
        if src.get("db") not in (None, self.schema.database) or table not in self.schema.tables:
            return None
        op = _OPS.get(payload["op"])
        if op is None:
            return None
        ts = src.get("ts_ms") or payload.get("ts_ms")
        when = datetime.fromtimestamp(ts / 1000, UTC).replace(tzinfo=None) if ts else None
        before = self._row(table, payload.get("before"), _field_schemas(cschema, "before"))
        after = self._row(table, payload.get("after"), _field_schemas(cschema, "after"))
        return ChangeEvent(
            table=table,
            op=op,
            before=before,
            after=after,
            commit_time=when,
            origin=Position(src["file"], int(src["pos"])) if src.get("file") else None,
            origin_server=int(src["server_id"]) if src.get("server_id") is not None else None,
        )

    def _row(
        self, table: str, row: dict[str, Any] | None, fschemas: dict[str, dict[str, Any]]
    ) -> dict[str, Any] | None:
        if row is None:
            return None
        t = self.schema.tables[table]
        out = {}
        for name, v in row.items():
            if not t.has_column(name):
                out[name] = v
                continue
            try:
                out[name] = self._value(t.column(name), v, fschemas.get(name))
            except (ValueError, TypeError, ArithmeticError) as exc:
                raise ConversionError(
                    f"{table}.{name}: cannot decode Debezium value {v!r:.60}: {exc}"
                ) from None
        return out

    # -- one value ---------------------------------------------------------------------------
    def _value(self, col: Column, v: Any, fs: dict[str, Any] | None) -> Any:
        if v is None:
            return None
        name = (fs or {}).get("name", "")
        t = col.data_type
        if name in (_CONNECT_DECIMAL, _VARIABLE_DECIMAL):
            # by the value's own schema, whatever the column: bigint.unsigned.handling.mode=
            # precise sends BIGINT UNSIGNED as a Connect Decimal too
            return _as_column(col, _exact_decimal(v, fs or {}))
        if col.is_integer:
            n = int(v)
            if col.unsigned and t == "bigint" and n < 0:
                n += 1 << 64  # long mode wraps values above 2^63-1: the column says unsigned
            return n
        if t in ("decimal", "numeric"):
            return self._decimal(col, v, fs)
        if t in ("datetime", "timestamp", "date", "time"):
            return self._temporal(col, v, name)
        if t == "float":
            return float32_text(float(v))
        if t == "double":
            return float(v)
        if t == "bit":
            if isinstance(v, bool):
                return int(v)
            raw = self._bytes(v, fs)
            return int.from_bytes(raw, "little")  # Debezium sends BIT(n) little-endian
        if col.is_binary:
            return self._bytes(v, fs)
        if t == "json" and not isinstance(v, str):
            return json.dumps(v)
        if t == "set":
            return set_text(col, v.split(",") if isinstance(v, str) else v) if v else ""
        return v

    def _decimal(self, col: Column, v: Any, fs: dict[str, Any] | None) -> str:
        if isinstance(v, int | float):
            # double mode: as precise as a double; show it at the column's scale
            return format(
                Decimal(repr(float(v))).quantize(Decimal(1).scaleb(-(col.scale or 0))), "f"
            )
        if isinstance(v, str):
            try:
                Decimal(v)
                return v  # string mode
            except ArithmeticError:
                pass
            raise ConfigError(
                f"column {col.name}: a DECIMAL arrived as {v!r} without a schema: with "
                "decimal.handling.mode=precise and schemas disabled the scale is not in the "
                "message, so the value cannot be read safely",
                hint="set decimal.handling.mode=string on the connector, or enable schemas in "
                "the JSON converter (value.converter.schemas.enable=true)",
            )
        raise ValueError(f"unexpected DECIMAL value {v!r}")

    def _bytes(self, v: Any, fs: dict[str, Any] | None) -> bytes:
        if isinstance(v, bytes):
            return v
        mode = self.settings.binary_handling_mode
        if fs is not None and fs.get("type") == "bytes":
            mode = "bytes" if mode == "hex" else mode
        if mode == "hex":
            return bytes.fromhex(v)
        if mode == "base64-url-safe":
            return base64.urlsafe_b64decode(v)
        return base64.b64decode(v)

    def _temporal(self, col: Column, v: Any, name: str) -> Any:
        t = col.data_type
        fsp = col.fsp or 0
        mode = self.settings.time_precision_mode
        if isinstance(v, str):
            return _iso(t, v)
        if not name:  # no schema: the connector's mode and the column say what the number is
            if t == "date":
                name = "io.debezium.time.Date"
            elif t == "time":
                name = (
                    "io.debezium.time.MicroTime"
                    if mode.startswith("adaptive")
                    else "org.apache.kafka.connect.data.Time"
                )
            elif mode.startswith("adaptive"):
                name = (
                    "io.debezium.time.MicroTimestamp" if fsp > 3 else "io.debezium.time.Timestamp"
                )
            else:
                name = "org.apache.kafka.connect.data.Timestamp"
        n = int(v)
        if name in ("io.debezium.time.Date", "org.apache.kafka.connect.data.Date"):
            return (_EPOCH + timedelta(days=n)).date()
        if name == "io.debezium.time.MicroTime":
            return timedelta(microseconds=n)
        if name in ("io.debezium.time.Time", "org.apache.kafka.connect.data.Time"):
            return timedelta(milliseconds=n)
        if name == "io.debezium.time.NanoTime":
            return timedelta(microseconds=n // 1000)
        if name == "io.debezium.time.MicroTimestamp":
            return _EPOCH + timedelta(microseconds=n)
        if name == "io.debezium.time.NanoTimestamp":
            return _EPOCH + timedelta(microseconds=n // 1000)
        return _EPOCH + timedelta(milliseconds=n)  # Timestamp / connect Timestamp


_CONNECT_DECIMAL = "org.apache.kafka.connect.data.Decimal"
_VARIABLE_DECIMAL = "io.debezium.data.VariableScaleDecimal"


def _exact_decimal(v: Any, fs: dict[str, Any]) -> Decimal:
    """A Connect Decimal (base64 of the big-endian unscaled integer, scale in the schema) or a
    VariableScaleDecimal ({scale, value}), with every digit: no decimal context rounds here."""
    if isinstance(v, dict):  # VariableScaleDecimal
        scale, raw = int(v["scale"]), v["value"]
    else:
        scale, raw = int((fs.get("parameters") or {}).get("scale", 0)), v
    data = raw if isinstance(raw, bytes) else base64.b64decode(raw)
    unscaled = int.from_bytes(data, "big", signed=True)
    return Decimal(f"{unscaled}E-{scale}")


def _as_column(col: Column, d: Decimal) -> Any:
    """An exact decimal as the SELECT value of its column."""
    if col.is_integer:
        return int(d)
    if col.data_type in ("float", "double", "real"):
        return float(d)
    return format(d, "f")


def _iso(t: str, v: str) -> Any:
    """isostring mode and ZonedTimestamp: ISO 8601 text, UTC ('Z')."""
    s = v.rstrip("Z")
    if t == "date":
        return date.fromisoformat(s[:10])
    if t == "time":
        neg = s.startswith("-")
        h, m, rest = s.lstrip("-").split(":")
        sec, _, frac = rest.partition(".")
        td = timedelta(
            hours=int(h),
            minutes=int(m),
            seconds=int(sec),
            microseconds=int((frac + "000000")[:6]) if frac else 0,
        )
        return -td if neg else td
    dt = datetime.fromisoformat(s.replace("T", " "))
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt
