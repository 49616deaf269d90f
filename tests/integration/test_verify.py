"""`migrator verify` against the real servers: clean copies pass; every kind of tampering is
found with its _id and field; --repair fixes; --changed checks only what CDC touched; a live
write load gives no false differences; JSON and JUnit agree."""

from __future__ import annotations

import json
import threading
import time
import xml.etree.ElementTree as ET

from bson.decimal128 import Decimal128
from bson.int64 import Int64

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.devtools.shop import ShopWriter
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .test_backfill import make_shop


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
    verify(load_mapping(path))  # a clean full run: --changed starts after it
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
    verify(load_mapping(path))  # clean and full: --changed starts after it
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
    cdc_stop = threading.Event()

    def write() -> None:
        # a rate the test's MongoDB server (mongoeco, ~60 writes/s) lets CDC keep up with
        while not stop.is_set():
            writer.step()
            time.sleep(0.3)

    cdc = threading.Thread(target=lambda: run_cdc(load_mapping(path), mode="follow", stop=cdc_stop))
    w = threading.Thread(target=write)
    cdc.start()
    w.start()
    try:
        time.sleep(1.0)
        res = verify(load_mapping(path), recheck=10, recheck_delay=0.5)
    finally:
        stop.set()
        w.join()
        time.sleep(2)
        cdc_stop.set()
        cdc.join()
        conn.close()
    assert writer.transactions >= 3  # writes really happened while verifying
    assert res.ok, [(d.collection, d.id, d.kind, d.fields) for d in res.differences]


def test_an_interrupted_verification_resumes_from_its_checkpoint(env):
    from migrator.progress import NullProgress

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

    import pytest

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
    import signal
    import subprocess
    import sys

    from .conftest import REPO

    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migrator.cli.main",
            "verify",
            "-m",
            str(path),
            "--follow",
            "--settle",
            "1",
            "--json",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # follow verifies what changes after it started: wait for its first (empty) pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not env.state.verify_runs.find_one({}):
            time.sleep(0.2)
        env.sql("UPDATE orders SET note = 'followed' WHERE id = 4")
        run_cdc(load_mapping(path), mode="until-caught-up")
        env.target.orders.update_one({"_id": 4}, {"$set": {"note": "drifted after CDC"}})
        deadline = time.monotonic() + 60  # each pass stores its summary: wait for the report
        while time.monotonic() < deadline and not env.state.verify_runs.find_one(
            {"differences._id": 4}
        ):
            time.sleep(0.5)
        time.sleep(1.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    passes = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(
        d["_id"] == 4 and d["fields"][0]["path"] == "note" for p in passes for d in p["differences"]
    )


def tamper(env, seed: int, orders: int, *, count: int = 15, customer: bool = True) -> None:
    """Seeded random tampering of random orders (deleted, a field changed, an item dropped),
    an extra document, and optionally a deleted customer."""
    import random

    t, rnd = env.target, random.Random(seed)
    for i in rnd.sample(range(1, orders + 1), count):
        r = rnd.random()
        if r < 0.3:
            t.orders.delete_one({"_id": i})
        elif r < 0.6:
            t.orders.update_one({"_id": i}, {"$set": {"status": f"t{i}"}})
        else:
            t.orders.update_one({"_id": i}, {"$pop": {"items": 1}})
    t.orders.insert_one({"_id": 7777, "orderNo": "ghost"})
    if customer:
        t.customers.delete_one({"_id": rnd.randint(1, 30)})


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
