"""After the write switch MongoDB is the truth and reverse sync writes nested documents back:
arrays at any depth become child and join rows again (an element removed takes the rows
nested under it along), sub-documents and merged rows give the enclosing row its reference,
and copies (sub-documents of other tables' rows, merged fields, arrays of values) are never
written back: an edit of a copy whose table has no collection of its own is a dead letter
naming its path. The SDK refuses the writes it
could only make by reading MySQL, which lags behind."""

from __future__ import annotations

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.sdk import DualWriter
from migrator.errors import MigratorError
from migrator.model.settings import load_mapping
from migrator.preflight.plan import preflight

from .helpers import switch
from .test_nested_documents_follow_changes import MAPPING, SCHEMA

MUSIC = [
    "CREATE TABLE artists (id INT PRIMARY KEY, name VARCHAR(30) NOT NULL)",
    "CREATE TABLE albums (id INT PRIMARY KEY, artist_id INT NOT NULL, title VARCHAR(30),"
    " KEY (artist_id))",
    "CREATE TABLE tracks (id INT PRIMARY KEY, album_id INT NOT NULL, name VARCHAR(30),"
    " KEY (album_id))",
    "INSERT INTO artists VALUES (1, 'ann'), (2, 'bob')",
    "INSERT INTO albums VALUES (10, 1, 'first'), (11, 1, 'second'), (20, 2, 'third')",
    "INSERT INTO tracks VALUES (100, 10, 'a'), (101, 10, 'b'), (110, 11, 'c'), (111, 11, 'd'),"
    " (200, 20, 'e')",
]

MUSIC_MAPPING = """\
  - name: artists
    from: artists
    embed:
      - as: albums
        from: albums
        on: {artist_id: id}
        many: true
        embed:
          - {as: tracks, from: tracks, on: {album_id: id}, many: true}
"""


def caught_up(env):
    summary = run_cdc(load_mapping(env.path), mode="until-caught-up")
    return summary, [d["reason"] for d in env.state.dead_letters.find()]


@pytest.fixture
def music(env):
    env.sql(*MUSIC)
    env.path = env.mapping(MUSIC_MAPPING)
    backfill(load_mapping(env.path), workers=1)
    switch(env.path)
    return env


def test_arrays_inside_arrays_become_rows_again_and_a_removed_element_takes_its_rows(music):
    env = music
    doc = env.target.artists.find_one({"_id": 1})
    second = next(a for a in doc["albums"] if a["id"] == 11)
    doc["albums"] = [a for a in doc["albums"] if a["id"] != 11]  # album 11 and its tracks go
    doc["albums"][0]["tracks"].append({"id": 102, "album_id": 10, "name": "new"})
    doc["albums"].append(
        {
            "id": 12,
            "artist_id": 1,
            "title": "third",
            "tracks": [
                {"id": 120, "album_id": 12, "name": "x"},
                {"id": 121, "album_id": 12, "name": "y"},
            ],
        }
    )
    env.target.artists.replace_one({"_id": 1}, doc)
    # another artist takes the removed album's place in MongoDB: a move between documents
    env.target.artists.update_one({"_id": 2}, {"$push": {"albums": {**second, "artist_id": 2}}})
    env.target.artists.delete_one({"_id": 2})
    _summary, dead = caught_up(env)
    assert dead == [], dead
    assert env.sql("SELECT id FROM albums ORDER BY id") == [(10,), (12,)]
    assert env.sql("SELECT id, album_id FROM tracks ORDER BY id") == [
        (100, 10),
        (101, 10),
        (102, 10),
        (120, 12),
        (121, 12),
    ]
    assert env.sql("SELECT id FROM artists") == [(1,)]


