"""CDC from the binlog against the real servers: every change ends equal to a fresh backfill."""

from __future__ import annotations

import json

from migrator.backfill import backfill
from migrator.cdc.runner import run_cdc
from migrator.config import load_mapping
from migrator.source.position import current_position

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd
from .test_backfill import make_shop


def test_shop_changes_of_every_kind_converge(env):
    path = make_shop(env, orders=30)
    backfill(load_mapping(path), workers=1)
    env.sql(
        # new order with items, in one transaction
        "START TRANSACTION",
        "INSERT INTO orders (id, order_no, customer_id, status, total, created_at) "
        "VALUES (1001, 'SO-1001', 3, 'new', 10.00, '2024-05-01 10:00:00')",
        "INSERT INTO order_items VALUES (1001, 1, 2, 1, 5.00), (1001, 2, 3, 1, 5.00)",
        "COMMIT",
        # root update, item update, item insert, item delete
        "UPDATE orders SET status = 'shipped', note = 'changed' WHERE id = 2",
        "UPDATE order_items SET qty = qty + 10 WHERE order_id = 1001 AND line_no = 2",
        "INSERT INTO order_items VALUES (2, 9, 1, 1, 1.00)",
        "DELETE FROM order_items WHERE order_id = 1001 AND line_no = 1",
        # an item moves to another order (and changes line), an order line is renumbered
        "UPDATE order_items SET order_id = 1001, line_no = 7 WHERE order_id = 2 AND line_no = 9",
        # N:1 parent update fans out to every order of that customer
        "UPDATE customers SET email = 'new@example.com', name = 'Renamed' WHERE id = 3",
        # delete an order: its items go by ON DELETE CASCADE (not in the binlog)
        "DELETE FROM orders WHERE id = 5",
        # delete a customer: orders.customer_id SET NULL (not in the binlog)
        "DELETE FROM customers WHERE id = 4",
        # primary-key change of an order without items
        "INSERT INTO orders (id, order_no, customer_id, created_at) VALUES (2000, 'X', 1, NOW())",
        "UPDATE orders SET id = 2001 WHERE id = 2000",
        # products: insert, update SET column, delete
        "INSERT INTO products VALUES (500, 'SKU-500', 'New', 1.00, 'eco,new')",
        "UPDATE products SET tags = '' WHERE id = 1",
        "DELETE FROM products WHERE id = 500",
    )
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.stopped == "caught up" and summary.dead_letters == 0
    assert summary.events >= 15
    assert_same_as_fresh_backfill(env, path)
    doc = env.target.orders.find_one({"_id": 1001})
    assert [i["line_no"] for i in doc["items"]] == [2, 7]
    assert env.target.orders.count_documents({"customer.id": 4}) == 0
    assert env.target.orders.find_one({"_id": 5}) is None
    # the checkpoint is stored, and a second run has nothing to do
    again = run_cdc(load_mapping(path), mode="until-caught-up")
    assert again.events == 0 and again.stopped == "caught up"


def test_replaying_from_the_backfill_position_converges(env):
    """Changes made while the backfill ran are replayed over documents that already have
    them: idempotent writes end in the same documents (no duplicate element)."""
    path = make_shop(env, orders=20)
    # the position is taken before these changes...
    before = current_position(env.admin)
    env.sql(
        "INSERT INTO order_items VALUES (3, 50, 1, 1, 1.00)",
        "UPDATE orders SET total = 99.99 WHERE id = 3",
    )
    backfill(load_mapping(path), workers=1)
    env.state.meta.update_one({"_id": "backfill_position"}, {"$set": {"position": before}})
    # ...so CDC replays them on top of a copy that already holds them
    summary = run_cdc(load_mapping(path), mode="until-caught-up")
    assert summary.events >= 2
    doc = env.target.orders.find_one({"_id": 3})
    assert [i["line_no"] for i in doc["items"]].count(50) == 1
    assert_same_as_fresh_backfill(env, path)


def test_cdc_cli_until_caught_up_json(env):
    path = make_shop(env, orders=10)
    migrator_cmd("backfill", "-m", str(path), "--json", check=0)
    env.sql("UPDATE orders SET status = 'cancelled' WHERE id = 1")
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--json", check=0)
    s = json.loads(p.stdout)
    assert s["stopped"] == "caught up" and s["applied"] == {"orders update": 1}
    assert s["lag_seconds"] == 0
    assert env.target.orders.find_one({"_id": 1})["status"] == "cancelled"
    status = env.state.meta.find_one({"_id": "cdc_status"})
    assert status["lag_seconds"] == 0
