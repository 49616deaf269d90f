"""An adversarial review of issue 9's convergence fixes found these cases where CDC's MongoDB
state differed from a fresh backfill of the same source (DESIGN.md, "Consistency rules"), or a
guarantee did not hold. Each failed against the code it was written for; each is fixed."""

from __future__ import annotations

import threading
import time

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .cdc_helpers import assert_same_as_fresh_backfill
from .test_verify_holes import _gate


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
    """A draft order (outside `filter`) is published by an UPDATE. CDC upserts only the root
    fields ($setOnInsert items: [], no N:1 `customer`), while a fresh backfill of the same
    source holds both items and the customer: the document is silently incomplete."""
    env.sql(*SHOP)
    path = env.mapping(FILTERED)
    backfill(load_mapping(path), workers=1)
    assert env.target.orders.count_documents({}) == 1
    env.sql("UPDATE orders SET status = 'live' WHERE id = 2")
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_rows_entering_the_filter_through_on_update_cascade_get_documents(env):
    """`cities` holds cities outside country 1. `UPDATE country SET country_id = 1000 WHERE
    country_id = 1` moves cities 10 and 11 into the collection by ON UPDATE CASCADE (no binlog
    event for them). Discovery only looks for documents that already hold the old value, and
    these rows had none, so they never get a document; a fresh backfill has them."""
    env.sql(
        "CREATE TABLE country (country_id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE city (city_id INT PRIMARY KEY, name VARCHAR(20), country_id INT NOT NULL, "
        "FOREIGN KEY (country_id) REFERENCES country(country_id) ON UPDATE CASCADE)",
        "INSERT INTO country VALUES (1, 'A'), (2, 'B')",
        "INSERT INTO city VALUES (10, 'a1', 1), (11, 'a2', 1), (20, 'b1', 2)",
    )
    path = env.mapping(
        "  - {name: countries, from: country}\n"
        '  - {name: cities, from: city, filter: "country_id <> 1"}\n'
    )
    backfill(load_mapping(path), workers=1)
    assert env.target.cities.count_documents({}) == 1
    env.sql("UPDATE country SET country_id = 1000 WHERE country_id = 1")
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_a_child_of_a_parent_outside_the_filter_is_not_a_dead_letter(env):
    """An item added to a draft order (outside the collection's `filter`) belongs to no
    document: a fresh backfill simply has no document for it. CDC parks it in `pending`
    forever (the sweep finds no parent *document* to rebuild but the child row exists), and
    after the pending bound turns a perfectly valid event into a dead letter (DESIGN: dead
    letters are for events that cannot be applied). The bound is shortened here to avoid
    waiting 10 minutes; the default only delays the same outcome."""
    env.sql(*SHOP)
    path = env.mapping(FILTERED)
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO item VALUES (22, 2, 'd')")
    summary = run_cdc(load_mapping(path), mode="until-caught-up", pending_timeout=0.0)
    assert (summary.dead_letters, summary.pending) == (0, 0), [
        d["reason"] for d in env.state.dead_letters.find()
    ]
    assert_same_as_fresh_backfill(env, path)


def test_omitted_nulls_in_dotted_fields_match_a_fresh_backfill(env):
    """`nulls: omit` with dotted field names (`addr.city`, `addr.zip`). Backfill leaves out a
    NULL and writes no `addr` at all when every part is NULL; CDC's root update combines
    `$set: {addr: {...}}` with `$unset: {"addr.zip": ""}`, a path conflict MongoDB refuses:
    a dead letter for a valid UPDATE."""
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
    """Same mapping: every part of `addr` becomes NULL. Backfill writes no `addr`; CDC
    `$unset`s `addr.city` and `addr.zip` and leaves an empty `addr: {}` in the document."""
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


def test_children_before_their_parent_on_a_non_key_join_are_not_lost(env):
    """Issue 9 hole 5 for an embed whose `on` is not the root's primary key (`order_code` ->
    `code`, no foreign key, as in many legacy schemas): an item inserted before its order is
    `$push`ed with `update_many({code: ...})`, which matches nothing, and is forgotten; the
    order's insert then `$setOnInsert`s `items: []`. Fresh backfill embeds the item."""
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


