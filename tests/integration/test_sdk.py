"""The dual-write SDK against real servers: routing by phase, MongoDB-first writes that keep
MySQL current after the write switch (reverse sync), the freeze, shadow reads."""

from __future__ import annotations

import threading
import time

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.control import Control, routing_fields
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter, WritesFrozen
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .test_backfill import make_shop
from .test_reverse_sync import switch


def set_phase(env, phase, **extra):
    c = Control(env.state.control)
    doc = c.get()
    c.compare_and_set(doc["version"], {"phase": phase, **routing_fields(phase), **extra})


@pytest.fixture
def sdk(env):
    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    w = DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)
    yield w, path
    w.close()


def test_dual_write_writes_mysql_then_mongo_and_shadow_reads(env, sdk):
    w, path = sdk
    set_phase(env, "dual_write")
    w.insert(
        "orders",
        {
            "id": 500,
            "order_no": "SO-500",
            "customer_id": 2,
            "status": "new",
            "total": "12.50",
            "created_at": "2024-05-01 10:00:00",
        },
    )
    w.insert(
        "order_items",
        {"order_id": 500, "line_no": 1, "product_id": 1, "qty": 2, "unit_price": "6.25"},
    )
    w.update("orders", {"id": 500}, {"status": "paid"})
    assert env.sql("SELECT status FROM orders WHERE id = 500")[0][0] == "paid"
    doc = env.target.orders.find_one({"_id": 500})  # written by the SDK, no CDC run
    assert doc["status"] == "paid" and [i["line_no"] for i in doc["items"]] == [1]
    assert doc["customer"]["id"] == 2
    assert w.get("orders", 500)["status"] == "paid" and w.shadow_mismatches == 0
    env.target.orders.update_one({"_id": 500}, {"$set": {"status": "drifted"}})
    w.get("orders", 500)
    assert w.shadow_mismatches == 1
    from prometheus_client import generate_latest

    text = generate_latest(w.registry).decode()
    assert 'migrator_sdk_shadow_reads_total{result="mismatch"} 1.0' in text
    assert verify(load_mapping(path), collections=["customers", "products"]).ok


def test_after_the_write_switch_the_sdk_writes_mongodb_and_reverse_sync_brings_mysql(env, sdk):
    """After the switch MongoDB is the source of truth: the SDK writes it only, deriving the
    row from the document (not from MySQL, which may lag), and reverse sync (run by CDC)
    writes MySQL in MongoDB's commit order."""
    w, path = sdk
    switch(path)
    # MySQL is behind (reverse sync not run yet): the next update must not bring its stale
    # values into MongoDB
    w.update("orders", {"id": 3}, {"note": "first"})
    w.update("orders", {"id": 3}, {"status": "shipped"})
    assert env.sql("SELECT note FROM orders WHERE id = 3")[0][0] != "first"
    doc = env.target.orders.find_one({"_id": 3})
    assert doc["note"] == "first" and doc["status"] == "shipped"
    w.insert(
        "orders",
        {
            "id": 600,
            "order_no": "SO-600",
            "customer_id": 1,
            "status": "new",
            "total": "1.00",
            "created_at": "2024-06-01 00:00:00",
        },
    )
    w.update("order_items", {"order_id": 5, "line_no": 1}, {"qty": 77})
    w.delete("orders", {"id": 4})
    assert w.get("orders", 600)["orderNo"] == "SO-600"  # reads from MongoDB now
    summary = run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    assert summary.reverse_changes >= 4
    assert env.sql("SELECT note, status FROM orders WHERE id = 3")[0] == ("first", "shipped")
    assert env.sql("SELECT COUNT(*) FROM orders WHERE id = 4")[0][0] == 0
    assert env.sql("SELECT qty FROM order_items WHERE order_id = 5 AND line_no = 1")[0][0] == 77
    res = verify(load_mapping(path))  # MySQL's rows build exactly MongoDB's documents
    assert res.ok, [(d.id, d.fields) for d in res.differences]
    m = Machine(load_mapping(path), default_playbook())
    try:
        rs = m.status()["reverse_sync"]
    finally:
        m.close()
    assert rs["lag_seconds"] == 0 and rs["sdk_failures"] == 0


def test_after_the_switch_an_n1_sub_document_comes_from_mongodb_not_lagging_mysql(env, sdk):
    """A customer renamed in MongoDB (by any writer) before reverse sync ran: an order the
    SDK then writes for that customer embeds the new name, MongoDB's, not MySQL's older one;
    a change the SDK can only make by rebuilding documents from MySQL is refused."""
    w, path = sdk
    switch(path)
    env.target.customers.update_one({"_id": 4}, {"$set": {"name": "Renamed in MongoDB"}})
    w.insert(
        "orders",
        {"id": 700, "order_no": "SO-700", "customer_id": 4, "status": "new",
         "total": "1.00", "created_at": "2024-06-01 00:00:00"},
    )  # fmt: skip
    w.update("orders", {"id": 2}, {"customer_id": 4})
    assert env.sql("SELECT name FROM customers WHERE id = 4")[0][0] != "Renamed in MongoDB"
    for oid in (700, 2):
        assert env.target.orders.find_one({"_id": oid})["customer"]["name"] == (
            "Renamed in MongoDB"
        )
    run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    res = verify(load_mapping(path))
    assert res.ok, [(d.id, d.fields) for d in res.differences]


