"""Backfill end to end on the shop schema: documents, resume after kill -9, restart, dry run,
throttling, parallel workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from migrator.backfill.copy import backfill
from migrator.devtools.shop import SCHEMA, create_shop, shop_mapping
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

from .conftest import REPO, migrator_cmd
from .shop_oracle import expected_orders


def make_shop(env, orders=120, chunk_size=10):
    conn = connect(parse_mysql_url(env.stack.mysql_url), database=False)
    create_shop(conn, env.db, customers=30, products=10, orders=orders)
    conn.close()
    text = shop_mapping(
        env.url, env.stack.mongo_url, target_db=env.db, state_db=env.state_db, chunk_size=chunk_size
    )
    path = env.tmp / "shop.yaml"
    path.write_text(text)
    return path


def assert_orders_exact(env):
    expected = expected_orders(env.admin, env.db)
    got = {d["_id"]: d for d in env.target.orders.find()}
    assert sorted(got) == sorted(expected)
    for k, want in expected.items():
        assert got[k] == want, f"order {k}"


@pytest.mark.parametrize("workers", [1, 2])
def test_shop_backfill_builds_exact_documents(env, workers):
    path = make_shop(env, orders=2000, chunk_size=100)
    summary = backfill(load_mapping(path), workers=workers)
    assert summary.dead_letters == 0
    by = {c.name: c for c in summary.collections}
    # 20 full chunks of 100 keys, then the open-ended last one
    assert by["orders"].rows == 2000 and by["orders"].chunks_total == 21
    assert by["customers"].documents == 30 and by["products"].documents == 10
    assert_orders_exact(env)
    # N:1 embeds carry only the listed fields; 1:N embeds leave out the excluded FK
    doc = env.target.orders.find_one({"customer": {"$ne": None}, "items.0": {"$exists": True}})
    assert set(doc["customer"]) == {"id", "email", "name"}
    assert "order_id" not in doc["items"][0] and "legacy_flag" not in doc
    prod = env.target.products.find_one({"tags": {"$size": 2}})
    assert prod is not None and all(isinstance(t, str) for t in prod["tags"])
    # the binlog position was recorded before reading, for CDC to start from
    pos = env.state.meta.find_one({"_id": "backfill_position"})["position"]
    assert pos["file"].startswith("mysql-bin.") and pos["pos"] > 0 and pos["gtid"]
    assert env.state.backfill.find_one({"_id": "orders"})["status"] == "complete"


def test_rerun_after_completion_copies_nothing(env):
    path = make_shop(env, orders=40)
    backfill(load_mapping(path), workers=1)
    again = backfill(load_mapping(path), workers=1)
    assert again.rows == 0
    assert all(c.chunks_skipped == c.chunks_total for c in again.collections)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_then_rerun_resumes_and_leaves_exact_documents(env, workers):
    path = make_shop(env, orders=3000, chunk_size=100)
    cmd = [
        sys.executable,
        "-m",
        "migrator.cli.main",
        "backfill",
        "-m",
        str(path),
        "--json",
        "--workers",
        str(workers),
        "--max-rows-per-sec",
        "1000",
        "--collection",
        "orders",
    ]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if env.state.chunks.count_documents({"collection": "orders", "done": True}) >= 4:
            break
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = env.state.chunks.count_documents({"collection": "orders", "done": True})
    total = env.state.chunks.count_documents({"collection": "orders"})
    assert 4 <= done_before < total
    time.sleep(1.5)  # orphaned workers notice their parent is gone and stop
    p = migrator_cmd("backfill", "-m", str(path), "--json", "--workers", str(workers), check=0)
    summary = json.loads(p.stdout)
    orders = next(c for c in summary["collections"] if c["name"] == "orders")
    assert orders["chunks_skipped"] >= done_before
    assert orders["chunks_skipped"] + orders["chunks_run"] == total
    assert env.state.chunks.count_documents({"collection": "orders", "done": False}) == 0
    assert_orders_exact(env)
    assert env.target.customers.count_documents({}) == 30


def test_restart_starts_over_from_an_empty_target(env):
    path = make_shop(env, orders=30)
    first = backfill(load_mapping(path), workers=1)
    env.target.orders.insert_one({"_id": 99999, "stale": True})
    env.sql("DELETE FROM order_items WHERE order_id = 1", "DELETE FROM orders WHERE id = 1")
    p = migrator_cmd("backfill", "-m", str(path), "--restart", "--json", check=0)
    summary = json.loads(p.stdout)
    assert summary["rows"] == 29 + 30 + 10
    assert summary["position"]["pos"] >= first.position["pos"]
    assert env.target.orders.find_one({"_id": 99999}) is None
    assert_orders_exact(env)


def test_dry_run_reads_everything_and_writes_nothing(env):
    path = make_shop(env, orders=60)
    p = migrator_cmd("backfill", "-m", str(path), "--dry-run", "--json", "--workers", "2", check=0)
    summary = json.loads(p.stdout)
    assert summary["dry_run"] is True
    assert summary["rows"] == 60 + 30 + 10 and summary["rows_per_sec"] > 0
    orders = next(c for c in summary["collections"] if c["name"] == "orders")
    assert orders["documents"] == 60 and orders["bytes"] > 60 * 100
    assert env.target.orders.count_documents({}) == 0
    assert env.state.meta.count_documents({}) == 0 and env.state.chunks.count_documents({}) == 0


def test_backfill_pauses_while_the_source_is_busy(env, stack):
    path = make_shop(env, orders=30)
    text = path.read_text().replace(
        "backfill:\n",
        "throttle: {max_threads_running: 1, check_interval_seconds: 0.2}\nbackfill:\n",
    )
    path.write_text(text)
    busy = connect(parse_mysql_url(stack.mysql_url), database=False)
    # long enough that even a slow start of the backfill meets the busy server
    t = threading.Thread(target=lambda: busy.cursor().execute("SELECT SLEEP(6)"))
    t.start()
    time.sleep(0.3)
    try:
        summary = backfill(load_mapping(path), workers=1)
    finally:
        t.join()
        busy.close()
    assert summary.paused_seconds > 0
    assert summary.rows == 70
    assert_orders_exact(env)


def test_max_rows_per_sec_throttles(env):
    path = make_shop(env, orders=40, chunk_size=10)
    summary = backfill(load_mapping(path), workers=1, max_rows_per_sec=100, collections=["orders"])
    # 40 rows at 100 rows/s: the limiter must have slept (not a timing assert on the total)
    assert summary.throttled_seconds > 0 and summary.rows == 40


def test_oversized_and_unconvertible_rows_go_to_dead_letters(env):
    env.sql(
        "CREATE TABLE big (id INT PRIMARY KEY, d DECIMAL(40,0), blobby LONGBLOB)",
        "INSERT INTO big VALUES (1, 1, NULL), (2, 1234567890123456789012345678901234567890, NULL), "
        "(3, 3, NULL)",
    )
    env.sql("UPDATE big SET blobby = REPEAT('x', 17 * 1024 * 1024) WHERE id = 3")
    path = env.mapping("  - {name: big, from: big}\n")
    p = migrator_cmd("backfill", "-m", str(path), "--json", check=1)
    summary = json.loads(p.stdout)
    assert summary["dead_letters"] == 2 and summary["documents"] == 1
    assert [d["_id"] for d in env.target.big.find()] == [1]
    dead = {d["key"]: d["reason"] for d in env.state.dead_letters.find({}, {"payload": 0})}
    assert "34 significant digits" in dead[2] and "big.d" in dead[2]
    assert "16 MiB" in dead[3]


def test_schema_of_demo_is_created_in_order(admin):
    # guard: SCHEMA statements are ordered so FKs resolve (used by demo and tests)
    assert [s.split()[2] for s in SCHEMA] == ["customers", "products", "orders", "order_items"]


def test_a_dropped_source_connection_is_reconnected_mid_backfill(env, stack):
    from migrator.backfill.copy import Chunk, ChunkWorker
    from migrator.runtime import Migration
    from migrator.source.schema import introspect

    path = make_shop(env, orders=20)
    mapping = load_mapping(path)
    schema = introspect(env.admin, env.db)
    worker = ChunkWorker(Migration(mapping, claim_state=False, schema=schema), dry_run=True)
    first = worker.run(Chunk("orders/0", "orders", 0, None, (10,)))
    env.admin.cursor().execute(f"KILL CONNECTION {worker.conn.thread_id()}")
    second = worker.run(Chunk("orders/1", "orders", 1, (10,), None))
    assert (first.rows, second.rows) == (10, 10)


def test_partial_restart_keeps_the_position_and_other_collections(env):
    path = make_shop(env, orders=30)
    first = backfill(load_mapping(path), workers=1)
    again = backfill(load_mapping(path), workers=1, restart=True, collections=["orders"])
    assert again.position == first.position
    assert [c.name for c in again.collections] == ["orders"] and again.rows == 30
    assert env.state.backfill.find_one({"_id": "customers"})["status"] == "complete"
    assert env.target.customers.count_documents({}) == 30
    assert_orders_exact(env)


def test_documents_already_in_the_target_are_replaced_not_kept_or_duplicated(env):
    """Chunks are inserted (fast) and only the documents whose _id exists are replaced: stale
    documents scattered through a chunk, and a whole chunk already there, end exact."""
    path = make_shop(env, orders=300, chunk_size=50)
    stale = [{"_id": i, "stale": True} for i in range(1, 301, 3)]  # a third of every chunk
    stale += [{"_id": i, "stale": True} for i in range(101, 151) if i % 3 != 1]  # chunk 3: all
    env.target.orders.insert_many(stale)
    summary = backfill(load_mapping(path), workers=2)
    assert summary.dead_letters == 0
    assert env.target.orders.count_documents({"stale": True}) == 0
    assert_orders_exact(env)


def test_a_conflict_on_another_unique_index_fails_the_chunk_loudly(env):
    """Only a duplicate _id means 'the document is there already'; a user's unique index that
    refuses a document is an error, not something to paper over with a replace."""
    path = make_shop(env, orders=20, chunk_size=50)
    env.target.orders.create_index("orderNo", unique=True)
    env.target.orders.insert_one({"_id": 10_000, "orderNo": "SO-0000005"})  # order 5's number
    p = migrator_cmd("backfill", "-m", str(path), "--collection", "orders", "--json")
    assert p.returncode != 0
    assert "duplicate key" in (p.stdout + p.stderr).lower()
    assert env.target.orders.find_one({"_id": 5}) is None


def _backfill_proc(path, *extra):
    cmd = [sys.executable, "-m", "migrator.cli.main", "backfill", "-m", str(path), "--json"]
    return subprocess.Popen(
        [*cmd, *extra], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_backfills_at_once_share_one_plan_and_copy_each_chunk_once(env):
    """As N machines of a Kubernetes indexed Job: the first plans, the other joins; chunks are
    claimed with leases, so each is copied by exactly one of them."""
    path = make_shop(env, orders=2000, chunk_size=100)
    procs = [_backfill_proc(path, "--workers", "1", "--max-rows-per-sec", "2500") for _ in "ab"]
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    runs = [json.loads(out) for out, _ in outs]
    orders = [next(c for c in r["collections"] if c["name"] == "orders") for r in runs]
    total = env.state.chunks.count_documents({"collection": "orders"})
    assert all(o["chunks_run"] > 0 for o in orders), orders  # both did a share
    assert sum(o["chunks_run"] for o in orders) == total
    claims = [c.get("claims") for c in env.state.chunks.find({})]
    assert claims and all(n == 1 for n in claims), claims
    assert env.state.meta.find_one({"_id": "copy"}) is None  # the last one out ended the copy
    assert_orders_exact(env)


def test_a_killed_backfill_s_chunks_are_claimed_by_the_other(env):
    """A backfill killed while it holds a chunk: the other copies that chunk again (a dead
    process of this host at once; another machine's when the lease expires) and the rest once."""
    path = make_shop(env, orders=2000, chunk_size=100)
    cmd = [sys.executable, "-m", "migrator.cli.main", "backfill", "-m", str(path), "--json"]
    victim = subprocess.Popen(
        [*cmd, "--workers", "1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "MIGRATOR_FAULT_PAUSE": "chunk-copied:60"},  # holds its 1st chunk
    )
    deadline = time.monotonic() + 60
    while env.state.chunks.count_documents({"worker": {"$exists": True}}) < 1:
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.05)
    survivor = _backfill_proc(path, "--workers", "2")
    while env.state.chunks.count_documents({"done": False}) > 1:  # all but the victim's
        assert time.monotonic() < deadline + 60 and survivor.poll() is None
        time.sleep(0.05)
    assert survivor.poll() is None  # it waits for the chunk the victim holds
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    _out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert env.state.chunks.count_documents({"done": False}) == 0
    claims = sorted(c.get("claims", 0) for c in env.state.chunks.find({}))
    assert claims[:-1] == [1] * (len(claims) - 1) and claims[-1] == 2
    assert_orders_exact(env)


def _resume_refused(path, collection):
    p = migrator_cmd("backfill", "-m", str(path), check=2)
    assert collection in p.stderr and "backfill --restart" in p.stderr, p.stderr
    return p


def test_a_resume_into_a_target_that_lost_its_documents_is_refused(env):
    """Recorded work missing from the target (database dropped, one collection dropped, some
    documents deleted) stops the resume, naming the collection and the way out."""
    path = make_shop(env, orders=60, chunk_size=20)
    migrator_cmd("backfill", "-m", str(path), check=0)
    # the whole target database dropped to start over
    env.mongo.drop_database(env.db)
    p = _resume_refused(path, "orders")
    assert "0 rows" not in p.stdout
    # ... and nothing was written by the refused run
    assert env.target.orders.count_documents({}) == 0
    migrator_cmd("backfill", "-m", str(path), "--restart", check=0)
    assert_orders_exact(env)
    # one collection dropped and made again (an index, an application) holds none of the copy
    env.target.customers.drop()
    env.target.customers.insert_one({"_id": 10_000, "note": "not the copy"})
    _resume_refused(path, "customers")
    migrator_cmd("backfill", "-m", str(path), "--restart", check=0)
    # some documents deleted behind the tool's back
    env.target.orders.delete_many({"_id": {"$lte": 5}})
    p = _resume_refused(path, "orders")
    assert "fewer documents" in p.stderr
    migrator_cmd("backfill", "-m", str(path), "--restart", check=0)
    assert_orders_exact(env)


def test_a_resume_after_cdc_deleted_documents_goes_on(env):
    """Documents CDC deleted (rows deleted at the source) are not a loss: `sync` resumes."""
    from migrator.cdc.runner import run_cdc

    path = make_shop(env, orders=60, chunk_size=20)
    migrator_cmd("backfill", "-m", str(path), check=0)
    env.sql("DELETE FROM order_items WHERE order_id <= 30", "DELETE FROM orders WHERE id <= 30")
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.target.orders.count_documents({}) == 30
    p = migrator_cmd("backfill", "-m", str(path), check=0)
    assert "already done" in p.stderr
    assert_orders_exact(env)


def test_a_rerun_after_a_rollback_is_not_refused_for_documents_the_application_deleted(
    env, tmp_path
):
    """From write_mongo on, the application deletes documents in MongoDB and reverse sync
    deletes their rows. After a rollback (to read_mongo) those are not a copy that lost its
    data: a rerun of `backfill` (`sync` runs one) must not stop and ask for `--restart`, which
    is refused past sync anyway."""
    from .test_cutover import step
    from .test_write_fence import start_cdc, to_read_mongo, wait_until

    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb))
        env.target.orders.delete_one({"_id": 3})  # the application, MongoDB-first
        wait_until(
            lambda: env.sql("SELECT COUNT(*) FROM orders WHERE id = 3")[0][0] == 0,
            "reverse sync to delete the row",
        )
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        assert env.state.control.find_one({"_id": "control"})["phase"] == "read_mongo"
    finally:
        cdc.terminate()
        cdc.wait(60)
    p = migrator_cmd("backfill", "-m", str(path))
    assert p.returncode == 0, p.stderr
