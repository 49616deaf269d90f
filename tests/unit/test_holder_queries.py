"""The queries CDC finds the documents holding a nested row by: the filters on one path are
one `$in` (a path's index answers it; SecantusDB scans every document for any `$or`), and
together the queries find exactly the documents any filter finds."""

from __future__ import annotations

import random
from typing import Any

import pytest

from migrator.model.placement import holder_queries

PATHS = ["items.product_id", "items.product.brand.id", "tags.tag_id", "name"]


def _values(doc: Any, path: list[str]) -> list[Any]:
    """Every value a dotted path reaches, through arrays (MongoDB's traversal)."""
    if not path:
        return [doc]
    if isinstance(doc, list):
        return [v for d in doc for v in _values(d, path)]
    if not isinstance(doc, dict) or path[0] not in doc:
        return [None]  # a missing field equals null
    return _values(doc[path[0]], path[1:])


def _equal(doc: Any, path: str, value: Any) -> bool:
    return value in _values(doc, path.split("."))


def _matches(doc: Any, query: dict[str, Any]) -> bool:
    for k, v in query.items():
        if k == "$or":
            if not any(_matches(doc, q) for q in v):
                return False
        elif isinstance(v, dict) and set(v) == {"$in"}:
            if not any(_equal(doc, k, x) for x in v["$in"]):
                return False
        elif not _equal(doc, k, v):
            return False
    return True


def _doc(rnd: random.Random, i: int) -> dict[str, Any]:
    value = lambda: rnd.choice([None, 1, 2, 3, "a", "b"])  # noqa: E731
    items = [
        {"product_id": value(), "product": {"brand": {"id": value()}}}
        for _ in range(rnd.randrange(4))
    ]
    doc: dict[str, Any] = {"_id": i, "items": items, "tags": [{"tag_id": value()}]}
    if rnd.random() < 0.8:
        doc["name"] = value()
    return doc


@pytest.mark.parametrize("seed", range(40))
def test_the_queries_find_exactly_what_the_filters_find(seed):
    rnd = random.Random(seed)
    docs = [_doc(rnd, i) for i in range(60)]
    filters = []
    for _ in range(rnd.randrange(1, 30)):
        paths = rnd.sample(PATHS, rnd.choice([1, 1, 1, 2]))
        filters.append({p: rnd.choice([None, 1, 2, 3, "a", "b"]) for p in paths})
    queries = holder_queries(filters, batch=rnd.choice([1, 2, 5, 1000]))
    want = {d["_id"] for d in docs if any(_matches(d, f) for f in filters)}
    got = {d["_id"] for d in docs if any(_matches(d, q) for q in queries)}
    assert got == want


def test_filters_on_one_path_are_one_in_and_never_an_or():
    filters = [{"items.product_id": i} for i in range(5)] + [{"tags.tag_id": 9}]
    assert holder_queries(filters) == [
        {"items.product_id": {"$in": [0, 1, 2, 3, 4]}},
        {"tags.tag_id": 9},
    ]
    two = [{"a": 1, "b": 2}, {"a": 3, "b": 4}]
    assert holder_queries(two) == [{"$or": two}]
