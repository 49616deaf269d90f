"""The dual-write SDK against real servers: routing by phase, MongoDB-first writes that keep
MySQL current after the write switch (reverse sync), the freeze, shadow reads, a secondary
store that goes away; after the switch, the rows it derives from the documents (column
defaults, N:1 sub-documents, type rules, time zones) and the writes it refuses rather than
lose (a child before its parent, a column no document holds, a row only MySQL holds), and
children waiting for their parent across the switch."""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from prometheus_client import generate_latest

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.control import Control, routing_fields
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter, WritesFrozen
from migrator.devtools.sandbox import restart_mongo
from migrator.errors import MigratorError
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.settings import load_mapping
from migrator.state.store import now
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import make_shop, switch, wait_until, walk_to


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


def _frozen_waits(w: DualWriter) -> float:
    """The SDK's own count of writes that met the write switch's freeze."""
    for line in generate_latest(w.registry).decode().splitlines():
        if line.startswith("migrator_sdk_frozen_waits_total "):
            return float(line.split()[1])
    raise AssertionError("no migrator_sdk_frozen_waits_total")


class _Writing(threading.Thread):
    """One SDK call in a thread; its error, if any, is kept for the test."""

    def __init__(self, fn: Any, *args: Any) -> None:
        super().__init__(daemon=True)
        self.fn, self.call_args, self.error = fn, args, None

    def run(self) -> None:
        try:
            self.fn(*self.call_args)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def done(self, timeout: float = 60) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self.fn.__name__} still waiting after {timeout:g} s"
        if self.error is not None:
            raise self.error


def test_writes_wait_while_frozen_then_go_or_fail_retryably(env, sdk):
    w, _ = sdk
    set_phase(env, "read_mongo", freeze=True)
    with pytest.raises(WritesFrozen) as e:
        w.update("orders", {"id": 1}, {"note": "frozen"})
    assert e.value.retryable and _frozen_waits(w) == 1
    assert env.sql("SELECT note FROM orders WHERE id = 1")[0][0] != "frozen"
    # a write made while the freeze holds waits for it to end, then goes
    w.freeze_wait = 30
    write = _Writing(w.update, "orders", {"id": 1}, {"note": "after the freeze"})
    write.start()
    wait_until(lambda: _frozen_waits(w) == 2, "the write to wait for the freeze")
    assert write.is_alive()
    set_phase(env, "read_mongo", freeze=False)
    write.done()
    assert env.target.orders.find_one({"_id": 1})["note"] == "after the freeze"


def test_a_failed_secondary_write_is_recorded_for_repair_not_raised(own_env):
    """In dual_write MySQL is written first. MongoDB's server goes away: the application's
    write still succeeds (MySQL has it), and the failed secondary write is recorded for
    `verify --repair` (once the server is back), which repairs the document."""
    env = own_env
    path = make_shop(env, orders=10)
    # a short server selection: the SDK's attempts fail fast while the server is away
    path.write_text(
        path.read_text().replace(
            "directConnection=true", "directConnection=true&serverSelectionTimeoutMS=300"
        )
    )
    backfill(load_mapping(path), workers=1)
    set_phase(env, "dual_write")
    # the phase is read once, before the outage (as a cached control document would be)
    w = DualWriter(load_mapping(path), control_ttl=3600, freeze_wait=0.5)
    item = {"order_id": 5, "line_no": 1}
    try:
        assert w.control_doc(fresh=True)["phase"] == "dual_write"
        mongo = next(p for p in env.stack.procs if p.name in ("secantusdb", "mongod"))
        assert mongo.stop()  # the secondary store goes away
        write = _Writing(w.update, "order_items", item, {"qty": 77})
        write.start()
        wait_until(lambda: w.secondary_failures == 1, "the MongoDB write to fail")
        # the request has not failed: its failure record waits for the server
        restart_mongo(env.stack, kill=False)
        write.done()
    finally:
        w.close()
    assert env.sql("SELECT qty FROM order_items WHERE order_id = 5 AND line_no = 1") == [(77,)]
    (doc_item,) = [i for i in env.target.orders.find_one({"_id": 5})["items"] if i["line_no"] == 1]
    assert doc_item["qty"] != 77
    failure = env.state["sdk_failures"].find_one({})
    assert failure["store"] == "mongo" and failure["table"] == "order_items"
    assert failure["key"] == item and failure["error"] and failure["repaired"] is False
    assert _sdk_failures(path) == 1  # on-call sees it (status, its metric and alert)
    res = verify(load_mapping(path), collections=["orders"], repair=True)
    (doc_item,) = [i for i in env.target.orders.find_one({"_id": 5})["items"] if i["line_no"] == 1]
    assert res.repaired == 1 and doc_item["qty"] == 77
    assert _sdk_failures(path) == 1  # a run over some collections settles nothing
    assert verify(load_mapping(path)).ok
    assert _sdk_failures(path) == 0  # a clean full verification found both stores equal


