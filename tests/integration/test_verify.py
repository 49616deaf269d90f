"""`migrator verify` against the real servers: clean copies pass; every kind of tampering is
found with its _id and field, and rows that do not convert are differences too; --repair fixes
(toward the phase's source of truth, and stops when that moves under it); --changed checks
only what CDC touched; a live write load gives no false differences; JSON and JUnit agree."""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.machine import Machine
from migrator.cutover.playbook import default_playbook
from migrator.cutover.sdk import DualWriter
from migrator.devtools.shop import ShopWriter
from migrator.errors import CheckFailed
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.progress import NullProgress
from migrator.source.connection import connect
from migrator.verify import engine
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import cdc_in_thread, cli_process, make_shop, tamper, wait_until, walk_to


def test_clean_copy_exits_0_with_json_and_junit(env, tmp_path):
    path = make_shop(env, orders=40)
    backfill(load_mapping(path), workers=1)
    xml = tmp_path / "v.xml"
    p = migrator_cmd("verify", "-m", str(path), "--json", "--junit", str(xml), check=0)
    data = json.loads(p.stdout)
    assert data["ok"] is True and data["totals"]["checked"] == 40 + 30 + 10
    assert data["differences"] == []
    suite = ET.parse(xml).getroot()
    assert suite.get("tests") == "3" and suite.get("failures") == "0"
    assert env.state.verify_runs.count_documents({"ok": True}) == 1


def test_every_kind_of_tampering_is_found_then_repaired(env, tmp_path):
    path = make_shop(env, orders=30)
    backfill(load_mapping(path), workers=1)
    t = env.target
    a, b = [d["_id"] for d in t.orders.find({"items.1": {"$exists": True}, "_id": {"$gt": 7}})][:2]
    t.orders.update_one({"_id": 1}, {"$set": {"status": "tampered"}})  # field changed
    t.orders.update_one({"_id": a}, {"$set": {"items.0.qty": Int64(999)}})  # element changed
    t.orders.update_one({"_id": b}, {"$pop": {"items": 1}})  # element removed
    t.orders.update_one({"_id": 4}, {"$push": {"items": {"line_no": 99, "qty": 1}}})  # added
    t.orders.delete_one({"_id": 5})  # deleted
    t.orders.insert_one({"_id": 9999, "orderNo": "ghost"})  # extra
    t.customers.update_one({"_id": 6}, {"$set": {"id": "6"}})  # "6" for 6
    t.orders.update_one({"_id": 7}, {"$set": {"total": Decimal128("1.5")}})  # precision
    xml = tmp_path / "v.xml"
    p = migrator_cmd("verify", "-m", str(path), "--json", "--junit", str(xml), check=1)
    data = json.loads(p.stdout)
    kinds = {(d["collection"], d["_id"]): d for d in data["differences"]}
    assert kinds[("orders", 1)]["kind"] == "different"
    assert kinds[("orders", 1)]["fields"][0]["path"] == "status"
    assert "tampered" in kinds[("orders", 1)]["fields"][0]["actual"]
    assert kinds[("orders", a)]["fields"][0]["path"] == "items[0].qty"
    assert kinds[("orders", b)]["fields"][0]["path"] == "items"
    assert kinds[("orders", 4)]["fields"][0]["path"] == "items"
    assert kinds[("orders", 5)]["kind"] == "missing"
    assert kinds[("orders", 9999)]["kind"] == "extra"
    f = kinds[("customers", 6)]["fields"][0]
    assert (
        f["path"] == "id" and f["expected"].startswith("int") and f["actual"].startswith("string")
    )
    f = kinds[("orders", 7)]["fields"][0]
    assert f["path"] == "total" and "1.5'" in f["actual"]
    assert data["totals"]["missing"] == 1 and data["totals"]["extra"] == 1
    failures = {c.get("name"): c.find("failure") for c in ET.parse(xml).getroot()}
    assert failures["orders"] is not None and "_id=9999" in failures["orders"].text
    assert failures["products"] is None
    # repair, then a second run is clean
    p = migrator_cmd("verify", "-m", str(path), "--repair", "--json", check=0)
    assert json.loads(p.stdout)["totals"]["repaired"] == 8
    migrator_cmd("verify", "-m", str(path), check=0)
    assert t.orders.find_one({"_id": 9999}) is None


