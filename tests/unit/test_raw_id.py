"""The scan reads each document's `_id` from its raw bytes without decoding the rest: the same
value as decoding the document, for every kind of `_id` (sub-documents and an `_id` that is
not first are decoded the ordinary way)."""

from __future__ import annotations

import datetime
import math

import bson
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.raw_bson import RawBSONDocument
from bson.son import SON
from bson.timestamp import Timestamp

from migrator.sink.stream import raw_id

RAW = CodecOptions(document_class=RawBSONDocument)


def _raw(doc):
    return RawBSONDocument(bson.encode(doc), codec_options=RAW)


def test_every_kind_of_id_reads_as_decoding_gives_it():
    ids = [
        5,
        -(2**31),
        Int64(2**40),
        2.5,
        "k0001",
        "",
        "ünï",
        ObjectId(),
        Decimal128("12.50"),
        datetime.datetime(2024, 1, 2, 3, 4, 5, 6000),
        True,
        None,
        MinKey(),
        MaxKey(),
        Timestamp(5, 1),
        {"a": 1, "b": "x"},
        [1, 2],
        b"\x00\x01",
    ]
    for i in ids:
        raw = _raw(SON([("_id", i), ("v", {"deep": [1, 2, 3]})]))
        got, want = raw_id(raw), raw["_id"]
        assert got == want and type(got) is type(want), (i, got, want)


def test_nan_and_an_id_that_is_not_first():
    assert math.isnan(raw_id(_raw({"_id": float("nan"), "v": 1})))
    assert raw_id(_raw(SON([("v", 1), ("_id", 9)]))) == 9
    assert raw_id({"_id": 3}) == 3  # a decoded document as it is