def test_copies_give_references_and_an_edited_copy_is_a_dead_letter_naming_its_path(env):
    env.sql(*SCHEMA)
    env.path = env.mapping(MAPPING)
    backfill(load_mapping(env.path), workers=1)
    switch(env.path)
    orders, posts = env.target.orders, env.target.posts
    cord = {"sku": "C", "name": "cord", "brand": {"id": 2, "name": "globex"}}
    orders.update_one(
        {"_id": 1},
        {"$push": {"items": {"line_no": 3, "product_id": 12, "qty": 7, "product": cord}}},
    )
    orders.update_one({"_id": 3}, {"$pull": {"items": {"line_no": 1}}})
    orders.update_one({"_id": 2}, {"$set": {"items.0.product.name": "hacked", "customer": "b"}})
    posts.update_one({"_id": 1}, {"$push": {"tags": {"tag_id": 7, "id": 7, "name": "sql"}}})
    posts.update_one({"_id": 2}, {"$pull": {"tags": {"tag_id": 6}}})
    posts.update_one({"_id": 3}, {"$set": {"tag_names": ["made", "up"]}})  # a copy: ignored
    orders.delete_one({"_id": 4})
    _summary, dead = caught_up(env)
    assert env.sql("SELECT order_id, line_no, product_id, qty FROM order_items"
                   " WHERE order_id IN (1, 3) ORDER BY 1, 2") == [
        (1, 1, 10, 1), (1, 2, 11, 2), (1, 3, 12, 7), (3, 2, 10, 5)
    ]  # fmt: skip
    assert env.sql("SELECT COUNT(*) FROM order_items WHERE order_id = 4") == [(0,)]
    assert env.sql("SELECT customer FROM orders WHERE id = 2") == [("b",)]  # the rest applied
    assert env.sql("SELECT name FROM products WHERE id = 10") == [("anvil",)]  # not the copy's
    # products and tags have no collection of their own: copies of them are read-only
    assert len(dead) == 2, dead
    assert any("items.0.product.name" in d for d in dead), dead
    assert any("tag_names" in d for d in dead), dead
    assert env.sql("SELECT post_id, tag_id FROM post_tags ORDER BY 1, 2") == [
        (1, 5),
        (1, 6),
        (1, 7),
        (2, 7),
    ]
    assert env.sql("SELECT name FROM tags ORDER BY id") == [("db",), ("mongodb",), ("sql",)]


def test_the_sdk_refuses_what_it_could_only_write_by_reading_mysql(env):
    """Rows of a nested array are MongoDB's after the switch, but the SDK could only place
    them by reading MySQL: refused. A table only copied keeps its truth in MySQL: written
    there, and its copies stay as they are (read-only, never refreshed from it)."""
    env.sql(*SCHEMA)
    env.path = env.mapping(MAPPING)
    backfill(load_mapping(env.path), workers=1)
    switch(env.path)
    w = DualWriter.from_file(str(env.path))
    try:
        with pytest.raises(MigratorError, match=r"nested in orders\.items"):
            w.update("order_items", {"order_id": 1, "line_no": 1}, {"qty": 9})
        with pytest.raises(MigratorError, match="nests rows read from MySQL"):
            w.insert("orders", {"id": 9, "customer": "zed"})
        w.update("orders", {"id": 1}, {"customer": "ann-marie"})  # its own field: fine
        w.update("products", {"id": 10}, {"name": "renamed"})  # only copied: MySQL's
    finally:
        w.close()
    assert env.target.orders.find_one({"_id": 1})["customer"] == "ann-marie"
    assert env.target.orders.find_one({"_id": 1})["items"][0]["product"]["name"] == "anvil"
    assert env.sql("SELECT name FROM products WHERE id = 10") == [("renamed",)]
    assert env.sql("SELECT qty FROM order_items WHERE order_id = 1 AND line_no = 1") == [(1,)]