def _sdk_failures(path):
    st = migrator_cmd("status", "-m", str(path), "--json", check=0)
    return json.loads(st.stdout)["sdk_failures"]


def _child_waiting_for(w, order_id):
    """An order_items insert applied as CDC would before its order's document exists (as
    Debezium's topic-per-table order can have it): stored as waiting for order `order_id`."""
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
    walk_to(path, "dual_write")
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
    walk_to(path, "write_mongo")
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
    walk_to(path, "dual_write")
    w.update("orders", {"id": 90001}, {"status": "paid"})
    w.update("order_items", {"order_id": 5, "line_no": 99}, {"qty": 3})
    assert env.target.orders.find_one({"_id": 90001}) is None
    assert w.secondary_failures == 0
    walk_to(path, "write_mongo")
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


def test_after_the_switch_the_sdk_refuses_a_child_before_its_parent(env):
    """After the switch the SDK writes MongoDB only: an item written before its order is
    refused (as MySQL's foreign key would refuse it; a waiting element would land by a
    rebuild of the aggregate from MySQL, which lags, and lose the order's document). Written
    parent first, both land."""
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


def test_the_sdks_n1_sub_document_from_mongodb_keeps_the_source_time_zone(env):
    """The mapping says DATETIME columns hold Europe/Paris time: the N:1 sub-document the SDK
    builds from the parent's document after the switch holds the customer's `since` as
    backfill, CDC and verify do (12:00 Paris = 11:00 UTC), not read back as UTC and shifted
    an hour."""
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

    w = DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)
    try:
        w.insert("orders", {"id": 11, "customer_id": 1, "note": "sdk"})
    finally:
        w.close()
    got = env.target.orders.find_one({"_id": 11})["customer"]
    assert got == want, (got, want)


def test_the_sdks_n1_sub_document_follows_its_own_type_rule_not_the_owners(env):
    """The parent's own collection maps `price` as a double; the order's N:1 sub-document uses
    the default rule (Decimal128 with the column's scale): the SDK's sub-document, rebuilt from
    the owner's document after the switch, holds Decimal128("6.50") as backfill, CDC and
    verify do, not the owner's double made Decimal128("6.5")."""
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


def test_sdk_insert_after_the_switch_gets_mysql_column_defaults(env):
    """An application inserts a row that leaves out columns with a DEFAULT (as MySQL allows:
    orders.status DEFAULT 'new', total DEFAULT 0) through the SDK after the switch, when the
    SDK builds the row itself: the document holds MySQL's defaults, and reverse sync makes it
    a MySQL row (an acknowledged write that never reached MySQL would be lost at a
    rollback)."""
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    w = DualWriter(load_mapping(path))
    try:
        w.insert(
            "orders",
            {
                "id": 500,
                "order_no": "SO-500",
                "customer_id": 3,
                "created_at": "2024-05-01 10:00:00",
            },
        )  # acknowledged
    finally:
        w.close()
    doc = env.target.orders.find_one({"_id": 500})
    summary = run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    rows = env.sql("SELECT status, total FROM orders WHERE id = 500")
    dead = [d.get("reason") for d in env.state.dead_letters.find({})]
    assert rows == [("new", Decimal("0.00"))], (rows, dead, summary.dead_letters)
    assert doc["status"] == "new" and doc["total"] == Decimal128("0.00"), doc


