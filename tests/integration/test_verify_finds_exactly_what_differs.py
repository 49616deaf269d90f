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
