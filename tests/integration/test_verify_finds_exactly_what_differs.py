"""A full verification reports exactly the documents that differ, whatever the key: seeded
random changes to the target (values changed, fields removed or added, documents deleted or
added) against an oracle that knows which of them change what a document holds, mixed with
changes that only rewrite its bytes (fields in another order, an int stored as a 64-bit int,
a field set to its own value), which are no difference. Integer, string and composite keys;
one worker (the in-order walk that compares digests first) and two (chunks by query)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from bson.int64 import Int64
from bson.son import SON

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

TABLES = {
    "ti": ("id INT PRIMARY KEY", "seq"),
    "ts": ("code VARCHAR(12) PRIMARY KEY", "CONCAT('k', LPAD(seq, 4, '0'))"),
    "tc": ("a INT, b INT, PRIMARY KEY (a, b)", "seq DIV 7, seq MOD 7"),
}


def _load(env, rows: int) -> Any:
    for name, (key, values) in TABLES.items():
        env.sql(
            f"CREATE TABLE {name} ({key}, n INT NOT NULL, s VARCHAR(20), d DECIMAL(8,2) NOT NULL)",
            f"INSERT INTO {name} SELECT {values}, seq, CONCAT('s', seq), seq / 4 "
            f"FROM seq_1_to_{rows}",
        )
    path = env.mapping(
        "".join(f"  - {{name: {t}, from: {t}}}\n" for t in TABLES), backfill="{chunk_size: 9}"
    )
    backfill(load_mapping(path), workers=1)
    return path


def _change(coll: Any, rnd: random.Random, doc: dict[str, Any]) -> str | None:
    """One random change to `doc` in the target; the kind of difference it makes, or None
    when it rewrites the document's bytes only."""
    doc_id = doc["_id"]
    kind = rnd.choice(["value", "remove", "add", "delete", "reorder", "widen", "same"])
    if kind == "value":
        coll.update_one({"_id": doc_id}, {"$set": {"n": doc["n"] + 1}})
    elif kind == "remove":
        coll.update_one({"_id": doc_id}, {"$unset": {"s": ""}})
    elif kind == "add":
        coll.update_one({"_id": doc_id}, {"$set": {"ghost": 1}})
    elif kind == "delete":
        coll.delete_one({"_id": doc_id})
        return "missing"
    elif kind == "reorder":
        fields = [k for k in doc if k != "_id"]
        rnd.shuffle(fields)
        coll.replace_one({"_id": doc_id}, SON((k, doc[k]) for k in fields))
        return None
    elif kind == "widen":
        coll.update_one({"_id": doc_id}, {"$set": {"n": Int64(doc["n"])}})
        return None
    else:
        coll.update_one({"_id": doc_id}, {"$set": {"s": doc["s"]}})
        return None
    return "different"


@pytest.mark.parametrize("seed", [1, 2])
def test_a_full_verification_reports_exactly_the_documents_that_differ(env, seed):
    rnd = random.Random(seed)
    path = _load(env, rows=120)
    oracle: set[tuple[str, str, str]] = set()
    for name in TABLES:
        coll = env.target[name]
        docs = list(coll.find())
        for doc in rnd.sample(docs, 25):
            kind = _change(coll, rnd, doc)
            if kind is not None:
                oracle.add((name, kind, repr(doc["_id"])))
        for i in range(rnd.randint(0, 3)):  # documents no row names
            extra_id: Any = {"ti": 5000 + i, "ts": f"zz{i}", "tc": {"a": 900 + i, "b": 0}}[name]
            coll.insert_one({"_id": extra_id, "n": 0})
            oracle.add((name, "extra", repr(extra_id)))
    for workers in (1, 2):
        res = verify(load_mapping(path), workers=workers, recheck=0, restart=True)
        got = {(d.collection, d.kind, repr(d.id)) for d in res.differences}
        assert got == oracle, (workers, sorted(got ^ oracle))
        assert sum(c.checked for c in res.collections) == 3 * 120


KEYS_NOT_READ_BACK = {
    # BSON dates keep milliseconds: the `_id` names no source key exactly
    "micros": (
        "DATETIME(6)",
        "'2024-01-01' + INTERVAL seq SECOND + INTERVAL 250 MICROSECOND",
        "",
    ),
    # the double MySQL prints of a FLOAT: `WHERE k IN (1.1)` finds no FLOAT 1.1
    "float": ("FLOAT", "seq + 0.1", ""),
    # the `_id` is UTC, the column holds Paris time
    "zone": ("DATETIME", "'2024-01-01' + INTERVAL seq HOUR", ', timezone: "Europe/Paris"'),
}


@pytest.mark.parametrize("kind", sorted(KEYS_NOT_READ_BACK))
def test_a_document_whose_bytes_only_differ_is_no_difference_whatever_the_key(env, kind):
    """Documents whose bytes differ from what their rows become (fields in another order, as
    CDC's `$set` of a field the Transform had left out leaves them; an int stored as a 64-bit
    int) but that hold the same are no difference, and a real difference among them is
    reported as one: also for keys whose `_id` does not name the source row exactly (a
    DATETIME(6) key's microseconds, a FLOAT key, a DATETIME key in another time zone), where
    re-checks, extra documents and the repair find the row by the values its key stands for."""
    column, values, source = KEYS_NOT_READ_BACK[kind]
    env.sql(
        f"CREATE TABLE tk (k {column} PRIMARY KEY, n INT NOT NULL, s VARCHAR(20))",
        f"INSERT INTO tk SELECT {values}, seq, CONCAT('s', seq) FROM seq_1_to_30",
    )
    path = env.mapping("  - {name: tk, from: tk}\n", source=source, backfill="{chunk_size: 9}")
    backfill(load_mapping(path), workers=1)
    coll = env.target.tk
    docs = list(coll.find().sort("_id", 1))
    assert len(docs) == 30
    for doc in docs[3:9]:  # the same content in other bytes
        coll.replace_one({"_id": doc["_id"]}, SON((f, doc[f]) for f in reversed(doc) if f != "_id"))
    for doc in docs[12:15]:
        coll.update_one({"_id": doc["_id"]}, {"$set": {"n": Int64(doc["n"])}})
    changed, gone, ghost = docs[20], docs[25], dict(docs[27])
    coll.update_one({"_id": changed["_id"]}, {"$set": {"n": -1}})
    coll.delete_one({"_id": gone["_id"]})
    env.sql(f"DELETE FROM tk WHERE n = {ghost['n']}")  # its document has no row now
    want = sorted(
        [("different", changed["_id"]), ("missing", gone["_id"]), ("extra", ghost["_id"])]
    )
    for workers in (1, 2):
        res = verify(load_mapping(path), workers=workers, recheck=1, recheck_delay=0, restart=True)
        got = sorted((d.kind, d.id) for d in res.differences)
        assert got == want, (workers, got)
        assert sum(c.checked for c in res.collections) == 29
    # the repair deletes only the document without a row, and puts back what differs
    res = verify(load_mapping(path), repair=True, recheck=0, restart=True)
    assert verify(load_mapping(path), recheck=0, restart=True).ok
    assert coll.count_documents({}) == 29 and coll.find_one({"_id": ghost["_id"]}) is None
    assert coll.find_one({"_id": changed["_id"]})["n"] == changed["n"]
