"""Children whose parent document does not exist yet (foreign key checks off, a non-key join,
another consumer's order) wait in `pending` and land when the parent comes, in the same run or
a later one; they stop waiting, without a dead letter, when their row or their parent is gone,
and only an orphan whose parent never comes becomes a dead letter after the pending bound."""

from __future__ import annotations

import json

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd
from .helpers import applier_for, make_shop


def test_a_child_before_its_parent_in_one_batch_lands_in_the_same_run(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "START TRANSACTION",
        "INSERT INTO order_items VALUES (900, 1, 1, 2, 3.00), (900, 2, 1, 1, 1.00)",
        "UPDATE order_items SET qty = 5 WHERE order_id = 900 AND line_no = 2",
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (900, 'P', 1, NOW())",
        "COMMIT",
        "SET SESSION foreign_key_checks = 1",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up", batch_seconds=30)
    assert summary.dead_letters == 0
    assert env.state.pending.count_documents({}) == 0
    doc = env.target.orders.find_one({"_id": 900})
    assert [(i["line_no"], i["qty"]) for i in doc["items"]] == [(1, 2), (2, 5)]
    assert_same_as_fresh_backfill(env, path)


def test_a_parent_written_by_another_consumer_releases_waiting_children(env):
    """Pending children live in the state store, not in one process: a parent applied by a
    later run (or another consumer of the group) is found by the periodic sweep too."""
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (903, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.pending.count_documents({}) == 1
    # another writer (a second consumer) creates the parent document directly
    env.sql(
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (903, 'Q', 1, NOW())"
    )
    env.target.orders.insert_one({"_id": 903, "items": []})
    with applier_for(load_mapping(path)) as applier:
        assert applier.sweep_pending() == 1
    assert [i["line_no"] for i in env.target.orders.find_one({"_id": 903})["items"]] == [1]
    assert env.state.pending.count_documents({}) == 0


def test_a_waiting_child_whose_parent_is_deleted_is_dropped_not_dead_lettered(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (901, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.pending.count_documents({}) == 1
    # the parent comes and goes: the child no longer waits for anything
    env.sql(
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (901, 'P', 1, NOW())",
        "DELETE FROM orders WHERE id = 901",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.pending.count_documents({}) == 0
    assert env.state.dead_letters.count_documents({}) == 0
    assert_same_as_fresh_backfill(env, path)


def test_a_waiting_child_whose_row_is_gone_stops_waiting_without_a_dead_letter(env):
    """A child whose row a later statement deleted stops waiting (no dead letter); one whose
    row still exists without a parent is an orphan: it waits, up to the pending bound."""
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (950, 1, 1, 2, 3.00), (951, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
        "DELETE FROM order_items WHERE order_id = 950",
    )
    p = migrator_cmd(
        "cdc", "-m", str(path), "--until-caught-up", "--pending-timeout", "3600", "--json", check=0
    )
    assert json.loads(p.stdout)["pending"] == 1  # 951 is an orphan: it waits (up to the bound)
    waiting = env.state.pending.find_one({})
    assert waiting["parent_id"] == 951
    assert env.state.dead_letters.count_documents({}) == 0


def test_a_waiting_child_that_since_left_its_parent_stops_waiting(env):
    """Children whose rows still exist but no longer name the parent they waited for (the
    reference set to NULL, by ON UPDATE SET NULL or by hand, or moved to a parent that
    exists) belong to no document or to that parent's: none waits for the bound, none
    becomes a dead letter."""
    env.sql(
        "CREATE TABLE parent (id INT PRIMARY KEY, note VARCHAR(10))",
        "CREATE TABLE item (id INT PRIMARY KEY, parent_id INT NULL, qty INT, "
        "FOREIGN KEY (parent_id) REFERENCES parent(id) ON DELETE CASCADE ON UPDATE SET NULL)",
        "INSERT INTO parent VALUES (1, 'a')",
    )
    path = env.mapping(
        "  - name: parents\n    from: parent\n    embed:\n"
        "      - {as: items, from: item, on: {parent_id: id}}\n"
    )
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO item VALUES (10, 7, 1), (11, 7, 2), (12, 8, 3)",  # before parents 7, 8
        "SET SESSION foreign_key_checks = 1",
        "INSERT INTO parent VALUES (8, 'b')",
        "UPDATE parent SET id = 9 WHERE id = 8",  # item 12: parent_id NULL by the cascade
        "UPDATE item SET parent_id = NULL WHERE id = 10",
        "UPDATE item SET parent_id = 1 WHERE id = 11",
    )
    p = migrator_cmd(
        "cdc", "-m", str(path), "--until-caught-up", "--pending-timeout", "3600", "--json", check=0
    )
    assert json.loads(p.stdout)["pending"] == 0
    assert env.state.pending.count_documents({}) == 0
    assert env.state.dead_letters.count_documents({}) == 0
    assert_same_as_fresh_backfill(env, path)


def test_an_orphan_child_becomes_a_dead_letter_after_the_pending_timeout(env):
    path = make_shop(env, orders=3)
    backfill(load_mapping(path), workers=1)
    env.sql(
        "SET SESSION foreign_key_checks = 0",
        "INSERT INTO order_items VALUES (902, 1, 1, 2, 3.00)",
        "SET SESSION foreign_key_checks = 1",
    )
    p = migrator_cmd(
        "cdc", "-m", str(path), "--until-caught-up", "--pending-timeout", "0", "--json", check=1
    )
    out = json.loads(p.stdout)
    assert out["dead_letters"] == 1 and out["pending"] == 0
    dl = env.state.dead_letters.find_one({})
    assert "did not arrive within 0 s" in dl["reason"] and dl["collection"] == "orders"
    assert env.state.pending.count_documents({}) == 0


def test_a_waiting_child_released_in_its_batch_is_not_older_than_a_cascade(env):
    """A child before its parent (FK checks off) meets a cascade in the same batch: the item
    waits for order 3 in memory, `DELETE FROM product` deletes it by ON DELETE CASCADE (no
    binlog event, and no written element for discovery to find), then order 3 arrives: the
    document has no such item (the waiting element is not replayed from its stale image)."""
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
    summary = run_cdc(load_mapping(path), mode="until-caught-up", batch_seconds=30)
    assert summary.dead_letters == 0, [d["reason"] for d in env.state.dead_letters.find()]
    assert_same_as_fresh_backfill(env, path)