MUSIC_PLAYS = [
    "CREATE TABLE artists (id INT PRIMARY KEY, name VARCHAR(30) NOT NULL)",
    "CREATE TABLE albums (id INT PRIMARY KEY, artist_id INT NOT NULL, title VARCHAR(30),"
    " KEY (artist_id))",
    "CREATE TABLE tracks (id INT PRIMARY KEY, album_id INT NOT NULL, name VARCHAR(30),"
    " plays INT NOT NULL DEFAULT 0, KEY (album_id))",
    "INSERT INTO artists VALUES (1, 'ann'), (2, 'bob')",
    "INSERT INTO albums VALUES (10, 1, 'first'), (11, 1, 'second'), (20, 2, 'third')",
    "INSERT INTO tracks VALUES (100, 10, 'a', 5), (101, 10, 'b', 6), (110, 11, 'c', 7),"
    " (111, 11, 'd', 8), (200, 20, 'e', 9)",
]

PLAYS_MAPPING = """\
  - name: artists
    from: artists
    embed:
      - as: albums
        from: albums
        on: {artist_id: id}
        many: true
        embed:
          - {as: tracks, from: tracks, on: {album_id: id}, many: true, exclude: [plays]}
"""


def test_a_track_moved_to_another_album_of_the_same_document_keeps_its_other_columns(env):
    """A track moved from one album to another inside one artist's document is updated where it
    is (every row of the document is written before any is deleted), so the columns the
    mapping leaves out (`plays`) keep MySQL's values, whatever the order of the arrays."""
    env.sql(*MUSIC_PLAYS)
    path = env.mapping(PLAYS_MAPPING)
    backfill(load_mapping(path), workers=1)
    switch(path)
    doc = env.target.artists.find_one({"_id": 1})
    track = doc["albums"][0]["tracks"].pop()  # 101, from album 10
    doc["albums"][1]["tracks"].append({**track, "album_id": 11})
    env.target.artists.replace_one({"_id": 1}, doc)
    assert caught_up_at(env, path) == []
    assert env.sql("SELECT id, album_id, name, plays FROM tracks ORDER BY id") == [
        (100, 10, "a", 5),
        (101, 11, "b", 6),
        (110, 11, "c", 7),
        (111, 11, "d", 8),
        (200, 20, "e", 9),
    ]


def test_a_null_copy_of_a_dangling_reference_does_not_erase_the_reference(env):
    """An item points at product 13, which does not exist: its copy is null. The items keep no
    product_id of their own, so the null copy says nothing about the reference: a change of
    the document elsewhere leaves product_id = 13 in MySQL."""
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20))",
        "CREATE TABLE order_items (order_id INT NOT NULL, line_no INT NOT NULL,"
        " product_id INT NULL, qty INT, PRIMARY KEY (order_id, line_no))",
        "INSERT INTO products VALUES (10, 'anvil')",
        "INSERT INTO orders VALUES (1, 'ann')",
        "INSERT INTO order_items VALUES (1, 1, 10, 1), (1, 2, 13, 2)",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - as: items\n        from: order_items\n        on: {order_id: id}\n"
        "        many: true\n        exclude: [order_id, product_id]\n"
        "        embed: [{as: product, from: products, on: {id: product_id}, many: false}]\n"
    )
    backfill(load_mapping(path), workers=1)
    assert env.target.orders.find_one({"_id": 1})["items"][1]["product"] is None
    switch(path)
    env.target.orders.update_one({"_id": 1}, {"$set": {"customer": "ann-marie"}})
    assert caught_up_at(env, path) == []
    assert env.sql("SELECT customer FROM orders WHERE id = 1") == [("ann-marie",)]
    assert env.sql("SELECT line_no, product_id FROM order_items ORDER BY 1") == [(1, 10), (2, 13)]


