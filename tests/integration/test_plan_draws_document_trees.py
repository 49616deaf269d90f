"""`plan` on a nested mapping: it draws each collection's tree, measures per embedded table
the largest array and how many documents one row change touches, lists the indexes backfill
creates for CDC and the copies that are read-only after the write switch, and blocks nothing
CDC can follow."""

from __future__ import annotations

import json

from .conftest import migrator_cmd
from .test_nested_documents_follow_changes import MAPPING, SCHEMA


def test_plan_draws_the_tree_and_measures_what_a_change_touches(env):
    env.sql(*SCHEMA)
    path = env.mapping(MAPPING)
    p = migrator_cmd("plan", "-m", str(path), "--json", check=0)
    report = json.loads(p.stdout)
    assert report["ok"], report["blocking"]
    orders = next(c for c in report["collections"] if c["name"] == "orders")
    assert orders["tree"] == [
        "orders <- orders",
        "└─ items[] <- order_items (order_id = id, by line_no)",
        "   └─ product <- products (id = product_id)",
        "      └─ brand <- brands (id = brand_id)",
    ]
    nodes = {n["path"]: n for n in orders["nodes"]}
    assert nodes["items"]["largest_array"] == 2
    # product 10 is in orders 1, 2 and 3; brand 1 (products 10, 11) in orders 1, 2 and 3
    assert nodes["items.product"]["docs_per_change_max"] == 3
    assert nodes["items.product.brand"]["docs_per_change_max"] == 3
    assert ["items.product_id"] in orders["indexes"]
    assert "orders.items.product (sub-document of products)" in orders["read_only_copies"]
    posts = next(c for c in report["collections"] if c["name"] == "posts")
    assert "posts.tag_names (values of post_tags)" in posts["read_only_copies"]
    assert any(line.endswith("(merged) <- tags (id = tag_id)") for line in posts["tree"])
    human = migrator_cmd("plan", "-m", str(path), "--no-samples", check=0).stdout
    assert "document tree: orders" in human and "items[] <- order_items" in human