def test_an_sdk_write_of_a_column_no_document_holds_is_refused_after_the_switch(env):
    """orders.legacy_flag is excluded from the mapping. After the switch reverse sync writes
    MySQL from the documents, which do not hold it, so a write of it could never reach MySQL:
    it is refused with the reason, and nothing is written; a write of held columns goes."""
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    w = DualWriter(load_mapping(path))
    try:
        with pytest.raises(MigratorError, match="legacy_flag, which no document holds"):
            w.update("orders", {"id": 1}, {"legacy_flag": 1, "note": "with the flag"})
        row = {"id": 600, "order_no": "SO-600", "customer_id": 3, "legacy_flag": 1,
               "created_at": "2024-05-01 10:00:00"}  # fmt: skip
        with pytest.raises(MigratorError, match="legacy_flag, which no document holds"):
            w.insert("orders", row)
        w.update("orders", {"id": 1}, {"note": "without it"})  # a held column: fine
    finally:
        w.close()
    assert env.target.orders.find_one({"_id": 600}) is None
    assert env.target.orders.find_one({"_id": 1})["note"] == "without it"
    run_cdc(load_mapping(path), mode="until-caught-up")  # reverse sync
    assert env.sql("SELECT legacy_flag, note FROM orders WHERE id = 1") == [(0, "without it")]


