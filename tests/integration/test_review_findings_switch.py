"""What an adversarial review of the array-order rule and of the SDK and repair after the write
switch found; each test failed before its fix."""

from __future__ import annotations

import json
from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.errors import MigratorError
from migrator.model.bsonorder import sort_documents
from migrator.model.settings import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd
from .test_reverse_sync import switch


def _ids(env: Any, coll: str, pid: int, arr: str) -> list[Any]:
    return [e["id"] for e in env.target[coll].find_one({"_id": pid})[arr]]


def test_an_array_ordered_by_a_set_column_is_the_same_after_cdc_as_after_backfill(env):
    """A SET column becomes an array of strings. `_field_key` orders an array-valued sort
    field by its least element and an empty array first of all, but `$push $sort` compares
    the field's whole value (null < any array; arrays element by element). An array CDC
    touched then differs from the backfill/verify order for the same rows."""
    env.sql(
        "CREATE TABLE p (id INT PRIMARY KEY)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, tags SET('a','b','z'), "
        "FOREIGN KEY (p_id) REFERENCES p(id))",
        "INSERT INTO p VALUES (1)",
        # id 1: NULL, id 2: empty set, id 3: ['a','z'], id 4: ['a']
        "INSERT INTO c VALUES (1, 1, NULL), (2, 1, ''), (3, 1, 'a,z'), (4, 1, 'a')",
    )
    path = env.mapping(
        "  - name: p\n    from: p\n    embed:\n"
        "      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [tags]}\n"
    )
    backfill(load_mapping(path), workers=1)
    backfilled = _ids(env, "p", 1, "cs")
    # one CDC change to an unrelated element: CDC pushes it with $sort over the whole array
    env.sql("INSERT INTO c VALUES (5, 1, 'b')")
    run_cdc(load_mapping(path), mode="until-caught-up")
    after_cdc = _ids(env, "p", 1, "cs")
    assert [i for i in after_cdc if i != 5] == backfilled, (backfilled, after_cdc)
    assert_same_as_fresh_backfill(env, path)
    data = json.loads(migrator_cmd("verify", "-m", str(path), "--json", check=0).stdout)
    assert data["ok"], data


def test_sort_documents_matches_the_servers_push_sort_for_array_fields(env):
    """bsonorder.sort_documents against the server's own `$push {$each: [], $sort}` on the
    same elements (what CDC leaves in the array)."""
    docs = [
        {"id": 1, "t": None},
        {"id": 2, "t": []},
        {"id": 3, "t": ["a", "z"]},
        {"id": 4, "t": ["a"]},
        {"id": 5, "t": ["b"]},
    ]
    env.target.probe.insert_one({"_id": 1, "arr": docs})
    env.target.probe.update_one(
        {"_id": 1}, {"$push": {"arr": {"$each": [], "$sort": {"t": 1, "id": 1}}}}
    )
    server = [d["id"] for d in env.target.probe.find_one({"_id": 1})["arr"]]
    mine = [dict(d) for d in docs]
    sort_documents(mine, [("t",), ("id",)])
    assert [d["id"] for d in mine] == server


def test_the_sdks_n1_sub_document_from_mongodb_keeps_the_source_time_zone(env):
    """_n1_from_mongo inverts the parent's document with DocumentInverse(owner) -- UTC --
    although the mapping says DATETIME columns hold Europe/Paris time; the embed's converter
    then reads that UTC text as Paris time. The SDK's order embeds the customer's `since`
    an hour early: not what backfill, CDC or verify give for the same rows."""
    env.sql(
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40), since DATETIME)",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, note VARCHAR(20))",
        "INSERT INTO customers VALUES (1, 'Ann', '2024-01-15 12:00:00')",
        "INSERT INTO orders VALUES (10, 1, 'x')",
    )
    path = env.tmp / "tz.yaml"
    path.write_text(
        "version: 1\n"
        f'source: {{url: "{env.url}", timezone: "Europe/Paris"}}\n'
        f'target: {{url: "{env.stack.mongo_url}", database: {env.db}}}\n'
        f"state: {{database: {env.state_db}}}\n"
        "collections:\n"
        "  - {name: customers, from: customers}\n"
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: customer, from: customers, on: {id: customer_id}, many: false}\n"
    )
    backfill(load_mapping(path), workers=1)
    want = env.target.orders.find_one({"_id": 10})["customer"]
    assert want["since"].hour == 11  # 12:00 Paris = 11:00 UTC
    switch(path)

    from migrator.cutover.sdk import DualWriter

    w = DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)
    try:
        w.insert("orders", {"id": 11, "customer_id": 1, "note": "sdk"})
    finally:
        w.close()
    got = env.target.orders.find_one({"_id": 11})["customer"]
    assert got == want, (got, want)


