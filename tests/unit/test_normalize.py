"""Binlog values normalised to what a SELECT returns (measured differences, STACK.md)."""

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from migrator.cdc.normalize import RowNormaliser, fix_negative_time, float32_text
from migrator.model.schema import Column, Table
from migrator.model.typerules import default_converter


def norm(col: Column, value, src=""):
    return RowNormaliser(Table("t", [col], ["c"]))({"c": value}, {"c": src})["c"]


@pytest.mark.parametrize(
    ("library", "true"),
    [
        (-3723.544, -3723.456),
        (-1.5, -1.5),
        (-0.999, -0.001),
        (-3020398.001, -3020398.999),
        (-36000.0, -36000.0),
        (3723.456, 3723.456),
        (-0.5, -0.5),
    ],
)
def test_negative_fractional_time_is_repaired(library, true):
    got = fix_negative_time(timedelta(seconds=library))
    assert abs(got.total_seconds() - true) < 1e-6


def test_set_is_joined_in_definition_order_and_empty_set_is_empty_text():
    col = Column("c", "set", "set('a','b','c')")
    assert norm(col, {"c", "a"}) == "a,c"
    assert norm(col, None, "empty set") == ""
    assert norm(col, None, "null") is None


def test_bit_float_decimal_year_timestamp_binary():
    assert norm(Column("c", "bit", "bit(9)"), "100000101") == 261
    assert norm(Column("c", "float", "float"), 1.100000023841858) == 1.1
    assert norm(Column("c", "float", "float"), -3.402820018375656e38) == -3.40282e38
    assert norm(Column("c", "decimal", "decimal(12,10)"), Decimal("0E-10")) == "0.0000000000"
    assert norm(Column("c", "year", "year(4)"), 1900) == 0
    assert (
        norm(Column("c", "timestamp", "timestamp"), datetime(1970, 1, 1)) == "0000-00-00 00:00:00"
    )
    assert norm(Column("c", "binary", "binary(3)"), b"\x01") == b"\x01\x00\x00"
    assert norm(Column("c", "blob", "blob"), "") == b""


def test_normalised_values_convert_like_select_values():
    pairs = [
        (Column("c", "set", "set('a','b')"), {"b", "a"}, "a,b"),
        (Column("c", "bit", "bit(9)"), "111111111", b"\x01\xff"),
        (Column("c", "time", "time(3)", fsp=3), timedelta(seconds=-3723.544), b"-01:02:03.456"),
        (
            Column("c", "timestamp", "timestamp(3)", fsp=3),
            datetime(1970, 1, 1),
            b"0000-00-00 00:00:00.000",
        ),
        (Column("c", "decimal", "decimal(5,2)"), Decimal("-1.50"), b"-1.50"),
        (Column("c", "date", "date"), datetime(2024, 1, 2).date(), b"2024-01-02"),
    ]
    for col, binlog, select in pairs:
        conv = default_converter(col)
        assert conv(norm(col, binlog)) == conv(select), col


def test_float32_text_is_what_the_server_prints():
    # 6 significant digits, as a SELECT returns it (not the shortest text that reads back)
    assert float32_text(0.10000000149011612) == 0.1
    assert float32_text(16777216.0) == 16777200.0
    assert float32_text(1234577.0) == 1234580.0
    assert float32_text(3.4028234663852886e38) == 3.40282e38


@pytest.mark.parametrize(
    ("stmt", "ok"),
    [
        ("ALTER TABLE orders ADD COLUMN channel VARCHAR(10) NULL", True),
        ("alter table `orders` add `a` int, add column b decimal(10,2) default null", True),
        ("ALTER TABLE products ADD COLUMN stock INT NOT NULL DEFAULT 0", False),
        ("ALTER TABLE t DROP COLUMN x", False),
        ("ALTER TABLE t ADD INDEX (x)", False),
        ("ALTER TABLE t MODIFY x BIGINT", False),
        ("CREATE TABLE t (id INT)", False),
    ],
)
def test_extend_accepts_only_added_nullable_columns(stmt, ok):
    from migrator.cdc.runner import adds_only_nullable_columns

    assert (adds_only_nullable_columns(stmt) is None) is ok
