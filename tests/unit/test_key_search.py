"""A document's key finds its source row again, also where the conversion keeps less than the
column holds: seeded random DATETIME(6)/TIMESTAMP(6) values (microseconds, a source time zone
with its DST changes) and FLOAT values; the search is the exact value, or a range holding the
row's value and no other value that converts to another key."""

from __future__ import annotations

import random
import struct
from datetime import datetime, timedelta

from migrator.model.schema import Column
from migrator.model.typerules import KeyRange, default_converter, key_search, zone_for


def _col(data_type: str, fsp: int | None = None) -> Column:
    return Column("k", data_type, data_type, fsp=fsp)


def _when(rnd: random.Random) -> datetime:
    if rnd.random() < 0.3:  # around Europe/Paris's DST changes of 2023 (a gap, a repeat)
        start = rnd.choice([datetime(2023, 3, 26, 1), datetime(2023, 10, 29, 1)])
        return start + timedelta(microseconds=rnd.randrange(0, 3 * 3600 * 10**6))
    start = datetime(2023, 3, 20)
    return start + timedelta(microseconds=rnd.randrange(0, 250 * 86400 * 10**6))


def _inside(search: object, text: str) -> bool:
    if isinstance(search, KeyRange):
        return search.lo <= text <= search.hi
    return search == text


def test_a_datetime_key_s_search_holds_its_row_s_value():
    rnd = random.Random(7)
    for zone_name in ("UTC", "Europe/Paris", "America/Lima"):
        zone = zone_for(zone_name)
        for fsp in (0, 3, 6):
            col = _col("datetime", fsp)
            conv, search = default_converter(col, zone), key_search(col, zone)
            for _ in range(300):
                local = _when(rnd)
                if fsp == 0:
                    local = local.replace(microsecond=0)
                elif fsp == 3:
                    local = local.replace(microsecond=local.microsecond // 1000 * 1000)
                text = local.isoformat(sep=" ", timespec="microseconds")
                doc_id = conv(text)
                s = search(doc_id)
                assert _inside(s, text), (zone_name, fsp, text, s)
                if fsp > 3:
                    assert isinstance(s, KeyRange)
                if isinstance(s, KeyRange):  # the range's ends convert to the key
                    assert conv(s.lo) == doc_id and conv(s.hi) == doc_id
                    assert s.value == doc_id


def test_other_keys_are_searched_by_their_exact_value():
    assert key_search(_col("int"))(5) == 5
    assert key_search(_col("varchar"))("a") == "a"
    assert key_search(_col("date"))(datetime(2024, 1, 2)) == "2024-01-02 00:00:00"


def test_a_time_key_with_microseconds_is_searched_by_its_millisecond():
    col = _col("time", 6)
    conv, search = default_converter(col), key_search(col)
    for text in ("10:00:00.123456", "-01:02:03.500001", "838:59:59.000000"):
        s = search(conv(text))
        assert isinstance(s, KeyRange) and conv(s.lo) == conv(s.hi) == conv(text)
        assert _seconds(s.lo) <= _seconds(text) <= _seconds(s.hi), (text, s)


def _seconds(t: str) -> float:
    sign = -1 if t.startswith("-") else 1
    h, m, s = t.lstrip("-").split(":")
    return sign * (int(h) * 3600 + int(m) * 60 + float(s))


def test_a_datetime_key_in_a_gap_other_than_a_dst_change_s_holds_its_row_s_value():
    # Samoa skipped 2011-12-30 (a day), Nepal skipped 15 minutes in 1986, the Netherlands 28
    # seconds in 1937: a row at a wall-clock time such a change skipped converts like the
    # time one gap later, and its `_id` must still lead back to it
    for zone_name, text in (
        ("Pacific/Apia", "2011-12-30 12:00:00.000000"),
        ("Asia/Kathmandu", "1986-01-01 00:05:00.000000"),
        ("Europe/Amsterdam", "1937-07-01 00:00:10.000000"),
    ):
        zone = zone_for(zone_name)
        for fsp in (0, 6):
            col = _col("datetime", fsp)
            conv, search = default_converter(col, zone), key_search(col, zone)
            s = search(conv(text))
            assert _inside(s, text), (zone_name, fsp, text, s)
            assert isinstance(s, KeyRange) and conv(s.lo) == conv(s.hi) == conv(text)


def test_a_float_key_s_search_holds_the_value_mariadb_prints_with_six_digits():
    # MariaDB prints a FLOAT with FLT_DIG = 6 significant digits (1234.567 as 1234.57,
    # 1234567890 as 1234570000): the `_id` is that, further from the single-precision value
    # than single precision's own rounding
    rnd = random.Random(9)
    col = _col("float")
    conv, search = default_converter(col), key_search(col)
    for _ in range(2000):
        f32 = struct.unpack(
            "<f", struct.pack("<f", rnd.uniform(-1e6, 1e6) * 10 ** rnd.randint(-8, 8))
        )[0]
        shortest = next(  # the shortest text that reads back the same float: found too
            t
            for t in (f"{f32:.{p}g}" for p in range(1, 10))
            if struct.unpack("<f", struct.pack("<f", float(t)))[0] == f32
        )
        for printed in (f"{f32:.6g}", shortest):
            s = search(conv(printed))
            assert isinstance(s, KeyRange) and s.lo <= f32 <= s.hi, (printed, f32, s)
            assert s.value == conv(printed)
