"""CDC through the mapping's options: a collection `filter`, embeds joined on a non-key
column, a 1:1 table embedded as an array, `nulls: omit` with dotted field names. Every change
ends equal to a fresh backfill of the same source (DESIGN.md, "Consistency rules")."""

from __future__ import annotations

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill


def _cdc(env, path, **kw):
    summary = run_cdc(load_mapping(path), mode="until-caught-up", **kw)
    assert summary.dead_letters == 0, [
        (d["reason"], d.get("payload")) for d in env.state.dead_letters.find()
    ]
    return summary


SHOP = [
    "CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(20))",
    "CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, status VARCHAR(10) NOT NULL, "
    "note VARCHAR(20), FOREIGN KEY (customer_id) REFERENCES customer(id))",
    "CREATE TABLE item (id INT PRIMARY KEY, order_id INT NOT NULL, sku VARCHAR(10), "
    "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE ON UPDATE CASCADE)",
    "INSERT INTO customer VALUES (1, 'Ann'), (2, 'Bob')",
    "INSERT INTO orders VALUES (1, 1, 'live', NULL), (2, 2, 'draft', NULL)",
    "INSERT INTO item VALUES (10, 1, 'a'), (20, 2, 'b'), (21, 2, 'c')",
]

FILTERED = """\
  - name: orders
    from: orders
    filter: "status <> 'draft'"
    embed:
      - {as: customer, from: customer, on: {id: customer_id}, many: false}
      - {as: items, from: item, on: {order_id: id}, many: true}
"""


def test_a_row_entering_the_collection_filter_gets_its_embedded_parts(env):
    """A draft order (outside `filter`) published by an UPDATE gets its whole document, its
    items and its N:1 customer included, not only the root fields."""
    env.sql(*SHOP)
    path = env.mapping(FILTERED)
    backfill(load_mapping(path), workers=1)
    assert env.target.orders.count_documents({}) == 1
    env.sql("UPDATE orders SET status = 'live' WHERE id = 2")
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_a_child_of_a_parent_outside_the_filter_is_not_a_dead_letter(env):
    """An item added to a draft order (outside the collection's `filter`) belongs to no
    document, as in a fresh backfill: it neither waits in `pending` nor becomes a dead letter
    once the pending bound is over (dead letters are for events that cannot be applied). The
    bound is 0 here; the default (10 minutes) would only delay the same outcome."""
    env.sql(*SHOP)
    path = env.mapping(FILTERED)
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO item VALUES (22, 2, 'd')")
    summary = run_cdc(load_mapping(path), mode="until-caught-up", pending_timeout=0.0)
    assert (summary.dead_letters, summary.pending) == (0, 0), [
        d["reason"] for d in env.state.dead_letters.find()
    ]
    assert_same_as_fresh_backfill(env, path)


def test_a_key_change_in_a_filtered_collection_removes_the_old_document(env):
    """Order 1 is renumbered to 7 and then deleted: the document under the old `_id` 1 goes
    too, although the row no longer passes the filter when CDC asks the source about it."""
    env.sql(*SHOP)
    path = env.mapping(FILTERED)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "UPDATE orders SET id = 7 WHERE id = 1",
        "DELETE FROM orders WHERE id = 7",
    )
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_children_before_their_parent_on_a_non_key_join_are_not_lost(env):
    """An embed whose `on` is not the root's primary key (`order_code` -> `code`, no foreign
    key, as in many legacy schemas): an item inserted before its order lands in the order's
    document when the order comes (no document matched the item's `code` when it came)."""
    env.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL UNIQUE, "
        "note VARCHAR(20))",
        "CREATE TABLE item (id INT PRIMARY KEY, order_code VARCHAR(10) NOT NULL, sku VARCHAR(10))",
        "INSERT INTO orders VALUES (1, 'A', NULL)",
        "INSERT INTO item VALUES (10, 'A', 'x')",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: items, from: item, on: {order_code: code}, many: true}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql(
        "INSERT INTO item VALUES (20, 'B', 'y')",
        "INSERT INTO orders VALUES (2, 'B', NULL)",
    )
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_a_non_key_join_column_change_re_reads_the_array(env):
    """The 1:N twin of the N:1 rule: when a root column an embed joins on changes (`code`,
    not the primary key, no foreign key), the array is re-read and holds the rows that join on
    the *new* value (the items of code 'B', not those of 'A')."""
    env.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL UNIQUE, "
        "note VARCHAR(20))",
        "CREATE TABLE item (id INT PRIMARY KEY, order_code VARCHAR(10) NOT NULL, sku VARCHAR(10))",
        "INSERT INTO orders VALUES (1, 'A', NULL)",
        "INSERT INTO item VALUES (10, 'A', 'x'), (20, 'B', 'y')",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: items, from: item, on: {order_code: code}, many: true}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("UPDATE orders SET code = 'B' WHERE id = 1")
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_a_one_to_one_table_embedded_as_an_array_goes_through_cdc(env):
    """`many` defaults to true, so a 1:1 table keyed by its parent's key (`profile`, primary
    key `customer_id`) embedded without `many: false` is an array of one, whose elements have
    no key columns left to match on: its INSERT and UPDATE still become that element (not a
    dead letter for an empty array filter)."""
    env.sql(
        "CREATE TABLE customer (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE profile (customer_id INT PRIMARY KEY, bio VARCHAR(20), "
        "FOREIGN KEY (customer_id) REFERENCES customer(id) ON DELETE CASCADE)",
        "INSERT INTO customer VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO profile VALUES (1, 'one')",
    )
    path = env.mapping(
        "  - name: customers\n    from: customer\n    embed:\n"
        "      - {as: profile, from: profile, on: {customer_id: id}}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql(
        "INSERT INTO profile VALUES (2, 'two')",
        "UPDATE profile SET bio = 'uno' WHERE customer_id = 1",
    )
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_omitted_nulls_in_dotted_fields_match_a_fresh_backfill(env):
    """`nulls: omit` with dotted field names (`addr.city`, `addr.zip`): an UPDATE that makes
    one part NULL leaves it out of `addr`, as backfill does (no path conflict between a `$set`
    of `addr` and an `$unset` of `addr.zip`, no dead letter)."""
    env.sql(
        "CREATE TABLE person (id INT PRIMARY KEY, name VARCHAR(20), city VARCHAR(20), "
        "zip VARCHAR(10))",
        "INSERT INTO person VALUES (1, 'a', 'Oslo', '0150'), (2, 'b', 'Rome', '00100')",
    )
    path = env.mapping(
        "  - name: people\n    from: person\n    nulls: omit\n"
        "    fields: {name: name, addr.city: city, addr.zip: zip}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("UPDATE person SET zip = NULL WHERE id = 1")
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_a_dotted_group_whose_parts_all_become_null_is_omitted_like_backfill(env):
    """Same mapping: every part of `addr` becomes NULL, and the document has no `addr` at all
    (as backfill writes it), not an empty `addr: {}`."""
    env.sql(
        "CREATE TABLE person (id INT PRIMARY KEY, name VARCHAR(20), city VARCHAR(20), "
        "zip VARCHAR(10))",
        "INSERT INTO person VALUES (2, 'b', 'Rome', '00100')",
    )
    path = env.mapping(
        "  - name: people\n    from: person\n    nulls: omit\n"
        "    fields: {name: name, addr.city: city, addr.zip: zip}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("UPDATE person SET city = NULL, zip = NULL WHERE id = 2")
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)