def test_a_join_row_whose_far_row_is_missing_does_not_stop_its_document_going_back(env):
    """A join row naming a tag that does not exist has null merged fields and no key of its own
    in the element: it cannot be named, so MySQL keeps it (and no row of that array is
    deleted), and the rest of the document (the title) goes back."""
    env.sql(
        "CREATE TABLE tags (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(20))",
        "CREATE TABLE post_tags (post_id INT NOT NULL, tag_id INT NOT NULL,"
        " PRIMARY KEY (post_id, tag_id))",
        "INSERT INTO tags VALUES (5, 'db')",
        "INSERT INTO posts VALUES (1, 'hello')",
        "INSERT INTO post_tags VALUES (1, 5), (1, 9)",
    )
    path = env.mapping(
        "  - name: posts\n    from: posts\n    embed:\n"
        "      - as: tags\n        from: post_tags\n        on: {post_id: id}\n        many: true\n"
        "        exclude: [post_id, tag_id]\n"
        "        embed: [{from: tags, on: {id: tag_id}, many: false, merge: true}]\n"
    )
    backfill(load_mapping(path), workers=1)
    switch(path)
    env.target.posts.update_one({"_id": 1}, {"$set": {"title": "hello!"}})
    assert caught_up_at(env, path) == []
    assert env.sql("SELECT title FROM posts WHERE id = 1") == [("hello!",)]
    assert env.sql("SELECT post_id, tag_id FROM post_tags ORDER BY 1, 2") == [(1, 5), (1, 9)]


def test_an_edited_copy_in_a_replaced_document_is_a_dead_letter(env):
    """A document replaced whole with an edited copy of a product (products have no collection
    of their own): the copy is compared with its row, not written back, and reported as a dead
    letter naming its path; the rest of the document (the customer) goes back."""
    env.sql(*SCHEMA)
    path = env.mapping(MAPPING)
    backfill(load_mapping(path), workers=1)
    switch(path)
    doc = env.target.orders.find_one({"_id": 2})
    doc["customer"] = "bobby"
    doc["items"][0]["product"]["name"] = "hacked"
    env.target.orders.replace_one({"_id": 2}, doc)
    dead = caught_up_at(env, path)
    assert env.sql("SELECT customer FROM orders WHERE id = 2") == [("bobby",)]
    assert env.sql("SELECT name FROM products WHERE id = 10") == [("anvil",)]
    assert any("items.0.product.name" in d for d in dead), dead


def test_an_edited_copy_in_a_pushed_element_is_a_dead_letter(env):
    """A `$push` of a join element whose merged copy of tag 7 says 'SQL!!' (MySQL: 'sql'): the
    update names the element (`tags.2`), above the copy's fields; the join row is written, the
    copy is compared with its row and reported by path."""
    env.sql(*SCHEMA)
    path = env.mapping(MAPPING)
    backfill(load_mapping(path), workers=1)
    switch(path)
    env.target.posts.update_one(
        {"_id": 1}, {"$push": {"tags": {"tag_id": 7, "id": 7, "name": "SQL!!"}}}
    )
    dead = caught_up_at(env, path)
    assert env.sql("SELECT post_id, tag_id FROM post_tags WHERE post_id = 1 ORDER BY 2") == [
        (1, 5),
        (1, 6),
        (1, 7),
    ]
    assert env.sql("SELECT name FROM tags WHERE id = 7") == [("sql",)]
    assert any("tags.2.name" in d for d in dead), dead


def caught_up_at(env, path):
    """Reverse sync until caught up; the dead letters' reasons."""
    run_cdc(load_mapping(path), mode="until-caught-up")
    return [d["reason"] for d in env.state.dead_letters.find()]


