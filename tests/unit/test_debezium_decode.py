"""Every captured Debezium 3.6.3 sample decodes to the document the backfill would build."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from bson.decimal128 import Decimal128

from migrator.cdc.debezium import DebeziumDecoder, DebeziumSettings, Record
from migrator.errors import ConfigError
from migrator.model.schema import Column, Schema, Table
from migrator.model.settings import parse_mapping
from migrator.model.transform import compile_transform

# Copied from ../shared/fixtures/debezium (real Debezium 3.6.3 output; see its README.md).
SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium" / "samples"

ORDERS = Table(
    "orders",
    [
        Column("id", "bigint", "bigint(20)"),
        Column("amount", "decimal", "decimal(12,2)", precision=12, scale=2),
        Column("created_at", "datetime", "datetime(6)", fsp=6),
        Column("updated_at", "timestamp", "timestamp", fsp=0),
        Column("attrs", "json", "longtext"),
        Column("customer", "varchar", "varchar(100)"),
        Column("status", "enum", "enum('new','paid','shipped','cancelled')"),
        Column("payload", "blob", "blob"),
    ],
    primary_key=["id"],
)
SCHEMA = Schema("shop", {"orders": ORDERS})
MAPPING = parse_mapping(
    'version: 1\nsource: {url: "mysql://u@h/shop"}\n'
    'target: {url: "mongodb://m"}\ncollections:\n  - {name: orders, from: orders}\n'
)
PLAN = compile_transform(MAPPING, SCHEMA).collection("orders")

ROW1 = {
    "_id": 1,
    "id": 1,
    "amount": Decimal128("1234.56"),
    "created_at": datetime(2024, 1, 2, 3, 4, 5, 123000),
    "updated_at": datetime(2024, 1, 2, 3, 4, 5),
    "attrs": {"a": 1, "tags": ["x", "y"], "n": {"d": 1.5}},
    "customer": "Zoë Ünicode",
    "status": "new",
    "payload": b"\x00\xff\x10\xde\xad\xbe\xef",
}
ROW1_AFTER = {
    **ROW1,
    "amount": Decimal128("1300.00"),
    "updated_at": datetime(2025, 6, 6, 6, 6, 6),
    "attrs": {"a": 2, "tags": ["x", "y"], "n": {"d": 1.5}},
    "status": "shipped",
}
ROW100 = {
    "_id": 100,
    "id": 100,
    "amount": Decimal128("42.00"),
    "created_at": datetime(2025, 5, 5, 5, 5, 5),
    "updated_at": datetime(2025, 5, 5, 5, 5, 5),
    "attrs": {"ins": True},
    "customer": "inserted",
    "status": "new",
    "payload": b"\x01\x02",
}
ROW2 = {
    "_id": 2,
    "id": 2,
    "amount": Decimal128("-0.01"),
    "created_at": datetime(1999, 12, 31, 23, 59, 59, 999000),
    "updated_at": datetime(2024, 6, 1, 12, 0, 0),
    "attrs": None,
    "customer": None,
    "status": "paid",
    "payload": None,
}
EXPECTED = {"r": (None, ROW1), "c": (None, ROW100), "u": (ROW1, ROW1_AFTER), "d": (ROW2, None)}
MODES = {
    "schema_defaults": DebeziumSettings(),
    "schema_string_connect_hex": DebeziumSettings("connect", "string", "hex"),
    "noschema_string_connect_hex": DebeziumSettings("connect", "string", "hex"),
    "noschema_double_isostring_base64": DebeziumSettings("isostring", "double", "base64"),
}
OPS = {"r": "insert", "c": "insert", "u": "update", "d": "delete"}


def load(name: str) -> Record:
    d = json.loads((SAMPLES / f"{name}.json").read_text())
    return Record(topic=d["topic"], key=d["key"], value=d["value"])


def doc(row):
    return (
        None if row is None else PLAN.documents([tuple(row[c] for c in PLAN.root.columns)], {})[0]
    )


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("op", ["r", "c", "u", "d"])
def test_samples_decode_to_the_backfill_document(mode, op):
    ev = DebeziumDecoder(SCHEMA, MODES[mode]).decode(load(f"{mode}_op_{op}"))
    assert ev is not None and ev.table == "orders" and ev.op == OPS[op]
    want_before, want_after = EXPECTED[op]
    assert doc(ev.before) == want_before
    assert doc(ev.after) == want_after
    assert ev.commit_time is not None and ev.commit_time.year >= 2026


@pytest.mark.parametrize("mode", [*sorted(MODES), "noschema_defaults"])
def test_tombstones_are_skipped(mode):
    assert DebeziumDecoder(SCHEMA, MODES.get(mode)).decode(load(f"{mode}_tombstone")) is None


def test_schema_change_records_are_not_row_events():
    assert DebeziumDecoder(SCHEMA).decode(load("noschema_defaults_schema_change")) is None


@pytest.mark.parametrize("op", ["r", "c", "u", "d"])
def test_schemaless_precise_decimals_are_refused_with_a_clear_error(op):
    with pytest.raises(ConfigError) as e:
        DebeziumDecoder(SCHEMA).decode(load(f"noschema_defaults_op_{op}"))
    assert "decimal.handling.mode=string" in str(e.value) and "amount" in str(e.value)


def test_other_databases_and_tables_are_ignored():
    rec = load("schema_defaults_op_c")
    other = Schema("elsewhere", {"orders": ORDERS})
    assert DebeziumDecoder(other).decode(rec) is None
    assert DebeziumDecoder(Schema("shop", {})).decode(rec) is None


# -- real Debezium 3.6 values of a type corpus (issue: decoding loses or crashes) -------------

BIGU = Table(
    "acct",
    [
        Column("id", "bigint", "bigint(20) unsigned"),
        Column("d", "decimal", "decimal(38,10)", precision=38, scale=10),
    ],
    primary_key=["id"],
)
BIGU_SCHEMA = Schema("shop", {"acct": BIGU})


def _connect_decimal(value: int, scale: int) -> str:
    import base64

    n = (value.bit_length() + 8) // 8
    return base64.b64encode(value.to_bytes(n, "big", signed=True)).decode()


def _record(after: dict, fields: list[dict]) -> Record:
    schema = {
        "type": "struct",
        "fields": [
            {"field": "before", "type": "struct", "optional": True, "fields": fields},
            {"field": "after", "type": "struct", "optional": True, "fields": fields},
        ],
    }
    payload = {
        "before": None,
        "after": after,
        "op": "c",
        "source": {"db": "shop", "table": "acct", "ts_ms": 1},
    }
    return Record("dbz.shop.acct", None, {"schema": schema, "payload": payload})


DEC = "org.apache.kafka.connect.data.Decimal"


def test_precise_unsigned_bigint_arrives_as_a_connect_decimal_and_is_read_exactly():
    """bigint.unsigned.handling.mode=precise: the key is a Connect Decimal (base64 bytes)."""
    fields = [
        {"field": "id", "type": "bytes", "name": DEC, "parameters": {"scale": "0"}},
        {"field": "d", "type": "bytes", "name": DEC, "parameters": {"scale": "10"}},
    ]
    big = 2**64 - 1
    rec = _record({"id": _connect_decimal(big, 0), "d": _connect_decimal(1, 10)}, fields)
    ev = DebeziumDecoder(BIGU_SCHEMA).decode(rec)
    assert ev is not None and int(ev.after["id"]) == big
    assert str(ev.after["d"]) == "0.0000000001"


def test_a_34_digit_decimal_keeps_every_digit():
    fields = [
        {"field": "id", "type": "int64"},
        {"field": "d", "type": "bytes", "name": DEC, "parameters": {"scale": "10"}},
    ]
    unscaled = 1234567890123456789012345678901234  # 34 significant digits
    rec = _record({"id": 1, "d": _connect_decimal(unscaled, 10)}, fields)
    ev = DebeziumDecoder(BIGU_SCHEMA).decode(rec)
    assert ev is not None and ev.after["d"] == "123456789012345678901234.5678901234"


def test_long_mode_unsigned_keys_above_2_63_are_unwrapped():
    """bigint.unsigned.handling.mode=long (the default): values above 2^63-1 arrive negative;
    the column is unsigned, so the wrap is undone instead of writing a new document."""
    fields = [{"field": "id", "type": "int64"}, {"field": "d", "type": "string"}]
    for real in (2**63, 2**64 - 1, 5):
        wrapped = real - 2**64 if real >= 2**63 else real
        rec = _record({"id": wrapped, "d": "1.5"}, fields)
        ev = DebeziumDecoder(BIGU_SCHEMA, DebeziumSettings("connect", "string")).decode(rec)
        assert ev is not None and int(ev.after["id"]) == real


def test_a_value_that_cannot_be_decoded_is_a_conversion_error_not_a_crash():
    from migrator.errors import ConversionError

    fields = [{"field": "id", "type": "int64"}, {"field": "d", "type": "string"}]
    rec = _record({"id": "not a number", "d": "1"}, fields)
    with pytest.raises(ConversionError) as e:
        DebeziumDecoder(BIGU_SCHEMA, DebeziumSettings("connect", "string")).decode(rec)
    assert "acct.id" in str(e.value)
