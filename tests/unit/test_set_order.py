"""A SET value's members come out in the column's definition order, whatever order a decoder
(binlog: a Python set; Debezium: a string or a list) or an application wrote them in."""

from __future__ import annotations

import json
import random

import pytest

from migrator.cdc.debezium import DebeziumDecoder, Record
from migrator.cdc.normalize import normaliser
from migrator.model.schema import Column, Schema, Table, type_members
from migrator.model.typerules import default_converter, override_converter

POOL = ["Trailers", "Commentaries", "Deleted Scenes", "Behind the Scenes", "it's", "élan",
        "日本", "a", "B", "c d", "0", "10", "9", "x-y", "_", "zz top", "A1", "b2", "a\\b",
        "new\nline", "tab\there", "\\", "q'"]  # fmt: skip


def _server_quoted(m: str) -> str:
    """A member as the server writes it in COLUMN_TYPE (append_unescaped)."""
    for raw, esc in (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("'", "''")):
        m = m.replace(raw, esc)
    return "'" + m + "'"


def _column(rng: random.Random) -> tuple[Column, list[str]]:
    members: list[str] = []
    for m in rng.sample(POOL, rng.randint(1, len(POOL))):
        if m.lower() not in {x.lower() for x in members}:
            members.append(m)
    quoted = ",".join(_server_quoted(m) for m in members)
    written = f"SET({quoted})" if rng.random() < 0.5 else f"set({quoted})"
    # introspection keeps column_type lower-cased and the members as written
    return Column("s", "set", written.lower(), members=type_members(written)), members


CASES = list(range(200))


@pytest.mark.parametrize("seed", CASES[:: len(CASES) // 20])
def test_every_path_lists_set_members_in_definition_order(seed):
    rng = random.Random(seed)
    for _ in range(len(CASES) // 20):
        col, members = _column(rng)
        assert list(col.members) == members
        chosen = rng.sample(members, rng.randint(0, len(members)))
        want = [m for m in members if m in chosen]
        text = ",".join(chosen)
        # the SELECT path (backfill, verify, rebuilds) and writes through the SDK
        assert default_converter(col)(text.encode()) == want
        assert override_converter(col, "string")(text) == ",".join(want)
        # the binlog decoder hands a Python set (empty SET: None with a reason)
        decoded = normaliser(col)(set(chosen) or None, "" if chosen else "empty set")
        assert decoded == ",".join(want)
        # Debezium: a comma-separated string, or a list
        table = Table("t", [Column("id", "int", "int(11)"), col], primary_key=["id"])
        dec = DebeziumDecoder(Schema("db", {"t": table}))
        for value in (text, chosen):
            payload = {"op": "c", "before": None, "after": {"id": 1, "s": value},
                       "source": {"table": "t", "db": "db", "ts_ms": 0}}  # fmt: skip
            ev = dec.decode(Record("p.db.t", None, json.loads(json.dumps(payload))))
            assert ev is not None and ev.after is not None
            assert ev.after["s"] == ",".join(want), (value, want)


def test_a_member_in_another_case_is_placed_by_its_definition():
    col = Column("s", "set", "set('b','a')", members=("B", "A"))
    assert normaliser(col)({"a", "b"}, "") == "b,a"
    assert default_converter(col)(b"a,b") == ["b", "a"]
