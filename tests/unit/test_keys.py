"""One hashable key form for every `_id` (the applier, verify and the tests share it)."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from decimal import Decimal

import bson
from bson.binary import Binary
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from bson.son import SON

from migrator.model.keys import KeyedIds, id_key


def test_equal_ids_in_different_python_types_have_one_key():
    assert id_key(5) == id_key(Int64(5)) == id_key(Decimal128("5")) == id_key(Decimal(5))
    big = 2**64 - 1
    assert id_key(Decimal128(str(big))) == id_key(big)
    assert id_key(b"ab") == id_key(Binary(b"ab"))
    assert {id_key(Decimal128("1.50")), id_key(Decimal("1.5"))} == {id_key(Decimal("1.5"))}


def test_booleans_and_numbers_stay_apart():
    assert id_key(True) != id_key(1) and id_key(False) != id_key(0)


def test_sub_documents_of_every_kind_are_hashable_and_keep_field_order():
    d = {"actor_id": 1, "film_id": Decimal128("2")}
    raw = RawBSONDocument(bson.encode({"_id": d}))["_id"]
    assert id_key(d) == id_key(raw) == id_key(SON(d)) == id_key(OrderedDict(d))
    assert id_key({"a": 1, "b": 2}) != id_key({"b": 2, "a": 1})
    assert hash(id_key({"t": datetime(2024, 1, 1), "k": [1, {"x": Decimal128("3")}]}))


def test_keyed_ids_keep_the_first_value_seen():
    ids = KeyedIds()
    ids.add(Int64(7))
    ids.add(7)
    ids.add({"a": Decimal128("1")})
    assert len(ids) == 2 and 7 in ids and {"a": 1} in ids
    assert ids.values()[0] == 7