def test_changed_checks_only_keys_cdc_touched(env):
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    assert verify(load_mapping(path)).ok  # a clean full run: --changed starts after it
    env.sql(
        "UPDATE orders SET note = 'touched' WHERE id = 3",
        "INSERT INTO order_items VALUES (4, 50, 1, 1, 1.00)",
    )
    run_cdc(load_mapping(path), mode="until-caught-up")
    env.target.orders.update_one({"_id": 10}, {"$set": {"status": "tampered, not touched"}})
    res = verify(load_mapping(path), changed=True, collections=["orders"])
    assert res.ok and res.collections[0].checked == 2
    env.target.orders.update_one({"_id": 3}, {"$set": {"note": "tampered"}})
    res = verify(
        load_mapping(path), since=__import__("datetime").timedelta(hours=1), collections=["orders"]
    )
    assert not res.ok and [d.id for d in res.differences] == [3]


def test_changed_starts_after_the_last_run_that_covered_each_collection(env):
    """A clean full run of some collections forgets only their touched marks, and `--changed`
    starts each collection after the last run that checked all of it (not after a run of
    other collections, or a sample): a document touched before those runs is still checked."""
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    assert verify(load_mapping(path)).ok  # clean and full: --changed starts after it
    env.sql("UPDATE customers SET name = 'touched' WHERE id = 5")
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.state.touched.count_documents({"c": "customers"}) >= 1
    assert verify(load_mapping(path), collections=["orders"]).ok  # full, clean, orders only
    assert verify(load_mapping(path), sample_pct=1, seed=3).ok  # a sample covers nothing
    assert env.state.touched.count_documents({"c": "customers"}) >= 1
    env.target.customers.update_one({"_id": 5}, {"$set": {"name": "tampered"}})
    res = verify(load_mapping(path), changed=True, recheck=0)
    assert [(d.collection, d.id) for d in res.differences] == [("customers", 5)]
    by = {c.name: c.checked for c in res.collections}
    assert by["customers"] == 1 and by["orders"] == 0


def test_live_writes_while_verifying_give_no_false_differences(env, stack):
    path = make_shop(env, orders=60)
    backfill(load_mapping(path), workers=1)
    conn = connect(parse_mysql_url(env.url))
    writer = ShopWriter(conn, first_order=5000)
    stop = threading.Event()

    def write() -> None:
        # a rate the test's MongoDB server (mongoeco, ~60 writes/s) lets CDC keep up with
        while not stop.is_set():
            writer.step()
            time.sleep(0.3)

    w = threading.Thread(target=write)
    with cdc_in_thread(path):
        w.start()
        try:
            wait_until(lambda: writer.transactions >= 1, "the writes to start")
            before = writer.transactions
            res = verify(load_mapping(path), recheck=10, recheck_delay=0.5)
            during = writer.transactions - before
        finally:
            stop.set()
            w.join()
            conn.close()
    assert during >= 1  # writes really happened while verifying
    assert res.ok, [(d.collection, d.id, d.kind, d.fields) for d in res.differences]


def test_an_interrupted_verification_resumes_from_its_checkpoint(env):
    path = make_shop(env, orders=30)
    backfill(load_mapping(path), workers=1)
    env.target.orders.update_one({"_id": 3}, {"$set": {"status": "tampered"}})

    class CrashAfter(NullProgress):
        def __init__(self, n: int) -> None:
            self.n = n
            self.notes: list[str] = []

        def advance(self, collection: str, rows: int) -> None:
            self.n -= 1
            if self.n == 0:
                raise KeyboardInterrupt

        def note(self, message: str) -> None:
            self.notes.append(message)

    with pytest.raises(KeyboardInterrupt):
        verify(load_mapping(path), chunk_size=5, progress=CrashAfter(3), recheck=0)
    saved = env.state.meta.find_one({"_id": "verify_progress"})
    assert saved["status"] == "running" and saved["collections"]["orders"]["checked"] == 10
    again = CrashAfter(-1)
    res = verify(load_mapping(path), chunk_size=5, progress=again, recheck=0)
    assert any("resuming" in n for n in again.notes)
    by = {c.name: c for c in res.collections}
    assert by["orders"].checked == 30 and by["customers"].checked == 30
    assert [d.id for d in res.differences] == [3]
    assert env.state.meta.find_one({"_id": "verify_progress"}) is None
    fresh = verify(load_mapping(path), chunk_size=5, workers=3, recheck=0, restart=True)
    assert [d.id for d in fresh.differences] == [3] and fresh.collections[0].checked == 30


