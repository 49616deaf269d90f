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
    # the paths CDC finds nested rows by are indexed
    indexed = [[k for k, _ in i["key"]] for i in env.target.orders.index_information().values()]
    assert ["items.product_id"] in indexed, indexed
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


def test_documents_are_found_through_mysql_when_they_keep_no_link_column(env):
    """`films` leave `language_id` out and keep only the language's name: no field of the
    documents names the language, so CDC finds the films a language change reaches through
    MySQL; and a film's own language change re-reads its nested language."""
    env.sql(
        "CREATE TABLE language (language_id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "CREATE TABLE film (film_id INT PRIMARY KEY, title VARCHAR(20) NOT NULL,"
        " language_id INT NOT NULL, KEY (language_id))",
        "INSERT INTO language VALUES (1, 'English'), (2, 'Italian')",
        "INSERT INTO film VALUES (1, 'One', 1), (2, 'Two', 1), (3, 'Three', 2)",
    )
    path = env.mapping(
        "  - name: films\n    from: film\n    exclude: [language_id]\n    embed:\n"
        "      - {as: language, from: language, on: {language_id: language_id}, many: false,"
        " all_columns: false, fields: {name: name}}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql(
        "UPDATE language SET name = 'British' WHERE language_id = 1",
        "UPDATE film SET language_id = 2 WHERE film_id = 2",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.dead_letters == 0, [d["reason"] for d in env.state.dead_letters.find()]
    names = {d["_id"]: d["language"]["name"] for d in env.target.films.find()}
    assert names == {1: "British", 2: "Italian", 3: "Italian"}
    assert_same_as_fresh_backfill(env, path)


def dead_letters(env: Any) -> list[str]:
    return [d["reason"] for d in env.state.dead_letters.find()]


def caught_up(env: Any, path: Any) -> list[str]:
    """CDC (before the switch) or reverse sync (after it) until caught up; the dead letters."""
    run_cdc(load_mapping(path), mode="until-caught-up")
    return dead_letters(env)


def collated(collation: str = "", brand: str = "'acme'", more: str = "") -> list[str]:
    """Orders, their items, each item's product and the product's brand joined on a text code
    (with `collation` on both sides, and the product's code `brand`)."""
    c = f" COLLATE {collation}" if collation else ""
    fk = "" if "nopad" in collation else ", FOREIGN KEY (brand_code) REFERENCES brands(code)"
    return [
        f"CREATE TABLE brands (code VARCHAR(10){c} PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20),"
        f" brand_code VARCHAR(10){c}{fk})",
        "CREATE TABLE orders (id INT PRIMARY KEY)",
        "CREATE TABLE items (id INT PRIMARY KEY, order_id INT, product_id INT)",
        "INSERT INTO brands VALUES ('ACME', 'acme inc')",
        f"INSERT INTO products VALUES (1, 'anvil', {brand}){more}",
        "INSERT INTO orders VALUES (1)",
        "INSERT INTO items VALUES (10, 1, 1)",
    ]


COLLATED = collated()

COLLATED_MAPPING = (
    "  - name: orders\n    from: orders\n    embed:\n"
    "      - as: items\n        from: items\n        on: {order_id: id}\n        many: true\n"
    "        embed:\n"
    "          - as: product\n            from: products\n            on: {id: product_id}\n"
    "            many: false\n"
    "            embed: [{as: brand, from: brands, on: {code: brand_code}, many: false}]\n"
)


def first_brand_as_mysql_joins(env, expected: str | None) -> None:
    """MySQL's own join gives item 10's product the brand `expected`; a backfill nests the
    same."""
    path = env.mapping(COLLATED_MAPPING)
    assert env.sql(
        "SELECT b.name FROM items i JOIN products p ON p.id = i.product_id"
        " LEFT JOIN brands b ON b.code = p.brand_code WHERE i.id = 10"
    ) == [(expected,)]
    backfill(load_mapping(path), workers=1)
    product = env.target.orders.find_one({"_id": 1})["items"][0]["product"]
    want = None if expected is None else {"code": "ACME", "name": expected}
    assert product["brand"] == want, product


def test_a_nested_parent_matched_through_the_collation_is_embedded(env):
    """MySQL's foreign key accepts products.brand_code = 'acme' for brands.code = 'ACME' (a
    case-insensitive collation) and its join matches them: the product nested in each item
    carries its brand, as the join says."""
    env.sql(*COLLATED)
    first_brand_as_mysql_joins(env, "acme inc")


def test_a_cascade_deleting_an_element_whose_value_is_null_shrinks_the_array_of_values(env):
    """An array of values holds a null (a product without a name). Deleting that product deletes
    its item by ON DELETE CASCADE, which the binlog does not carry: the documents holding a null
    value are rebuilt, and the array loses the element."""
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20) NULL)",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20))",
        "CREATE TABLE order_items (order_id INT NOT NULL, line_no INT NOT NULL,"
        " product_id INT NOT NULL, PRIMARY KEY (order_id, line_no),"
        " FOREIGN KEY (product_id) REFERENCES products(id) ON DELETE CASCADE)",
        "INSERT INTO products VALUES (10, 'anvil'), (11, NULL)",
        "INSERT INTO orders VALUES (1, 'ann')",
        "INSERT INTO order_items VALUES (1, 1, 10), (1, 2, 11)",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - as: product_names\n        from: order_items\n        on: {order_id: id}\n"
        "        many: true\n        values: product.name\n"
        "        embed: [{as: product, from: products, on: {id: product_id}, many: false}]\n"
    )
    backfill(load_mapping(path), workers=1)
    assert env.target.orders.find_one({"_id": 1})["product_names"] == ["anvil", None]
    env.sql("DELETE FROM products WHERE id = 11")  # order_items (1, 2) goes by cascade
    assert caught_up(env, path) == []
    assert env.target.orders.find_one({"_id": 1})["product_names"] == ["anvil"]


