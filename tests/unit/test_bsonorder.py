"""MongoDB's sort order, which the tool uses for every array it builds (CDC's `$push $sort`
keeps the same order on the server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

from bson import Binary, Decimal128, Int64, ObjectId

from migrator.model.bsonorder import sort_documents, sort_key


def test_types_sort_in_mongodbs_comparison_order():
    values = [
        datetime(2020, 1, 1),
        True,
        ObjectId("0" * 24),
        b"\x00",
        [1],
        {"a": 1},
        "a",
        1,
        None,
    ]
    assert sorted(values, key=sort_key) == list(reversed(values))


def test_numbers_compare_by_value_across_bson_types():
    values = [Decimal128("2.5"), 3, Int64(-1), 2.25, Decimal128("-Infinity"), float("nan")]
    got = sorted(values, key=sort_key)
    assert got[0] != got[0]  # NaN sorts below every number
    assert got[1:] == [Decimal128("-Infinity"), Int64(-1), 2.25, Decimal128("2.5"), 3]
    assert sort_key(Decimal("1.0")) == sort_key(1)


def test_text_sorts_by_utf8_bytes_not_by_a_collation():
    assert sorted(["b", "B", "é", "a", "10", "9"], key=sort_key) == ["10", "9", "B", "a", "b", "é"]


def test_binary_sorts_by_length_first_then_subtype_then_bytes():
    got = sorted([b"\xff", b"\x00\x00", Binary(b"\x01", 4), b"\x02"], key=sort_key)
    assert got == [b"\x02", b"\xff", Binary(b"\x01", 4), b"\x00\x00"]


def test_dates_compare_as_instants():
    plus_one = timezone(timedelta(hours=1))
    a = datetime(2020, 1, 1, 12, 0, tzinfo=plus_one)  # 11:00 UTC
    b = datetime(2020, 1, 1, 11, 30)
    assert sorted([b, a], key=sort_key) == [a, b]
    assert sort_key(datetime(2020, 1, 1, tzinfo=UTC)) == sort_key(datetime(2020, 1, 1))


def test_documents_sort_by_several_paths_missing_as_null_and_arrays_whole():
    """As `$push $sort` compares: a missing field as null, an array field as a whole (above
    null, element by element), not by its least element as find().sort() would."""
    docs = [
        {"k": 2, "n": {"x": "b"}},
        {"k": 1, "n": {"x": "b"}},
        {"k": 3},
        {"k": 4, "n": {"x": ["c", "a"]}},
        {"k": 5, "n": {"x": []}},
        {"k": 6, "n": {"x": ["a", "z"]}},
    ]
    sort_documents(docs, [("n", "x"), ("k",)])
    assert [d["k"] for d in docs] == [3, 1, 2, 5, 6, 4]


def test_the_fast_path_sorts_as_the_general_key_does_generated() -> None:
    """Plain integer/text values take a shortcut (and already-sorted arrays are left alone):
    the result must equal the general $sort key's stable sort, whatever the mix of values."""
    import random

    from bson import Int64

    from migrator.model.bsonorder import _get

    pools = [
        lambda r: r.randint(-3, 3),
        lambda r: Int64(r.randint(-3, 3)),
        lambda r: r.choice(["a", "B", "é", "\ud800", "10", "9", "", "z\U0001f600"]),
        lambda r: r.choice([None, True, 1.5, float("nan"), Decimal128("2")]),
        lambda r: r.choice([0, 1, 2, True, False]),  # bools rank above numbers
    ]
    for seed in range(3000):
        r = random.Random(seed)
        kinds = [r.choice(pools[:2]) if r.random() < 0.5 else r.choice(pools) for _ in range(2)]
        paths = [("a",), ("b", "c")][: r.randint(1, 2)]
        docs = []
        for i in range(r.randint(0, 7)):
            d: dict = {"i": i, "a": kinds[0](r), "b": {"c": kinds[1](r)}}
            if r.random() < 0.05:
                del d["a"]
            docs.append(d)
        if r.random() < 0.3:
            docs.sort(key=lambda d, paths=paths: tuple(sort_key(_get(d, p)) for p in paths))
        want = sorted(docs, key=lambda d, paths=paths: tuple(sort_key(_get(d, p)) for p in paths))
        got = list(docs)
        sort_documents(got, paths)
        assert [d["i"] for d in got] == [d["i"] for d in want], seed
