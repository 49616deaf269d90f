"""Nested documents kept right by CDC from the binlog: an item carrying its product and the
product its brand (depth 3), posts with their tags through a join table (merged) and as an
array of names. Shared rows change once for every document that copies them, rows move
between parents, links come and go, and foreign-key cascades the binlog never carries reach
every level. The expected documents are built here with plain SQL, apart from the product's
Transform, and also compared with a fresh backfill and with verify."""

from __future__ import annotations

from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .cdc_helpers import assert_same_as_fresh_backfill

SCHEMA = [
    "CREATE TABLE brands (id INT PRIMARY KEY, name VARCHAR(30) NOT NULL)",
    "CREATE TABLE products (id INT PRIMARY KEY, sku VARCHAR(10) NOT NULL,"
    " name VARCHAR(30) NOT NULL, brand_id INT NULL,"
    " FOREIGN KEY (brand_id) REFERENCES brands(id) ON DELETE SET NULL)",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(30) NOT NULL)",
    "CREATE TABLE order_items (order_id INT NOT NULL, line_no INT NOT NULL,"
    " product_id INT NOT NULL, qty INT NOT NULL, PRIMARY KEY (order_id, line_no),"
    " KEY (product_id), FOREIGN KEY (product_id) REFERENCES products(id) ON DELETE CASCADE)",
    "CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(30) NOT NULL)",
    "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(30) NOT NULL)",
    "CREATE TABLE post_tags (post_id INT NOT NULL, tag_id INT NOT NULL,"
    " PRIMARY KEY (post_id, tag_id), KEY (tag_id),"
    " FOREIGN KEY (tag_id) REFERENCES tags(id) ON DELETE CASCADE)",
    "INSERT INTO brands VALUES (1, 'acme'), (2, 'globex')",
    "INSERT INTO products VALUES (10, 'A', 'anvil', 1), (11, 'B', 'bell', 1),"
    " (12, 'C', 'cord', 2), (13, 'D', 'drum', NULL)",
    "INSERT INTO orders VALUES (1, 'ann'), (2, 'bob'), (3, 'cy'), (4, 'dee')",
    "INSERT INTO order_items VALUES (1, 1, 10, 1), (1, 2, 11, 2), (2, 1, 10, 3),"
    " (3, 1, 12, 1), (3, 2, 10, 5), (4, 1, 13, 1)",
    "INSERT INTO posts VALUES (1, 'hello'), (2, 'world'), (3, 'empty')",
    "INSERT INTO tags VALUES (5, 'db'), (6, 'mongodb'), (7, 'sql')",
    "INSERT INTO post_tags VALUES (1, 5), (1, 6), (2, 6), (2, 7)",
]

MAPPING = """\
  - name: orders
    from: orders
    embed:
      - as: items
        from: order_items
        on: {order_id: id}
        many: true
        order_by: [line_no]
        exclude: [order_id]
        embed:
          - as: product
            from: products
            on: {id: product_id}
            many: false
            all_columns: false
            fields: {sku: sku, name: name}
            embed:
              - {as: brand, from: brands, on: {id: brand_id}, many: false}
  - name: posts
    from: posts
    embed:
      - as: tags
        from: post_tags
        on: {post_id: id}
        many: true
        exclude: [post_id]
        embed:
          - {from: tags, on: {id: tag_id}, many: false, merge: true}
      - as: tag_names
        from: post_tags
        on: {post_id: id}
        many: true
        values: tag.name
        embed:
          - {as: tag, from: tags, on: {id: tag_id}, many: false}
"""


def expected_orders(env: Any) -> dict[int, dict[str, Any]]:
    brands = {i: {"id": i, "name": n} for i, n in env.sql("SELECT id, name FROM brands")}
    products = {
        i: {"sku": s, "name": n, "brand": brands.get(b) if b is not None else None}
        for i, s, n, b in env.sql("SELECT id, sku, name, brand_id FROM products")
    }
    docs = {
        i: {"_id": i, "id": i, "customer": c, "items": []}
        for i, c in env.sql("SELECT id, customer FROM orders")
    }
    rows = env.sql(
        "SELECT order_id, line_no, product_id, qty FROM order_items ORDER BY order_id, line_no"
    )
    for o, line, pid, qty in rows:
        if o in docs:
            docs[o]["items"].append(
                {"line_no": line, "product_id": pid, "qty": qty, "product": products.get(pid)}
            )
    return docs


def expected_posts(env: Any) -> dict[int, dict[str, Any]]:
    tags = dict(env.sql("SELECT id, name FROM tags"))
    docs = {
        i: {"_id": i, "id": i, "title": t, "tags": [], "tag_names": []}
        for i, t in env.sql("SELECT id, title FROM posts")
    }
    for p, t in env.sql("SELECT post_id, tag_id FROM post_tags ORDER BY post_id, tag_id"):
        if p in docs:
            name = tags.get(t)
            docs[p]["tags"].append({"tag_id": t, "id": t if name else None, "name": name})
            docs[p]["tag_names"].append(name)
    return docs


def assert_converged(env: Any, path: Any) -> None:
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0, [d["reason"] for d in env.state.dead_letters.find()]
    got_orders = {d["_id"]: d for d in env.target.orders.find()}
    assert got_orders == expected_orders(env)
    got_posts = {d["_id"]: d for d in env.target.posts.find()}
    assert got_posts == expected_posts(env)
    assert_same_as_fresh_backfill(env, path)
    res = verify(load_mapping(path))
    assert res.ok, [(d.id, d.fields) for d in res.differences]