def test_a_cascade_through_a_text_key_matched_by_collation_reaches_nested_join_rows(env):
    """Deleting tag 'DB' cascades to the join row (1, 'db') (MySQL matches through the
    collation): the sweep for references left dangling unwinds the nested arrays and finds it,
    so post 1 loses the tag as MySQL did."""
    env.sql(
        "CREATE TABLE tags (name VARCHAR(20) PRIMARY KEY, color VARCHAR(10))",
        "CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(20))",
        "CREATE TABLE post_tags (post_id INT NOT NULL, tag_name VARCHAR(20) NOT NULL,"
        " PRIMARY KEY (post_id, tag_name),"
        " FOREIGN KEY (tag_name) REFERENCES tags(name) ON DELETE CASCADE)",
        "INSERT INTO tags VALUES ('DB', 'red'), ('sql', 'blue')",
        "INSERT INTO posts VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO post_tags VALUES (1, 'db'), (1, 'sql'), (2, 'DB')",
    )
    path = env.mapping(
        "  - name: posts\n    from: posts\n    embed:\n"
        "      - as: tags\n        from: post_tags\n        on: {post_id: id}\n        many: true\n"
        "        exclude: [post_id]\n"
        "        embed: [{from: tags, on: {name: tag_name}, many: false, merge: true}]\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("DELETE FROM tags WHERE name = 'DB'")
    assert env.sql("SELECT post_id, tag_name FROM post_tags ORDER BY 1, 2") == [(1, "sql")]
    assert caught_up(env, path) == []
    assert env.target.posts.find_one({"_id": 2})["tags"] == []
    assert [t["tag_name"] for t in env.target.posts.find_one({"_id": 1})["tags"]] == ["sql"]


def test_cdc_reaches_a_nested_parent_matched_through_the_collation(env):
    """A brand 'ACME' is nested under a product whose brand_code is 'acme' (MySQL's
    case-insensitive collation matches them): renaming the brand reaches the document, found
    through MySQL as well as by the exact value."""
    env.sql(*COLLATED)
    path = env.mapping(COLLATED_MAPPING)
    backfill(load_mapping(path), workers=1)
    env.sql("UPDATE brands SET name = 'ACME Corp' WHERE code = 'ACME'")
    assert caught_up(env, path) == []
    product = env.target.orders.find_one({"_id": 1})["items"][0]["product"]
    assert product["brand"] == {"code": "ACME", "name": "ACME Corp"}, product


def test_verify_changed_rechecks_a_document_a_nested_change_reached(env):
    """After a clean full verification the brand is renamed: CDC reaches the document
    and marks it touched, so `verify --changed` re-checks it and finds it equal to MySQL."""
    env.sql(*COLLATED)
    path = env.mapping(COLLATED_MAPPING)
    backfill(load_mapping(path), workers=1)
    assert caught_up(env, path) == []
    assert verify(load_mapping(path)).ok
    env.sql("UPDATE brands SET name = 'ACME Corp' WHERE code = 'ACME'")
    assert caught_up(env, path) == []
    changed = verify(load_mapping(path), changed=True)
    doc = env.target.orders.find_one({"_id": 1})
    assert doc["items"][0]["product"]["brand"]["name"] == "ACME Corp"
    assert changed.ok and sum(c.checked for c in changed.collections) >= 1, changed


def test_a_nested_parent_matched_with_trailing_spaces_by_a_pad_space_collation(env):
    """A PAD SPACE collation (MariaDB's utf8mb4_bin) matches 'ACME ' to 'ACME' in the foreign key
    and the join: the nested brand is there, as the join says."""
    env.sql(*collated("utf8mb4_bin", "'ACME '"))
    first_brand_as_mysql_joins(env, "acme inc")


def test_a_nested_join_on_a_no_pad_collation_keeps_trailing_spaces_apart(env):
    """A NO PAD collation does not match 'acme ' to 'ACME': no brand is nested where MySQL's join
    finds none, even when another product of the chunk brings the brand row in."""
    # product 2 brings the brand row into the chunk's read
    env.sql(*collated("utf8mb4_general_nopad_ci", "'acme '", ", (2, 'bell', 'ACME')"))
    env.sql("INSERT INTO items VALUES (11, 1, 2)")
    first_brand_as_mysql_joins(env, None)
    items = env.target.orders.find_one({"_id": 1})["items"]
    assert items[1]["product"]["brand"] == {"code": "ACME", "name": "acme inc"}, items
