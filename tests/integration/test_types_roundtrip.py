"""Every MariaDB/MySQL column type goes through a real backfill and lands as the rules say."""

from datetime import datetime

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping

DDL = """CREATE TABLE alltypes (
  id INT PRIMARY KEY,
  ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, i INT, iu INT UNSIGNED,
  bi BIGINT, bu BIGINT UNSIGNED, b1 TINYINT(1), bit1 BIT(1), bit9 BIT(9),
  dec1 DECIMAL(10,2), dec2 DECIMAL(34,10), fl FLOAT, db DOUBLE,
  dt DATETIME, dt3 DATETIME(3), dt6 DATETIME(6), ts TIMESTAMP(3) NULL DEFAULT NULL,
  d DATE, t TIME, t3 TIME(3), y YEAR,
  c CHAR(5), vc VARCHAR(50), tx TEXT, lt LONGTEXT,
  bn BINARY(3), vb VARBINARY(10), bl BLOB,
  e ENUM('small','large'), s SET('a','b','c'), j JSON, g POINT NULL
)"""

COLS = (
    "id, ti, tu, si, mi, i, iu, bi, bu, b1, bit1, bit9, dec1, dec2, fl, db, dt, dt3, dt6, "
    "ts, d, t, t3, y, c, vc, tx, lt, bn, vb, bl, e, s, j"
)

ROWS = [
    "(1, -5, 200, -300, -8000000, 123456, 4000000000, -9000000000000, 18446744073709551615, "
    "1, b'1', b'100000101', 12345678.90, '123456789012345678901234.0123456789', 1.1, "
    "3.141592653589793, '2024-02-29 12:34:56', '2024-02-29 12:34:56.789', "
    "'2024-02-29 12:34:56.789999', '2024-02-29 12:34:56.789', '2024-02-29', '12:34:56', "
    "'-01:02:03.456', 2024, 'ab', 'héllo wörld 😀', 'multi\\nline', REPEAT('x', 1000), "
    "x'0102', x'00FF80', x'DEADBEEF', 'large', 'a,c', "
    '\'{"n": 12345678901234567890, "f": 1.5, "a": [1, "x", null], "o": {"k": true}}\')',
    "(2, -128, 255, -32768, 8388607, -2147483648, 4294967295, -9223372036854775808, "
    "9223372036854775807, 0, b'0', b'111111111', -99999999.99, "
    "'-999999999999999999999999.9999999999', -3.40282e38, -1.7976931348623157e308, "
    "'1000-01-01 00:00:00', '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999', "
    "'1970-01-01 00:00:01.000', '1000-01-01', '-838:59:59', '838:59:59.000', 1901, '', '', '', "
    "'', x'', x'', x'', 'small', '', '[]')",
    "(3" + ", NULL" * 33 + ")",
    "(0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, '0000-00-00 00:00:00', '0000-00-00 00:00:00.000', NULL, '0000-00-00 00:00:00', "
    "'0000-00-00', NULL, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    "(-5, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 2, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '日本語テキスト', NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, '12345678901234567890123')",
]

EXPECTED = {
    1: {
        "ti": -5,
        "tu": 200,
        "si": -300,
        "mi": -8000000,
        "i": 123456,
        "iu": 4000000000,
        "bi": -9000000000000,
        "bu": Decimal128("18446744073709551615"),
        "b1": True,
        "bit1": True,
        "bit9": 261,
        "dec1": Decimal128("12345678.90"),
        "dec2": Decimal128("123456789012345678901234.0123456789"),
        "fl": 1.1,
        "db": 3.141592653589793,
        "dt": datetime(2024, 2, 29, 12, 34, 56),
        "dt3": datetime(2024, 2, 29, 12, 34, 56, 789000),
        "dt6": datetime(2024, 2, 29, 12, 34, 56, 789000),
        "ts": datetime(2024, 2, 29, 12, 34, 56, 789000),
        "d": datetime(2024, 2, 29),
        "t": "12:34:56",
        "t3": "-01:02:03.456",
        "y": 2024,
        "c": "ab",
        "vc": "héllo wörld 😀",
        "tx": "multi\nline",
        "lt": "x" * 1000,
        "bn": b"\x01\x02\x00",
        "vb": b"\x00\xff\x80",
        "bl": b"\xde\xad\xbe\xef",
        "e": "large",
        "s": ["a", "c"],
        "j": {
            "n": Decimal128("12345678901234567890"),
            "f": 1.5,
            "a": [1, "x", None],
            "o": {"k": True},
        },
    },
    2: {
        "ti": -128,
        "tu": 255,
        "si": -32768,
        "mi": 8388607,
        "i": -2147483648,
        "iu": 4294967295,
        "bi": -9223372036854775808,
        "bu": 9223372036854775807,
        "b1": False,
        "bit1": False,
        "bit9": 511,
        "dec1": Decimal128("-99999999.99"),
        "dec2": Decimal128("-999999999999999999999999.9999999999"),
        "fl": -3.40282e38,
        "db": -1.7976931348623157e308,
        "dt": datetime(1000, 1, 1),
        "dt3": datetime(9999, 12, 31, 23, 59, 59, 999000),
        "dt6": datetime(9999, 12, 31, 23, 59, 59, 999000),
        "ts": datetime(1970, 1, 1, 0, 0, 1),
        "d": datetime(1000, 1, 1),
        "t": "-838:59:59",
        "t3": "838:59:59.000",
        "y": 1901,
        "c": "",
        "vc": "",
        "tx": "",
        "lt": "",
        "bn": b"\x00\x00\x00",
        "vb": b"",
        "bl": b"",
        "e": "small",
        "s": [],
        "j": [],
    },
    3: {},
    0: {"dt": None, "dt3": None, "ts": None, "d": None, "y": 0},
    -5: {"b1": True, "vc": "日本語テキスト", "j": Decimal128("12345678901234567890123")},
}
ALL = [*[c.strip() for c in COLS.split(",")][1:], "g"]


