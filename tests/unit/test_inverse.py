"""The Transform's inverse (reverse sync): a row converted, written back through the inverse,
read again as MySQL returns it and converted again gives the same document value (seeded
random values over the type corpus), and documents come back as their rows."""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal, localcontext

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.model.schema import Column
from migrator.model.typerules import default_converter, override_converter, zone_for
from migrator.reverse.inverse import DocumentInverse, default_inverse, lossy, override_inverse

from .test_mapping import ORDERS, compile_


def stored(col: Column, param):
    """What a SELECT returns after writing `param` into `col` (mysqlclient, no conversion)."""
    t = col.data_type
    if param is None:
        return None
    if t == "bit" and not col.is_bool:
        width = col.display_width or 1
        return int(param).to_bytes((width + 7) // 8, "big")
    if col.is_bool and t == "bit":
        return bytes([int(param)])
    if t in ("decimal", "numeric"):
        with localcontext() as ctx:
            ctx.prec = 80
            q = Decimal(1).scaleb(-(col.scale or 0))
            return str(Decimal(param).quantize(q)).encode()
    if t in ("datetime", "timestamp", "time"):
        main, _, frac = str(param).partition(".")
        fsp = col.fsp or 0
        return (main + ("." + (frac + "000000")[:fsp] if fsp else "")).encode()
    if isinstance(param, bytes):
        return param
    if isinstance(param, float):
        return repr(param).encode()
    if isinstance(param, int):
        return str(param).encode()
    return param  # text and JSON come back as str


def same(a, b) -> bool:
    return type(a) is type(b) and a == b


def gen(rnd: random.Random, col: Column):
    t = col.data_type
    if col.is_bool:
        return bytes([rnd.choice([0, 1])]) if t == "bit" else rnd.choice([b"0", b"1"])
    if t == "bit":
        return rnd.randrange(0, 2 ** (col.display_width or 1)).to_bytes(
            ((col.display_width or 1) + 7) // 8, "big"
        )
    if t == "bigint" and col.unsigned:
        return str(rnd.choice([0, 7, 2**63 - 1, 2**63, 2**64 - 1])).encode()
    if col.is_integer:
        return str(rnd.randrange(-(2**31), 2**31)).encode()
    if t == "decimal":
        p, sc = col.precision or 10, col.scale or 0
        digits = str(rnd.randrange(10**p)).rjust(sc + 1, "0")
        text = digits[: len(digits) - sc] + ("." + digits[len(digits) - sc :] if sc else "")
        return (rnd.choice(["-", ""]) + text).encode()
    if t == "double":
        return repr(rnd.uniform(-1e6, 1e6)).encode()
    if t in ("datetime", "timestamp"):
        dt = datetime(rnd.randrange(1971, 2037), rnd.randrange(1, 13), rnd.randrange(1, 29),
                      rnd.randrange(24), rnd.randrange(60), rnd.randrange(60),
                      rnd.randrange(10**6))  # fmt: skip
        return stored(col, dt.isoformat(sep=" "))
    if t == "date":
        return f"{rnd.randrange(1000, 9999)}-{rnd.randrange(1, 13):02d}-{rnd.randrange(1, 29):02d}".encode()  # noqa: E501
    if t == "time":
        fsp = col.fsp or 0
        frac = f".{rnd.randrange(10**fsp):0{fsp}d}" if fsp else ""
        return f"{rnd.choice(['-', ''])}{rnd.randrange(839):02d}:{rnd.randrange(60):02d}:{rnd.randrange(60):02d}{frac}".encode()  # noqa: E501
    if t == "year":
        return str(rnd.randrange(1901, 2156)).encode()
    if t == "json":
        return rnd.choice(
            ['{"a": 1, "b": [true, null, "x"]}', "[1, 2.5, 18446744073709551615]", '"s"']
        )
    if t == "set":
        return ",".join(sorted(rnd.sample(["a", "b", "c"], rnd.randrange(0, 4))))
    if t == "enum":
        return rnd.choice(["a", "b"])
    if col.is_binary:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 9)))
    return "".join(rnd.choice("aé😀 z'\"") for _ in range(rnd.randrange(0, 12)))


