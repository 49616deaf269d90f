"""A chunk waiting for its comparison keeps per document its key and a digest: for integer
(bson Int64 included), string and float `_id`s nothing the garbage collector walks (a walk
holds hundreds of thousands ahead); every `_id` comes back equal, composite ones included."""

from __future__ import annotations

import gc

from bson.int64 import Int64

from migrator.model.keys import id_key
from migrator.verify.prepared import PreparedChunk, digest


def _docs(ids):
    return [{"_id": i, "v": n} for n, i in enumerate(ids)]


def test_plain_keys_hold_nothing_the_garbage_collector_walks():
    for ids in ([Int64(1), Int64(2)], [1, 2**40], ["a", "b"], [1.5, 2.0]):
        p = PreparedChunk.of(2, _docs(ids), {})
        assert p.ids is None
        assert not gc.is_tracked(p.sums), ids
        assert not any(gc.is_tracked(k) for k in p.sums)
        assert p.doc_ids() == {id_key(i): i for i in ids}


def test_composite_and_other_ids_come_back_equal_under_their_keys():
    ids = [{"a": 1, "b": Int64(2)}, {"a": 1, "b": 3}]
    p = PreparedChunk.of(2, _docs(ids), {})
    assert p.ids is not None
    back = p.doc_ids()
    assert [back[id_key(i)] for i in ids] == ids
    mixed = PreparedChunk.of(3, _docs([5, {"a": 1}, "x"]), {})
    assert mixed.doc_ids() == {5: 5, id_key({"a": 1}): {"a": 1}, "x": "x"}


def test_the_digest_is_of_the_document_s_bytes():
    import bson

    doc = {"_id": 7, "v": 1, "w": "x"}
    p = PreparedChunk.of(1, [doc], {})
    assert p.sums[7] == digest(bson.encode(doc))
    assert p.sums[7] != digest(bson.encode({"_id": 7, "w": "x", "v": 1}))  # order is bytes