def test_verify_repair_after_the_switch_keeps_a_row_that_never_became_a_document(env):
    """A row whose DECIMAL has more digits than Decimal128 holds never became a document (a
    dead letter: MongoDB has nothing for it because the tool could not convert it, not
    because anybody deleted it). After the switch `verify --repair` now treats every
    unconvertible difference as "rewrite from MongoDB"; finding no document it DELETES the
    MySQL row -- the only copy of that data -- and reports the run clean."""
    from migrator.verify.engine import verify

    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, amount DECIMAL(40,0), note VARCHAR(20))",
        "INSERT INTO t VALUES (1, 5, 'fine'), (2, 1234567890123456789012345678901234567, 'big')",
    )
    path = env.mapping("  - {name: t, from: t}\n")
    backfill(load_mapping(path), workers=1)
    assert env.target.t.find_one({"_id": 2}) is None  # dead-lettered by the backfill
    switch(path)
    res = verify(load_mapping(path), repair=True, recheck=1, recheck_delay=0.1)
    left = env.sql("SELECT id, note FROM t ORDER BY id")
    assert left == [(1, "fine"), (2, "big")], (left, res.ok, [d.kind for d in res.differences])


def test_after_the_switch_the_sdk_refuses_a_child_before_its_parent(env):
    """After the switch the SDK writes MongoDB only. An item written before its order waited
    as a pending element, and landed when the order came by a rebuild of the aggregate from
    MySQL, which reverse sync had not brought the order to yet: the order's document was
    lost. Such a write is refused now (MySQL's foreign key would refuse it too)."""
    from migrator.cutover.sdk import DualWriter

    from .test_backfill import make_shop

    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)
    switch(path)
    w = DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)
    item = {"order_id": 900, "line_no": 1, "product_id": 1, "qty": 2, "unit_price": "6.25"}
    try:
        with pytest.raises(MigratorError, match="parent document orders 900 does not exist"):
            w.insert("order_items", item)
        w.insert(
            "orders",
            {"id": 900, "order_no": "SO-900", "customer_id": 1, "status": "new",
             "total": "12.50", "created_at": "2024-06-01 00:00:00"},
        )  # fmt: skip
        w.insert("order_items", item)  # the parent first, as MySQL's foreign key wants
    finally:
        w.close()
    doc = env.target.orders.find_one({"_id": 900})
    dead = [d.get("reason") for d in env.state.dead_letters.find({})]
    assert doc is not None and doc["orderNo"] == "SO-900", (doc, dead)
    assert [i["line_no"] for i in doc["items"]] == [1], doc


def test_the_sdks_n1_sub_document_ignores_an_owners_type_override(env):
    """The parent's own collection maps `price` as a double; the order's N:1 sub-document uses
    the default rule (Decimal128 with the column's scale). _n1_from_mongo rebuilds the
    sub-document from the owner's double (6.5) and gives Decimal128("6.5"), where backfill,
    CDC and verify give Decimal128("6.50") for the same, unchanged row."""
    from migrator.cutover.sdk import DualWriter

    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, price DECIMAL(10,2))",
        "CREATE TABLE olines (id INT PRIMARY KEY, product_id INT, qty INT)",
        "INSERT INTO products VALUES (1, 6.50)",
        "INSERT INTO olines VALUES (10, 1, 1)",
    )
    path = env.mapping(
        "  - {name: products, from: products, fields: {price: {column: price, type: double}}}\n"
        "  - name: olines\n    from: olines\n    embed:\n"
        "      - {as: product, from: products, on: {id: product_id}, many: false}\n"
    )
    backfill(load_mapping(path), workers=1)
    want = env.target.olines.find_one({"_id": 10})["product"]
    switch(path)
    w = DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)
    try:
        w.insert("olines", {"id": 11, "product_id": 1, "qty": 2})
    finally:
        w.close()
    got = env.target.olines.find_one({"_id": 11})["product"]
    assert str(got["price"]) == str(want["price"]), (got, want)