CORPUS = [
    Column("c", "int", "int(11)"),
    Column("c", "bigint", "bigint(20) unsigned"),
    Column("c", "tinyint", "tinyint(1)"),
    Column("c", "bit", "bit(1)"),
    Column("c", "bit", "bit(10)"),
    Column("c", "decimal", "decimal(30,10)", precision=30, scale=10),
    Column("c", "decimal", "decimal(5,0)", precision=5, scale=0),
    Column("c", "double", "double"),
    Column("c", "datetime", "datetime(3)", fsp=3),
    Column("c", "datetime", "datetime", fsp=0),
    Column("c", "timestamp", "timestamp(3)", fsp=3),
    Column("c", "date", "date"),
    Column("c", "time", "time(3)", fsp=3),
    Column("c", "time", "time", fsp=0),
    Column("c", "year", "year(4)"),
    Column("c", "json", "json"),
    Column("c", "set", "set('a','b','c')"),
    Column("c", "enum", "enum('a','b')"),
    Column("c", "varbinary", "varbinary(8)"),
    Column("c", "varchar", "varchar(20)"),
]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris"])
@pytest.mark.parametrize("col", CORPUS, ids=lambda c: c.column_type)
def test_default_rules_round_trip(col, zone):
    rnd = random.Random(f"{col.column_type}/{zone}")
    z = zone_for(zone)
    fwd, inv = default_converter(col, z), default_inverse(col, z)
    for _ in range(200):
        raw = gen(rnd, col)
        value = fwd(raw)
        if value is None:
            continue
        again = fwd(stored(col, inv(value)))
        assert same(again, value) or (isinstance(value, list | dict) and again == value), (
            raw,
            value,
            again,
        )


@pytest.mark.parametrize(
    ("col", "type_name"),
    [
        (Column("c", "decimal", "decimal(40,20)", precision=40, scale=20), "string"),
        (Column("c", "int", "int(11)"), "string"),
        (Column("c", "varbinary", "varbinary(8)"), "string"),
        (Column("c", "datetime", "datetime(3)", fsp=3), "string"),
        (Column("c", "varchar", "varchar(40)"), "json"),
        (Column("c", "date", "date"), "datetime"),
        (Column("c", "int", "int(11)"), "decimal"),
        (Column("c", "set", "set('a','b','c')"), "string"),
    ],
)
def test_overrides_round_trip(col, type_name):
    rnd = random.Random(type_name + col.column_type)
    fwd, inv = override_converter(col, type_name), override_inverse(col, type_name)
    for _ in range(100):
        raw = gen(rnd, col) if col.data_type != "varchar" else '{"k": [1, "v"]}'
        value = fwd(raw)
        assert fwd(stored(col, inv(value))) == value
    # the value comes back; only a JSON override's text formatting does not
    assert (lossy(col, type_name) is None) == (type_name != "json")


def test_lossy_overrides_are_named_for_plan():
    assert "zero / non-zero" in lossy(Column("n", "int", "int(11)"), "bool")
    assert "rounds DECIMAL" in lossy(Column("n", "decimal", "decimal(9,2)"), "double")
    assert "time of day" in lossy(Column("n", "datetime", "datetime"), "date")


def test_a_document_comes_back_as_its_rows():
    plan = compile_(ORDERS).collection("orders")
    row = (b"7", "SO-7", b"3", b"10.50", "Paris", b"2024-01-02 03:04:05")
    children = {
        "items": [(b"7", b"1", b"2"), (b"7", b"2", b"1")],
        "customer": [(b"3", "a@b.c", b"1")],
    }
    [doc] = plan.documents([row], children)
    rows = DocumentInverse(plan).rows(doc)
    assert rows.root.table == "orders"
    assert rows.root.values == {
        "id": 7,
        "order_no": "SO-7",
        "customer_id": 3,
        "total": "10.50",
        "city": "Paris",
        "created_at": "2024-01-02 03:04:05.000000",
    }
    assert rows.scopes["items"] == {"order_id": 7}
    assert [r.values for r in rows.children["items"]] == [
        {"order_id": 7, "line_no": 1, "qty": 2},
        {"order_id": 7, "line_no": 2, "qty": 1},
    ]
    # an element added by a writer that is not the SDK, and a changed parent sub-document
    doc["items"].append({"line_no": 3, "qty": Int64(9)})
    del doc["customer_id"]
    doc["customer"] = {"id": 5, "email": "x@y.z", "vip": False}
    rows = DocumentInverse(plan).rows(doc)
    assert rows.children["items"][-1].values == {"order_id": 7, "line_no": 3, "qty": 9}
    assert rows.root.values["customer_id"] is None  # omitted at the root: NULL...
    doc["customer_id"] = 5
    assert DocumentInverse(plan).rows(doc).root.values["customer_id"] == 5
    assert Decimal128("10.50").to_decimal() == Decimal(rows.root.values["total"])
