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


def test_the_size_counted_is_about_the_memory_held_whatever_the_key():
    """The walk holds chunks ahead up to a number of bytes by their `size()`: it must not
    count a tenth of what they hold (long text keys, composite keys), or the bound lets
    gigabytes wait."""
    import tracemalloc

    kinds = {
        "int": lambda: list(range(10**9, 10**9 + 3000)),
        "text": lambda: [f"https://example.com/{'p' * 400}/{n:08d}" for n in range(3000)],
        "composite": lambda: [{"tenant": n % 7, "code": f"c{n:08d}", "at": n} for n in range(3000)],
    }
    for kind, ids in kinds.items():
        tracemalloc.start()
        docs = _docs(ids())  # as the walk makes them: the chunk's rows and documents go,
        p = PreparedChunk.of(len(docs), docs, {})  # what the prepared chunk keeps stays
        del docs
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert p.size() >= 0.7 * held, (kind, p.size(), held)