def test_two_sdk_writers_updating_different_columns_of_one_row_after_the_switch_keep_both(env):
    """Two application processes (two DualWriter instances) update different columns of the
    same hot row after the switch: one sets `status`, the other `note`. Each update sets only
    its own columns (as MySQL's UPDATE does), never the other's older value it read with the
    document. The oracle: once the note writer's write n<k> is acknowledged, nobody else
    writes `note`, so the document never shows an older n<j>."""
    path = make_shop(env, orders=4)
    backfill(load_mapping(path), workers=1)
    switch(path)
    m = load_mapping(path)
    a, b = DualWriter(m), DualWriter(m)
    acked = [-1]
    done = threading.Event()
    errors: list[BaseException] = []
    regressions: list[tuple[int, int]] = []
    lost: list[int] = []
    statuses = ["new", "paid", "shipped", "cancelled"]

    def status_writer():
        try:
            i = 0
            while not done.is_set():
                a.update("orders", {"id": 1}, {"status": statuses[i % 4]})
                i += 1
        except BaseException as exc:
            errors.append(exc)

    def note_writer():
        try:
            for k in range(100):
                b.update("orders", {"id": 1}, {"note": f"n{k}"})
                acked[0] = k
                time.sleep(0.05)  # the other writer goes on meanwhile
                if env.target.orders.find_one({"_id": 1}).get("note") != f"n{k}":
                    lost.append(k)  # gone, and no one will write it again
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def monitor():
        while not done.is_set():
            floor = acked[0]
            note = env.target.orders.find_one({"_id": 1}).get("note") or ""
            j = int(note[1:]) if note[:1] == "n" and note[1:].isdigit() else -1
            if j < floor:
                regressions.append((floor, j))

    ts = [threading.Thread(target=f) for f in (status_writer, note_writer, monitor)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    a.close()
    b.close()
    assert not errors, errors[:1]
    final = env.target.orders.find_one({"_id": 1})["note"]
    assert not lost and not regressions and final == "n99", (
        f"final note {final!r}; acknowledged notes overwritten by the other writer: {lost[:10]} "
        f"({len(lost)} of 100); regressions seen: {len(regressions)}"
    )


# -- children waiting for their parent (`pending`) across the switch: the SDK "leaves" them to
# CDC before it and "adopts" them after it (Applier.stored_pending); a write it cannot make
# without losing one is refused (the application learns it did not happen)

_PC = (
    "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
    "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, v INT NOT NULL, KEY (p_id))",
    "INSERT INTO p VALUES (1, 'one')",
    "INSERT INTO c VALUES (1, 1, 10)",
)
_PS = (
    "  - name: ps\n    from: p\n"
    "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n"
)
# what the SDK says when it refuses a write after the switch
AFTER_THE_SWITCH = "not supported through the SDK after the write switch"


def _setup(env, tables, collections):
    """Copied, CDC caught up, walked to read_mongo; an SDK that reads the phase each write."""
    env.sql(*tables)
    path = env.mapping(collections)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    walk_to(path, "read_mongo")
    return path, DualWriter(load_mapping(path), control_ttl=0, freeze_wait=0.5)


def _reverse_sync(path):
    return run_cdc(load_mapping(path), mode="until-caught-up")


def test_a_child_waiting_across_the_switch_lands_in_the_document_the_sdk_writes(env):
    """No foreign key (MySQL allows it): before the switch the application writes a line
    before its header, through the SDK; the line is committed in MySQL and waits (`pending`)
    for its parent document. After the switch the application writes the header through the
    SDK (MongoDB first): the document adopts the waiting line, and reverse sync keeps the line
    in MySQL (it makes MySQL's child rows equal the array): nothing is lost in either store."""
    path, w = _setup(env, _PC, _PS)
    try:
        # MySQL first: the line is committed; its parent document does not exist: it waits
        w.insert("c", {"id": 2, "p_id": 7, "v": 20})
        assert env.sql("SELECT v FROM c WHERE id = 2") == [(20,)]
        switch(path)
        assert env.state.pending.count_documents({}) >= 1
        w.insert("p", {"id": 7, "name": "seven"})
        doc = env.target.ps.find_one({"_id": 7})
        assert doc is not None and [e["id"] for e in doc["cs"]] == [2], doc
        _reverse_sync(path)
        assert env.sql("SELECT v FROM c WHERE id = 2") == [(20,)], (
            "reverse sync deleted the line the application committed before the switch"
        )
        res = verify(load_mapping(path))
        assert res.ok, [(d.id, d.fields) for d in res.differences]
    finally:
        w.close()


def test_an_update_of_a_waiting_child_after_the_switch_is_refused(env):
    """A line committed before the switch waits for its header document. After the switch
    the application updates the line through the SDK: no document holds it, so the update is
    refused (not acknowledged and dropped); when the header is written the line is adopted
    with the value MySQL has, in both stores."""
    path, w = _setup(env, _PC, _PS)
    try:
        w.insert("c", {"id": 2, "p_id": 7, "v": 20})  # waits for ps 7
        switch(path)
        with pytest.raises(MigratorError, match=f"{AFTER_THE_SWITCH}: the row is in MySQL"):
            w.update("c", {"id": 2}, {"v": 30})
        w.insert("p", {"id": 7, "name": "seven"})  # adopts the waiting line
        _reverse_sync(path)
        doc = env.target.ps.find_one({"_id": 7})
        assert [(e["id"], e["v"]) for e in doc["cs"]] == [(2, 20)], doc
        assert env.sql("SELECT v FROM c WHERE id = 2") == [(20,)]
    finally:
        w.close()


def test_a_delete_of_a_waiting_child_after_the_switch_is_refused(env):
    """As above with a DELETE: refused, not a silent no-op the header's later write would
    undo; the line stays, in MySQL and, adopted, in the header's document."""
    path, w = _setup(env, _PC, _PS)
    try:
        w.insert("c", {"id": 2, "p_id": 7, "v": 20})  # waits for ps 7
        switch(path)
        with pytest.raises(MigratorError, match=f"{AFTER_THE_SWITCH}: the row is in MySQL"):
            w.delete("c", {"id": 2})
        w.insert("p", {"id": 7, "name": "seven"})
        _reverse_sync(path)
        doc = env.target.ps.find_one({"_id": 7})
        assert [e["id"] for e in doc["cs"]] == [2], doc
        assert env.sql("SELECT COUNT(*) FROM c WHERE id = 2") == [(1,)]
    finally:
        w.close()


def test_a_delete_of_a_child_waiting_for_one_of_its_parents_is_refused_after_the_switch(env):
    """`c` is embedded in two collections: `ps` (by p_id) and `qs` (by q_id). A line committed
    before the switch is in qs 1 and waits for ps 7. After the switch the application's
    delete of it through the SDK is refused (its ps 7 document does not exist): pulling it
    from qs 1 alone would let the later write of p 7 adopt it back from MySQL (which reverse
    sync has not reached yet), the deleted row back in MySQL and in ps 7. Both documents and
    MySQL keep the line, and verify is clean."""
    tables = (
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "CREATE TABLE q (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, q_id INT NOT NULL,"
        " v INT NOT NULL, KEY (p_id), KEY (q_id))",
        "INSERT INTO p VALUES (1, 'one')",
        "INSERT INTO q VALUES (1, 'one')",
        "INSERT INTO c VALUES (1, 1, 1, 10)",
    )
    colls = (
        "  - name: ps\n    from: p\n"
        "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n"
        "  - name: qs\n    from: q\n"
        "    embed:\n      - {as: cs, from: c, on: {q_id: id}, many: true, order_by: [id]}\n"
    )
    path, w = _setup(env, tables, colls)
    try:
        w.insert("c", {"id": 2, "p_id": 7, "q_id": 1, "v": 20})  # in qs 1, waits for ps 7
        switch(path)
        assert [e["id"] for e in env.target.qs.find_one({"_id": 1})["cs"]] == [1, 2]
        with pytest.raises(MigratorError, match=AFTER_THE_SWITCH):
            w.delete("c", {"id": 2})
        assert [e["id"] for e in env.target.qs.find_one({"_id": 1})["cs"]] == [1, 2]
        w.insert("p", {"id": 7, "name": "seven"})  # reverse sync has not run yet
        doc = env.target.ps.find_one({"_id": 7})
        assert [e["id"] for e in doc["cs"]] == [2], doc
        _reverse_sync(path)
        assert env.sql("SELECT COUNT(*) FROM c WHERE id = 2") == [(1,)]
        res = verify(load_mapping(path))
        assert res.ok, [(d.id, d.fields) for d in res.differences]
    finally:
        w.close()


def test_a_root_insert_after_the_switch_keeps_children_joined_by_a_non_key_column(env):
    """The embed joins by a unique non-key column (c.p_code -> p.code). A line committed before
    the switch references a header not written yet (CDC does not record it as waiting: only
    children joined by the key wait). After the switch the SDK writes the header: its
    document adopts every child row that names it in MySQL, the line included, and reverse
    sync (which makes MySQL's rows of that scope equal the array) keeps it."""
    tables = (
        "CREATE TABLE p (id INT PRIMARY KEY, code VARCHAR(10) NOT NULL, UNIQUE KEY (code))",
        "CREATE TABLE c (id INT PRIMARY KEY, p_code VARCHAR(10) NOT NULL, v INT NOT NULL,"
        " KEY (p_code))",
        "INSERT INTO p VALUES (1, 'A')",
        "INSERT INTO c VALUES (1, 'A', 10)",
    )
    colls = (
        "  - name: ps\n    from: p\n"
        "    embed:\n      - {as: cs, from: c, on: {p_code: code}, many: true, order_by: [id]}\n"
    )
    path, w = _setup(env, tables, colls)
    try:
        w.insert("c", {"id": 2, "p_code": "X", "v": 20})  # no header 'X' yet
        switch(path)
        w.insert("p", {"id": 7, "code": "X"})
        doc = env.target.ps.find_one({"_id": 7})
        assert doc is not None and [e["id"] for e in doc["cs"]] == [2], doc
        _reverse_sync(path)
        assert env.sql("SELECT v FROM c WHERE id = 2") == [(20,)], (
            "reverse sync deleted the line committed before the switch",
            doc,
        )
    finally:
        w.close()


def test_an_update_of_a_child_of_a_row_outside_the_filter_is_refused_after_the_switch(env):
    """`ps` keeps only active headers (a collection filter). A line of an inactive header has
    no document: MySQL is its only home, and reverse sync never writes it. After the switch
    the SDK refuses the application's update of that line (it is in no document: it would be
    acknowledged and in neither store); MySQL keeps its value."""
    tables = (
        "CREATE TABLE p (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, active TINYINT NOT NULL)",
        "CREATE TABLE c (id INT PRIMARY KEY, p_id INT NOT NULL, v INT NOT NULL, KEY (p_id))",
        "INSERT INTO p VALUES (1, 'one', 1), (3, 'three', 0)",
        "INSERT INTO c VALUES (1, 1, 10), (5, 3, 50)",
    )
    colls = (
        "  - name: ps\n    from: p\n    filter: 'active = 1'\n"
        "    embed:\n      - {as: cs, from: c, on: {p_id: id}, many: true, order_by: [id]}\n"
    )
    path, w = _setup(env, tables, colls)
    try:
        switch(path)
        assert env.target.ps.find_one({"_id": 3}) is None
        with pytest.raises(MigratorError, match=f"{AFTER_THE_SWITCH}: the row is in MySQL"):
            w.update("c", {"id": 5}, {"v": 55})
        _reverse_sync(path)
        assert env.sql("SELECT v FROM c WHERE id = 5") == [(50,)]
    finally:
        w.close()
