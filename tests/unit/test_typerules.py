"""Every default type rule, from what a SELECT returns (bytes for numbers/dates, str for text)."""

from datetime import datetime, timedelta

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.errors import ConversionError
from migrator.model.schema import Column
from migrator.model.typerules import default_converter, format_time, override_converter, zone_for


def conv(data_type: str, column_type: str | None = None, **kw):
    return default_converter(Column("c", data_type, column_type or data_type, **kw))


@pytest.mark.parametrize(
    ("dtype", "ctype", "raw", "expected"),
    [
        ("int", "int(11)", b"-2147483648", -2147483648),
        ("bigint", "bigint(20)", b"9223372036854775807", 9223372036854775807),
        ("bigint", "bigint(20) unsigned", b"9223372036854775807", 9223372036854775807),
        ("tinyint", "tinyint(4)", b"-128", -128),
        ("smallint", "smallint(5) unsigned", b"65535", 65535),
        ("mediumint", "mediumint(9)", b"0", 0),
        ("tinyint", "tinyint(1)", b"1", True),
        ("tinyint", "tinyint(1)", b"0", False),
        ("tinyint", "tinyint(1)", b"2", True),
        ("bit", "bit(1)", b"\x01", True),
        ("bit", "bit(1)", b"\x00", False),
        ("bit", "bit(10)", b"\x02\x01", 513),
        ("double", "double", b"-1.5e300", -1.5e300),
        ("float", "float", b"1.1", 1.1),
        ("year", "year(4)", b"2024", 2024),
        ("varchar", "varchar(10)", "héllo😀", "héllo😀"),
        ("enum", "enum('a','b')", "b", "b"),
        ("set", "set('a','b','c')", "a,c", ["a", "c"]),
        ("set", "set('a','b','c')", "", []),
        ("varbinary", "varbinary(4)", b"\x00\xff\xfe", b"\x00\xff\xfe"),
        ("blob", "blob", b"", b""),
        ("time", "time", b"-838:59:59", "-838:59:59"),
    ],
)
def test_default_rules(dtype, ctype, raw, expected):
    value = conv(dtype, ctype)(raw)
    assert value == expected
    # integer columns are always int64, whatever the value's size
    assert type(value) is (Int64 if type(expected) is int else type(expected))


def test_bigint_unsigned_above_int64_becomes_decimal128():
    assert conv("bigint", "bigint(20) unsigned")(b"18446744073709551615") == Decimal128(
        "18446744073709551615"
    )


def test_decimal_keeps_scale_and_sign():
    c = conv("decimal", "decimal(10,2)", precision=10, scale=2)
    assert c(b"1.50") == Decimal128("1.50")
    assert str(c(b"-0.00")) == "-0.00"
    assert c(b"99999999.99") == Decimal128("99999999.99")


def test_decimal_beyond_34_digits_is_a_conversion_error():
    c = conv("decimal", "decimal(65,30)", precision=65, scale=30)
    with pytest.raises(ConversionError, match="34 significant digits"):
        c(b"12345678901234567890123456789012345.123456789012345678901234567890")


def test_datetime_truncates_to_ms_and_zero_dates_are_null():
    c = conv("datetime", "datetime(6)", fsp=6)
    assert c(b"2024-02-29 23:59:59.123999") == datetime(2024, 2, 29, 23, 59, 59, 123000)
    assert c(b"0000-00-00 00:00:00") is None
    assert c(b"2024-00-10 00:00:00") is None
    assert conv("timestamp")(b"1970-01-01 00:00:01") == datetime(1970, 1, 1, 0, 0, 1)


def test_datetime_in_a_source_zone_is_converted_to_utc():
    c = default_converter(Column("c", "datetime", "datetime"), zone_for("Europe/Paris"))
    assert c(b"2024-07-01 12:00:00") == datetime(2024, 7, 1, 10, 0, 0)
    # TIMESTAMP is read in a UTC session whatever the source zone.
    c = default_converter(Column("c", "timestamp", "timestamp"), zone_for("Europe/Paris"))
    assert c(b"2024-07-01 12:00:00") == datetime(2024, 7, 1, 12, 0, 0)


def test_date_is_midnight_utc():
    assert conv("date")(b"1000-01-01") == datetime(1000, 1, 1)
    assert conv("date")(b"9999-12-31") == datetime(9999, 12, 31)
    assert conv("date")(b"0000-00-00") is None


def test_time_text_with_milliseconds():
    assert conv("time", "time(3)", fsp=3)(b"12:34:56.789") == "12:34:56.789"
    assert conv("time", "time(6)", fsp=6)(b"-01:00:00.123456") == "-01:00:00.123"
    assert conv("time", "time(1)", fsp=1)(b"00:00:00.5") == "00:00:00.500"
    assert format_time(timedelta(hours=-1, seconds=-1), 0) == "-01:00:01"
    assert format_time(timedelta(hours=838, minutes=59, seconds=59), 0) == "838:59:59"


def test_json_keeps_big_integers_and_structure():
    c = conv("json")
    v = c('{"a": 12345678901234567890, "b": [1, 2.5, null, true], "c": {"d": "é"}}')
    assert v == {
        "a": Decimal128("12345678901234567890"),
        "b": [1, 2.5, None, True],
        "c": {"d": "é"},
    }
    assert c("-9223372036854775808") == -9223372036854775808
    assert c('"text"') == "text"
    with pytest.raises(ConversionError, match="not valid JSON"):
        c("{nope")


def test_overrides():
    col = Column("c", "decimal", "decimal(40,20)", precision=40, scale=20)
    assert override_converter(col, "string")(b"1.50000000000000000000") == "1.50000000000000000000"
    assert override_converter(col, "double")(b"1.5") == 1.5
    tiny = Column("c", "tinyint", "tinyint(1)")
    assert override_converter(tiny, "int")(b"7") == 7
    assert override_converter(Column("c", "int", "int(11)"), "bool")(b"0") is False
    assert override_converter(Column("c", "varchar", "varchar(9)"), "json")('{"x": 1}') == {"x": 1}
    assert (
        override_converter(Column("c", "varbinary", "varbinary(9)"), "string")(b"\x01\xff")
        == "01ff"
    )


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "-0",
        "0.00",
        "-0.00",
        "1.50",
        "-1.50",
        "99999999.99",
        "123456789012345678901234.0123456789",
        "-999999999999999999999999.9999999999",
        "0.0000000001",
        "1234567890123456789012345678901234",
        "000123.4500",
        "5",
        "-5.000000000000000000000000000000",
    ],
)
def test_fast_decimal128_encoding_equals_bson_reference(text):
    fast = conv("decimal", "decimal(65,30)")(text.encode())
    ref = Decimal128(text)
    assert fast.bid == ref.bid, (fast, ref)
    assert str(fast) == str(ref)