def test_reverse_sync_keeps_a_join_row_whose_key_a_merged_copy_gives_in_another_case(env):
    """A join row (1, 'db') is shown through a merged tag 'DB' (the element keeps no tag_name of
    its own): a change of the post compares the keys as the collation does, and the join row
    stays in MySQL."""
    env.sql(
        "CREATE TABLE tags (name VARCHAR(20) PRIMARY KEY, color VARCHAR(10))",
        "CREATE TABLE posts (id INT PRIMARY KEY, title VARCHAR(20))",
        "CREATE TABLE post_tags (post_id INT NOT NULL, tag_name VARCHAR(20) NOT NULL,"
        " PRIMARY KEY (post_id, tag_name),"
        " FOREIGN KEY (tag_name) REFERENCES tags(name) ON DELETE CASCADE)",
        "INSERT INTO tags VALUES ('DB', 'red'), ('sql', 'blue')",
        "INSERT INTO posts VALUES (1, 'a')",
        "INSERT INTO post_tags VALUES (1, 'db'), (1, 'sql')",
    )
    path = env.mapping(
        "  - name: posts\n    from: posts\n    embed:\n"
        "      - as: tags\n        from: post_tags\n        on: {post_id: id}\n        many: true\n"
        "        exclude: [post_id, tag_name]\n"
        "        embed: [{from: tags, on: {name: tag_name}, many: false, merge: true}]\n"
    )
    backfill(load_mapping(path), workers=1)
    assert [t["name"] for t in env.target.posts.find_one({"_id": 1})["tags"]] == ["DB", "sql"]
    switch(path)
    env.target.posts.update_one({"_id": 1}, {"$set": {"title": "a!"}})
    assert caught_up_at(env, path) == []
    assert env.sql("SELECT title FROM posts") == [("a!",)]
    assert env.sql("SELECT post_id, tag_name FROM post_tags ORDER BY 2") == [
        (1, "db"),
        (1, "sql"),
    ]


def test_reverse_sync_writes_back_an_edit_of_a_nested_element_that_keeps_no_key(env):
    """A nested array that leaves its key column out: plan warns, and after the switch an edit of
    such an element cannot be told to a row: the change is a dead letter naming the element
    (never skipped in silence)."""
    env.sql(
        "CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE orders (id INT PRIMARY KEY, customer VARCHAR(20))",
        "CREATE TABLE items (id INT PRIMARY KEY, order_id INT NOT NULL, product_id INT,"
        " qty INT NOT NULL)",
        "INSERT INTO products VALUES (1, 'anvil')",
        "INSERT INTO orders VALUES (1, 'ann')",
        "INSERT INTO items VALUES (10, 1, 1, 1), (11, 1, 1, 2)",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - as: items\n        from: items\n        on: {order_id: id}\n        many: true\n"
        "        exclude: [id, order_id]\n"
        "        embed: [{as: product, from: products, on: {id: product_id}, many: false}]\n"
    )
    report = preflight(load_mapping(path))
    assert any("do not keep items.id" in c.message for c in report.checks), report.checks
    backfill(load_mapping(path), workers=1)
    switch(path)
    env.target.orders.update_one({"_id": 1}, {"$set": {"items.0.qty": 5}})
    dead = caught_up_at(env, path)
    got = env.sql("SELECT id, qty FROM items ORDER BY id")
    assert got == [(10, 5), (11, 2)] or dead, (got, dead)


def test_reverse_sync_does_not_revert_a_row_with_a_stale_nested_copy_of_it(env):
    """order_items is nested in orders.items (each item with its product) and is a collection of
    its own: its truth after the switch is that collection. A later change of the order does
    not write the order's older copy of the item back over it."""
    env.sql(*SCHEMA)
    path = env.mapping(MAPPING + "  - {name: items, from: order_items}\n")
    backfill(load_mapping(path), workers=1)
    switch(path)
    key = {"order_id": 1, "line_no": 1}
    env.target.items.update_one({"_id": key}, {"$set": {"qty": 9}})
    assert caught_up_at(env, path) == []
    assert env.sql("SELECT qty FROM order_items WHERE order_id = 1 AND line_no = 1") == [(9,)]
    env.target.orders.update_one({"_id": 1}, {"$set": {"customer": "ann-marie"}})
    assert caught_up_at(env, path) == []
    assert env.sql("SELECT customer FROM orders WHERE id = 1") == [("ann-marie",)]
    assert env.target.items.find_one({"_id": key})["qty"] == 9
    assert env.sql("SELECT qty FROM order_items WHERE order_id = 1 AND line_no = 1") == [(9,)]
