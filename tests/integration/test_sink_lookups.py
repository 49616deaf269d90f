"""Looking documents up by _id (`$in`, in batches of 1,000): the result is the same set as the
server's own `$in` gives, whatever the id types."""

from __future__ import annotations

import random

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.sink.mongo import find_by_ids


def test_find_by_ids_returns_what_in_returns(env):
    coll = env.target.lookups
    rnd = random.Random(5)
    docs = [{"_id": i} for i in range(1, 3000) if rnd.random() < 0.7]
    docs += [{"_id": Int64(3000)}, {"_id": 3001.0}, {"_id": Decimal128("3002")}, {"_id": "3003"}]
    docs += [{"_id": {"a": 1, "b": "x"}}, {"_id": -7}, {"_id": True}]
    coll.insert_many(docs)
    cases = [
        list(range(1, 1001)),  # dense: one range
        list(range(2990, 3004)),  # dense, numeric types alike (and a string that is not)
        rnd.sample(range(1, 3000), 50),  # sparse: $in
        [{"a": 1, "b": "x"}, -7, 1],  # not all ints: $in
        [1, 2, 3],
        [],
    ]
    for ids in cases:
        want = sorted(str(d["_id"]) for d in coll.find({"_id": {"$in": ids}}))
        got = sorted(str(d["_id"]) for d in find_by_ids(coll, ids))
        assert got == want, ids[:10]
    # a BSON bool is not the integer 1
    found = list(find_by_ids(coll, list(range(0, 20))))
    assert found and all(d["_id"] is not True for d in found)


def test_children_read_by_a_key_range_belong_to_the_chunks_own_roots(env):
    """Children joined by an integer key are read as one range when the chunk's keys are
    dense, and filtered: children of roots outside the chunk or the collection's filter (in
    the range all the same), orphans, and NULL keys stay out; sparse keys use IN."""
    from migrator.backfill.copy import backfill
    from migrator.model.settings import load_mapping
    from migrator.verify.engine import verify

    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY, kind INT NOT NULL)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id BIGINT NULL, v INT NOT NULL)",
    )
    rnd = random.Random(11)
    ids = [i for i in range(1, 400) if i < 200 or rnd.random() < 0.05]  # dense, then sparse
    env.sql(*[f"INSERT INTO p VALUES ({i}, {i % 3})" for i in ids])
    children = [(n, rnd.choice([*ids, 9999, None]), rnd.randint(0, 9)) for n in range(1, 900)]
    env.sql(
        "INSERT INTO c VALUES "
        + ", ".join(f"({n}, {'NULL' if p is None else p}, {v})" for n, p, v in children)
    )
    path = env.mapping(
        "  - name: ps\n    from: p\n    filter: 'kind <> 1'\n"
        "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n",
        backfill="{chunk_size: 37}",
    )
    backfill(load_mapping(path), workers=1)
    for doc in env.target.ps.find():
        want = sorted(n for n, p, _v in children if p == doc["_id"])
        assert [c["id"] for c in doc["cs"]] == want, doc["_id"]
    assert env.target.ps.count_documents({}) == sum(1 for i in ids if i % 3 != 1)
    res = verify(load_mapping(path))
    assert res.ok, res.differences[:3]