def test_a_one_to_one_table_embedded_as_an_array_goes_through_cdc(env):
    """`many` defaults to true, so a 1:1 table keyed by its parent's key (`profile`, primary
    key `customer_id`) embedded without `many: false` is an array of one. Its elements have no
    key columns left to match on (`match` is empty), so CDC's `arrayFilters: [{}]` is refused
    by the server: a valid INSERT becomes a dead letter instead of an element."""
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


def test_a_non_key_join_column_change_re_reads_the_array(env):
    """The 1:N twin of the N:1 rule: when a root column an embed joins on changes (`code`,
    not the primary key, no foreign key), the array must hold the rows that join on the *new*
    value. CDC re-reads an N:1 sub-document in that case but leaves a 1:N array as it was:
    order 1 keeps the items of code 'A' and never gets the items of code 'B'."""
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


def test_a_waiting_child_released_in_its_batch_is_not_older_than_a_cascade(env):
    """Issue 9 hole 5 (children before their parent, FK checks off) meets a cascade in the
    same batch. The item waits for order 3 in memory; `DELETE FROM product` then deletes it
    by ON DELETE CASCADE (discovery cannot see an element that is not written yet); when
    order 3 arrives, the waiting element is replayed from its stale image. MongoDB ends with
    an item MySQL no longer has."""
    env.sql(
        "CREATE TABLE product (id INT PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(20))",
        "CREATE TABLE item (id INT PRIMARY KEY, order_id INT NOT NULL, product_id INT, "
        "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE, "
        "FOREIGN KEY (product_id) REFERENCES product(id) ON DELETE CASCADE)",
        "INSERT INTO product VALUES (1, 'p1'), (2, 'p2')",
        "INSERT INTO orders VALUES (1, NULL)",
        "INSERT INTO item VALUES (10, 1, 2)",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: items, from: item, on: {order_id: id}, many: true}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO item VALUES (30, 3, 1)",  # its order comes later
        "SET SESSION foreign_key_checks = 1",
        "DELETE FROM product WHERE id = 1",  # cascades: item 30 is gone
        "INSERT INTO orders VALUES (3, 'late')",
    )
    assert env.sql("SELECT COUNT(*) FROM item WHERE id = 30")[0][0] == 0
    _cdc(env, path, batch_seconds=30)
    assert_same_as_fresh_backfill(env, path)


def test_a_backfill_is_not_held_for_ten_minutes_by_an_idle_cdc(env):
    """Issue 9 hole 7's fence: a backfill takes the copy lease and waits until a live CDC
    acknowledges it. CDC acknowledges only when it is about to apply a batch, so a CDC
    following a quiet source (the normal state between maintenance jobs) never does: the
    backfill waits `wait_for_cdc_ack`'s 600 s and then fails with "CDC did not pause for the
    backfill". Nothing needs pausing, so the copy should start at once."""
    env.sql(*SHOP)
    path = env.mapping(FILTERED)
    backfill(load_mapping(path), workers=1)
    stop = threading.Event()
    cdc = threading.Thread(
        target=run_cdc, args=(load_mapping(path),), kwargs={"mode": "follow", "stop": stop}
    )
    cdc.start()
    errors: list[BaseException] = []

    def second_backfill() -> None:
        try:
            backfill(load_mapping(path), workers=1)  # e.g. a collection added to the mapping
        except BaseException as exc:  # reported below
            errors.append(exc)

    bf = threading.Thread(target=second_backfill)
    try:
        deadline = time.monotonic() + 30
        while not (env.state.meta.find_one({"_id": "cdc_status"}) or {}).get("alive_at"):
            assert time.monotonic() < deadline, "CDC did not start"
            time.sleep(0.2)
        time.sleep(2)  # CDC is idle, reading heartbeats
        t0 = time.monotonic()
        bf.start()
        bf.join(timeout=30)
        waited = time.monotonic() - t0
        held = bf.is_alive()
    finally:
        stop.set()
        cdc.join(timeout=60)
        if bf.is_alive() or bf.ident is not None:
            bf.join(timeout=120)
    assert not held, f"the backfill was still waiting for an idle CDC after {waited:.0f} s"
    assert not errors, errors


