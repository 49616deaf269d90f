"""A chunk read from the source and converted, kept until its comparison in little memory:
per document a 16-byte digest of the bytes it should have, under its key. Keys and digests
are plain numbers, strings and bytes, which Python's garbage collector does not walk: a walk
holding hundreds of thousands of documents' worth ahead (see `checker.PREPARE_AHEAD`) would
otherwise pay for every one at each full collection (measured: holding 300,000 bson Int64
`_id`s made the conversion 1.8 times slower)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import bson
from bson.int64 import Int64

from migrator.model.keys import id_key


def digest(encoded: bytes | memoryview) -> bytes:
    """Two documents' digests are equal when their bytes are (a 128-bit hash)."""
    return hashlib.blake2b(encoded, digest_size=16).digest()


def plain_key(doc_id: Any) -> Any:
    """The `_id` as a key that is also the `_id` (an int, a string or a float, equal to it
    and hashing alike), or None when it is not that simple."""
    kind = type(doc_id)
    if kind is int or kind is str or kind is float:
        return doc_id
    if kind is Int64:
        return int(doc_id)
    return None


@dataclass
class PreparedChunk:
    rows: int  # source rows read
    sums: dict[Any, bytes]  # id key -> digest of the encoded document
    ids: bytes | None  # the `_id`s in `sums`' order, as BSON, when the keys are not them
    bad: dict[Any, tuple[Any, str]]  # id key -> (_id, why the row does not convert)
    keys_held: int = 0  # about the bytes of the keys beyond a small number's

    @classmethod
    def of(
        cls, rows: int, docs: list[dict[str, Any]], bad: dict[Any, tuple[Any, str]]
    ) -> PreparedChunk:
        sums: dict[Any, bytes] = {}
        named: list[Any] = []
        plain = True
        held = 0  # a text key holds its characters; another key its tuples (about 4 times
        # its encoded `_id`, measured), beside the encoded `_id`s themselves
        for d in docs:
            doc_id = d["_id"]
            k = plain_key(doc_id)
            if k is None:
                plain, k = False, id_key(doc_id)
            if k not in sums:
                sums[k] = digest(bson.encode(d))
                named.append(doc_id)
                if k.__class__ is str:
                    held += len(k)
        ids = None if plain else bson.encode({"ids": named})
        held += 4 * len(ids or b"") + sum(len(why) for _doc_id, why in bad.values())
        return cls(rows, sums, ids, bad, held)

    def doc_ids(self) -> dict[Any, Any]:
        """id key -> `_id`, for every converted document."""
        if self.ids is None:
            return {k: k for k in self.sums}
        return dict(zip(self.sums, bson.decode(self.ids)["ids"], strict=True))

    def size(self) -> int:
        """About the bytes held: per document its key, its digest and a dict slot, and what
        long keys (text, composite) and the reasons of rows that do not convert hold."""
        return 150 * (len(self.sums) + len(self.bad)) + len(self.ids or b"") + self.keys_held
