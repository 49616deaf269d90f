"""Looking documents up by _id: a range scan for dense integer ids, `$in` otherwise; the
result is the same set either way (checked against the server's own `$in`)."""

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
    assert all(d["_id"] is not True for d in find_by_ids(coll, list(range(0, 20))))