@pytest.fixture
def shop(env: Any) -> Any:
    env.sql(*SCHEMA)
    path = env.mapping(MAPPING)
    backfill(load_mapping(path), workers=1)
    assert {d["_id"]: d for d in env.target.orders.find()} == expected_orders(env)
    assert {d["_id"]: d for d in env.target.posts.find()} == expected_posts(env)
    return path


def test_a_shared_row_changed_once_reaches_every_document_that_copies_it(env, shop):
    env.sql(
        "UPDATE products SET name = 'anvil XL' WHERE id = 10",  # in orders 1, 2 and 3
        "UPDATE brands SET name = 'ACME' WHERE id = 1",  # depth 3, through products 10, 11
        "UPDATE tags SET name = 'MongoDB' WHERE id = 6",  # merged and in the values arrays
    )
    assert_converged(env, shop)
    assert env.target.orders.count_documents({"items.product.name": "anvil XL"}) == 3
    assert env.target.posts.find_one({"_id": 2})["tag_names"] == ["MongoDB", "sql"]


def test_rows_moving_between_parents_leave_their_old_place_and_fill_the_new(env, shop):
    env.sql(
        "UPDATE order_items SET order_id = 4, line_no = 2 WHERE order_id = 1 AND line_no = 2",
        "UPDATE order_items SET product_id = 12 WHERE order_id = 2 AND line_no = 1",
        "UPDATE products SET brand_id = 2 WHERE id = 11",
        "UPDATE products SET brand_id = 1 WHERE id = 13",
        "UPDATE post_tags SET post_id = 3 WHERE post_id = 2 AND tag_id = 7",
    )
    assert_converged(env, shop)
    assert [i["line_no"] for i in env.target.orders.find_one({"_id": 4})["items"]] == [1, 2]


def test_links_come_and_go_and_new_rows_appear_at_every_level(env, shop):
    env.sql(
        "INSERT INTO brands VALUES (3, 'initech')",
        "INSERT INTO products VALUES (14, 'E', 'easel', 3)",
        "INSERT INTO orders VALUES (5, 'eve')",
        "INSERT INTO order_items VALUES (5, 2, 14, 1), (5, 1, 10, 2)",
        "DELETE FROM order_items WHERE order_id = 3 AND line_no = 1",
        "INSERT INTO post_tags VALUES (3, 5), (1, 7)",
        "DELETE FROM post_tags WHERE post_id = 1 AND tag_id = 5",
        "INSERT INTO tags VALUES (8, 'nosql')",
        "INSERT INTO post_tags VALUES (2, 8)",
        "DELETE FROM orders WHERE id = 2",
    )
    assert_converged(env, shop)
    # a second round in other batches: the same rows changed again
    env.sql(
        "UPDATE products SET name = 'easel 2' WHERE id = 14",
        "DELETE FROM post_tags WHERE post_id = 2",
        "UPDATE order_items SET qty = 9 WHERE order_id = 5",
    )
    assert_converged(env, shop)


def test_cascades_the_binlog_does_not_carry_reach_nested_rows(env, shop):
    env.sql(
        "DELETE FROM brands WHERE id = 2",  # products.brand_id SET NULL, silently
        "DELETE FROM products WHERE id = 11",  # its order_items deleted, silently
        "DELETE FROM tags WHERE id = 6",  # its post_tags deleted, silently
    )
    assert_converged(env, shop)
    assert [i["line_no"] for i in env.target.orders.find_one({"_id": 1})["items"]] == [1]
    assert env.target.posts.find_one({"_id": 1})["tag_names"] == ["db"]


def test_a_cascade_through_nested_rows_reaches_the_rows_below_them(env):
    """Deleting an order cascades to its items (nested, each with its product) and from them
    to the items' notes (a collection of their own): the notes' keys come from the items the
    orders' documents held, so the notes' documents go too."""
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE orders (id INT PRIMARY KEY)",
        "CREATE TABLE items (id INT PRIMARY KEY, order_id INT NOT NULL, product_id INT,"
        " FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE)",
        "CREATE TABLE notes (id INT PRIMARY KEY, item_id INT NOT NULL, text VARCHAR(20),"
        " FOREIGN KEY (item_id) REFERENCES items (id) ON DELETE CASCADE)",
        "INSERT INTO products VALUES (1, 'p1')",
        "INSERT INTO orders VALUES (1), (2)",
        "INSERT INTO items VALUES (10, 1, 1), (11, 1, NULL), (20, 2, 1)",
        "INSERT INTO notes VALUES (100, 10, 'a'), (110, 11, 'b'), (200, 20, 'c')",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - as: items\n        from: items\n        on: {order_id: id}\n"
        "        embed: [{as: product, from: products, on: {id: product_id}, many: false}]\n"
        "  - {name: notes, from: notes}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("DELETE FROM orders WHERE id = 1")
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0, [d["reason"] for d in env.state.dead_letters.find()]
    assert sorted(d["_id"] for d in env.target.notes.find()) == [200]
    assert_same_as_fresh_backfill(env, path)


def test_verify_names_a_nested_difference_by_its_path_and_repair_rebuilds_it(env, shop):
    env.target.orders.update_one({"_id": 1}, {"$set": {"items.1.product.brand.name": "fake"}})
    env.target.posts.update_one({"_id": 1}, {"$set": {"tag_names": ["db"]}})
    res = verify(load_mapping(shop))
    paths = sorted(f["path"] for d in res.differences for f in d.fields)
    assert paths == ["items[1].product.brand.name", "tag_names"], paths
    verify(load_mapping(shop), repair=True)
    assert {d["_id"]: d for d in env.target.orders.find()} == expected_orders(env)
    assert verify(load_mapping(shop)).ok