def test_writes_wait_while_frozen_then_go_or_fail_retryably(env, sdk):
    w, _ = sdk
    set_phase(env, "read_mongo", freeze=True)
    with pytest.raises(WritesFrozen) as e:
        w.update("orders", {"id": 1}, {"note": "frozen"})
    assert e.value.retryable
    assert env.sql("SELECT note FROM orders WHERE id = 1")[0][0] != "frozen"
    threading.Timer(0.2, lambda: set_phase(env, "read_mongo", freeze=False)).start()
    t0 = time.monotonic()
    w.update("orders", {"id": 1}, {"note": "after the freeze"})
    assert time.monotonic() - t0 >= 0.1
    assert env.target.orders.find_one({"_id": 1})["note"] == "after the freeze"


def test_a_failed_secondary_write_is_recorded_for_repair_not_raised(env, sdk):
    w, path = sdk
    set_phase(env, "dual_write")

    def broken(ev):
        raise RuntimeError("mongo is having a moment")

    w._mongo = broken  # the secondary store fails; the request must still succeed
    w.update("orders", {"id": 2}, {"note": "primary only"})
    assert env.sql("SELECT note FROM orders WHERE id = 2")[0][0] == "primary only"
    failure = env.state["sdk_failures"].find_one({})
    assert failure["store"] == "mongo" and failure["key"] == {"id": 2}
    assert "having a moment" in failure["error"] and w.secondary_failures == 1
    res = verify(load_mapping(path), collections=["orders"], repair=True)
    assert res.repaired == 1 and env.target.orders.find_one({"_id": 2})["note"] == "primary only"


def _child_waiting_for(w, order_id):
    """An order_items insert applied as CDC would before its order's document exists (as
    Debezium's topic-per-table order can have it): stored as waiting for order `order_id`."""
    from migrator.model.events import ChangeEvent, Position, Transaction
    from migrator.state.store import now

    row = dict(w._row("order_items", {"order_id": 5, "line_no": 1}))
    row["order_id"] = b"%d" % order_id if isinstance(row["order_id"], bytes) else order_id
    row["line_no"] = b"9" if isinstance(row["line_no"], bytes) else 9
    ev = ChangeEvent("order_items", "insert", None, row)
    res = w.applier.apply([Transaction([ev], Position(), now())])
    assert res.pending == 1
    return row


def test_children_waiting_for_a_root_the_sdk_writes_never_cost_the_write(env, sdk):
    """MySQL first (dual_write), CDC releases them from the root's binlog event. MongoDB first,
    the SDK's write stands and adopts the children's rows: a rebuild of the document from
    MySQL, which lags, lost the SDK's insert (the document was never written)."""
    w, path = sdk
    m = Machine(load_mapping(path), default_playbook(), actor="test@ci")
    walk = iter(("backfill", "sync", "dual_write", "read_mongo", "write_mongo"))
    for target in walk:
        m.step(target, force=True, reason="test")
        if target == "dual_write":
            break
    _child_waiting_for(w, 700)
    order = {
        "order_no": "SO-7",
        "customer_id": 1,
        "status": "new",
        "total": "1.00",
        "created_at": "2024-06-01 00:00:00",
    }
    w.insert("orders", {"id": 700, **order})
    env.sql(
        "INSERT INTO order_items (order_id, line_no, product_id, qty, unit_price) "
        "SELECT 700, 9, product_id, qty, unit_price FROM order_items "
        "WHERE order_id = 5 AND line_no = 1"
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert [i["line_no"] for i in env.target.orders.find_one({"_id": 700})["items"]] == [9]
    assert env.state.pending.count_documents({}) == 0
    for target in walk:  # -> read_mongo, write_mongo
        m.step(target, force=True, reason="test")
    m.close()
    _child_waiting_for(w, 701)
    w.insert("orders", {"id": 701, **order, "order_no": "SO-8"})
    doc = env.target.orders.find_one({"_id": 701})
    # the waiting element's row is not in MySQL (made up above): adopted as it is there, none
    assert doc is not None and doc["orderNo"] == "SO-8" and doc["items"] == []
    assert env.state.pending.count_documents({}) == 0
    run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    assert env.sql("SELECT order_no FROM orders WHERE id = 701")[0][0] == "SO-8"
    res = verify(load_mapping(path))
    assert res.ok, [(d.id, d.fields) for d in res.differences]


def test_an_update_of_a_row_that_does_not_exist_changes_nothing_in_any_phase(env, sdk):
    """MySQL's UPDATE of no row changes nothing; the SDK must not invent a document (or an
    array element) from the update's few values, before or after the switch (reverse sync
    would then insert a row of NULLs into MySQL)."""
    w, path = sdk
    m = Machine(load_mapping(path), default_playbook(), actor="test@ci")
    for target in ("backfill", "sync", "dual_write"):
        m.step(target, force=True, reason="test")
    w.update("orders", {"id": 90001}, {"status": "paid"})
    w.update("order_items", {"order_id": 5, "line_no": 99}, {"qty": 3})
    assert env.target.orders.find_one({"_id": 90001}) is None
    assert w.secondary_failures == 0
    for target in ("read_mongo", "write_mongo"):
        m.step(target, force=True, reason="test")
    m.close()
    items = env.target.orders.find_one({"_id": 5})["items"]
    w.update("orders", {"id": 90002}, {"status": "paid"})
    w.update("order_items", {"order_id": 5, "line_no": 99}, {"qty": 3})
    assert env.target.orders.find_one({"_id": 90002}) is None
    assert env.target.orders.find_one({"_id": 5})["items"] == items
    run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    assert env.sql("SELECT COUNT(*) FROM orders WHERE id IN (90001, 90002)")[0][0] == 0
    assert env.sql("SELECT COUNT(*) FROM order_items WHERE line_no = 99")[0][0] == 0
    res = verify(load_mapping(path))
    assert res.ok, [(d.id, d.fields) for d in res.differences]