def test_every_type_round_trips_as_the_rules_say(env):
    env.sql("SET SESSION sql_mode = ''", "SET time_zone = '+00:00'", DDL)
    env.sql(f"INSERT INTO alltypes ({COLS}) VALUES " + ", ".join(ROWS))
    env.sql("UPDATE alltypes SET g = ST_GeomFromText('POINT(1 2)') WHERE id = 1")
    path = env.mapping("  - {name: alltypes, from: alltypes}\n")
    summary = backfill(load_mapping(path), workers=1, chunk_size=2)
    assert summary.rows == 5 and summary.dead_letters == 0
    docs = {d["_id"]: d for d in env.target.alltypes.find()}
    assert sorted(docs) == [-5, 0, 1, 2, 3]
    for key, expected in EXPECTED.items():
        doc = docs[key]
        assert doc["id"] == key
        for col in ALL:
            if col == "g":
                continue
            want = expected.get(col)
            got = doc[col]
            assert got == want, f"row {key} column {col}: {got!r} != {want!r}"
            if want is not None:
                # integers are always int64, whatever their size
                want_type = Int64 if type(want) is int and col != "j" else type(want)
                assert type(got) is want_type, f"row {key} column {col}: {type(got)}"
    # GEOMETRY is copied as binary (SRID + WKB, 25 bytes for a point)
    assert isinstance(docs[1]["g"], bytes) and len(docs[1]["g"]) == 25
    assert docs[2]["g"] is None


def test_composite_and_string_keys_page_correctly(env):
    env.sql(
        "CREATE TABLE ck (a INT, b VARCHAR(10), c DATE, v INT, PRIMARY KEY (a, b, c))",
        "INSERT INTO ck VALUES (-2, 'z', '2024-01-01', 1), (-2, 'z', '2024-01-02', 2), "
        "(-2, 'é', '2024-01-01', 3), (0, '', '2024-01-01', 4), (0, 'a', '1999-12-31', 5), "
        "(1, 'a', '2024-01-01', 6), (1, 'b', '2024-01-01', 7), (7, 'x', '2000-02-29', 8)",
        "CREATE TABLE sk (code VARCHAR(20) PRIMARY KEY, n INT)",
        "INSERT INTO sk VALUES ('', 0), ('a', 1), ('B', 2), ('é', 3), ('zz', 4), ('😀', 5)",
    )
    path = env.mapping("  - {name: ck, from: ck}\n  - {name: sk, from: sk}\n")
    summary = backfill(load_mapping(path), workers=1, chunk_size=2)
    by_name = {c.name: c for c in summary.collections}
    assert by_name["ck"].rows == 8 and by_name["ck"].chunks_total == 5
    ids = sorted(
        (d["_id"]["a"], d["_id"]["b"], d["_id"]["c"], d["v"]) for d in env.target.ck.find()
    )
    assert len(ids) == 8 and sorted(i[3] for i in ids) == list(range(1, 9))
    doc = env.target.ck.find_one({"v": 3})
    assert doc["_id"] == {"a": -2, "b": "é", "c": datetime(2024, 1, 1)}
    assert list(doc["_id"]) == ["a", "b", "c"]
    assert sorted(d["n"] for d in env.target.sk.find()) == [0, 1, 2, 3, 4, 5]
    assert env.target.sk.find_one({"_id": "😀"})["n"] == 5