def test_follow_reports_rows_that_stay_different(env):
    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    args = ("verify", "-m", str(path), "--follow", "--settle", "1", "--json")
    with cli_process(*args, pipe=True) as proc:
        # follow verifies what changes after it started: wait for its first (empty) pass
        wait_until(lambda: env.state.verify_runs.find_one({}), "the first pass")
        env.sql("UPDATE orders SET note = 'followed' WHERE id = 4")
        run_cdc(load_mapping(path), mode="until-caught-up")
        env.target.orders.update_one({"_id": 4}, {"$set": {"note": "drifted after CDC"}})
        # each pass stores its summary, then prints it (SIGTERM ends the loop after that)
        wait_until(
            lambda: env.state.verify_runs.find_one({"differences._id": 4}), "the report of 4"
        )
        assert proc.stop() == 1
        out, err = proc.communicate(timeout=60)
    passes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(
        d["_id"] == 4 and d["fields"][0]["path"] == "note" for p in passes for d in p["differences"]
    ), err


def test_worker_processes_find_exactly_what_one_worker_finds(env):
    """--workers N verifies chunks in N processes: the same differences (random tampering of
    random documents, seeded), the same counts, whatever process checked which chunk."""

    path = make_shop(env, orders=60)
    backfill(load_mapping(path), workers=1)
    tamper(env, 7, 60, count=12, customer=False)

    def run(workers):
        res = verify(load_mapping(path), chunk_size=7, workers=workers, recheck=0, restart=True)
        diffs = sorted((d.collection, str(d.id), d.kind) for d in res.differences)
        return diffs, {c.name: (c.checked, c.chunks) for c in res.collections}

    one, two = run(1), run(2)
    assert one == two
    assert len(one[0]) >= 10 and ("orders", "7777", "extra") in one[0]


def test_rows_that_do_not_convert_are_differences_not_skipped(env):
    env.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, d DECIMAL(40,0))",
        "INSERT INTO big VALUES (1, 1), (2, 1234567890123456789012345678901234567890), (3, 3)",
    )
    path = env.mapping("  - {name: big, from: big}\n")
    backfill(load_mapping(path), workers=1)  # row 2 goes to the dead-letter collection
    p = migrator_cmd("verify", "-m", str(path), "--json", check=1)
    data = json.loads(p.stdout)
    assert data["ok"] is False and data["totals"]["unconvertible"] == 1
    (d,) = data["differences"]
    assert d["_id"] == 2 and d["kind"] == "unconvertible" and "34 significant digits" in d["reason"]


def test_a_verify_repair_running_across_the_write_switch_stops_before_repairing_backwards(
    env, monkeypatch
):
    """`verify --repair` repairs toward the phase's source of truth. A full repair started in
    read_mongo (hours on a big database) that is still running at the write switch stops,
    saying the source of truth moved: it does not rebuild a document from MySQL's row, which
    lacks a MongoDB-first write made after the switch (reverse sync has not written it yet),
    over the authoritative document. The switch and the SDK write happen here when the
    repair reaches its first difference."""
    path = make_shop(env, orders=8)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")
    walk_to(path, "read_mongo")
    env.target.orders.update_one({"_id": 5}, {"$set": {"status": "cancelled"}})  # a difference
    original = engine.Verifier.repair
    fired = []

    def slow_repair(self, plan, diffs, res):
        if not fired:
            fired.append(1)
            mm = Machine(load_mapping(path), default_playbook(), actor="switch@ci")
            try:
                mm.step("write_mongo", force=True, reason="the switch, while verify runs")
            finally:
                mm.close()
            w = DualWriter(load_mapping(path))
            try:
                w.update("orders", {"id": 5}, {"note": "written after the switch"})  # acked
            finally:
                w.close()
        return original(self, plan, diffs, res)

    monkeypatch.setattr(engine.Verifier, "repair", slow_repair)
    with pytest.raises(CheckFailed, match="source of truth moved"):
        verify(load_mapping(path), repair=True, recheck=0)
    assert fired
    assert env.state.control.find_one({"_id": "control"})["phase"] == "write_mongo"
    doc = env.target.orders.find_one({"_id": 5})
    assert doc.get("note") == "written after the switch", doc.get("note")