def test_a_key_change_in_a_filtered_collection_removes_the_old_document(env):
    """Order 1 is renumbered to 7 and then deleted (or leaves the `filter`). With a filter,
    `root()` asks the source whether the row passes it *now*; it does not (the row is gone),
    so CDC deletes the new `_id` 7 and returns before the primary-key-change branch that
    would delete `_id` 1. Document 1 stays in MongoDB for good; MySQL has no such row."""
    env.sql(*SHOP)
    path = env.mapping(FILTERED)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "UPDATE orders SET id = 7 WHERE id = 1",
        "DELETE FROM orders WHERE id = 7",
    )
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_on_delete_cascade_matches_keys_as_mysql_does(env):
    """MySQL matches foreign keys through the column's collation (case-insensitive by
    default): city 2 references country 'US' as 'us', and `DELETE FROM country WHERE code =
    'US'` cascades to it. CDC's discovery looks for documents with exactly 'US' and misses
    city 2, whose document stays although its row is gone (no sweep is requested: the
    condition was known, not derived)."""
    env.sql(
        "CREATE TABLE country (code VARCHAR(2) PRIMARY KEY, name VARCHAR(20))",
        "CREATE TABLE city (id INT PRIMARY KEY, name VARCHAR(20), country_code VARCHAR(2), "
        "FOREIGN KEY (country_code) REFERENCES country(code) ON DELETE CASCADE)",
        "INSERT INTO country VALUES ('US', 'States'), ('FR', 'France')",
        "INSERT INTO city VALUES (1, 'NYC', 'US'), (2, 'LA', 'us'), (3, 'Paris', 'FR')",
    )
    path = env.mapping("  - {name: countries, from: country}\n  - {name: cities, from: city}\n")
    backfill(load_mapping(path), workers=1)
    env.sql("DELETE FROM country WHERE code = 'US'")
    assert env.sql("SELECT COUNT(*) FROM city")[0][0] == 1
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_an_array_ordered_by_a_microsecond_datetime_keeps_the_backfill_order(env):
    """`order_by: [at]` on a DATETIME(6). Backfill orders elements by the full microseconds
    (SQL ORDER BY); BSON keeps milliseconds, so when CDC pushes a new element with `$sort`
    MongoDB re-sorts two older elements of the same millisecond by their key instead, and
    the array no longer equals what a fresh backfill writes."""
    env.sql(
        "CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(20))",
        "CREATE TABLE item (id INT PRIMARY KEY, order_id INT NOT NULL, at DATETIME(6), "
        "FOREIGN KEY (order_id) REFERENCES orders(id) ON DELETE CASCADE)",
        "INSERT INTO orders VALUES (1, NULL)",
        "INSERT INTO item VALUES (1, 1, '2024-01-01 00:00:00.000400'), "
        "(2, 1, '2024-01-01 00:00:00.000100')",
    )
    path = env.mapping(
        "  - name: orders\n    from: orders\n    embed:\n"
        "      - {as: items, from: item, on: {order_id: id}, many: true, order_by: [at]}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO item VALUES (3, 1, '2024-01-02 00:00:00')")
    _cdc(env, path)
    assert_same_as_fresh_backfill(env, path)


def test_the_verify_gate_does_not_take_one_collection_for_a_full_run(env):
    """Issue 9 hole 9: the verify_clean gate accepts "only a full, clean, fresh run".
    `verify --collections a` is recorded with mode "full" (sample 100 %), and the gate
    accepts it although collection `b`, never checked, is missing a document."""
    env.sql(
        "CREATE TABLE a (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE b (id INT PRIMARY KEY, v INT)",
        "INSERT INTO a SELECT seq, seq FROM seq_1_to_50",
        "INSERT INTO b SELECT seq, seq FROM seq_1_to_50",
    )
    path = env.mapping("  - {name: a, from: a}\n  - {name: b, from: b}\n")
    backfill(load_mapping(path), workers=1)
    env.target.b.delete_one({"_id": 7})
    assert verify(load_mapping(path), collections=["a"]).ok
    ok, measured = _gate(path)
    assert not ok, f"gate passed with collection b unverified (and wrong): {measured}"
