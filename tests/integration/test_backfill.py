"""Backfill end to end on the shop schema: documents, resume after kill -9, restart, dry run,
throttling, parallel workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading

import pytest

from migrator.backfill.copy import backfill
from migrator.devtools.shop import SCHEMA
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.sink.mongo import DocumentWriter
from migrator.source.connection import connect
from migrator.state.store import StateStore

from .conftest import migrator_cmd
from .helpers import (
    alive,
    assert_orders_exact,
    children,
    cli_process,
    cmdline,
    make_shop,
    start_cdc,
    to_read_mongo,
    wait_until,
    walk_to,
)


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
    assert len(again.collections) == 3
    assert all(c.chunks_skipped == c.chunks_total for c in again.collections)


@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_then_rerun_resumes_and_leaves_exact_documents(env, workers):
    path = make_shop(env, orders=1000, chunk_size=50)
    args = ["--json", "--workers", str(workers), "--max-rows-per-sec", "300"]
    with cli_process("backfill", "-m", str(path), *args, "--collection", "orders") as proc:
        wait_until(
            lambda: (
                env.state.chunks.count_documents({"collection": "orders", "done": True}) >= 4
                or proc.poll() is not None
            ),
            "4 chunks copied",
        )
        assert proc.poll() is None, proc.log_tail()
        workers_before = children(proc.pid)
        proc.kill9()
    done_before = env.state.chunks.count_documents({"collection": "orders", "done": True})
    total = env.state.chunks.count_documents({"collection": "orders"})
    assert 4 <= done_before < total
    # orphaned worker processes notice their parent is gone and stop
    wait_until(lambda: not [c for c in workers_before if alive(c)], "the workers to stop")
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
    t = threading.Thread(target=lambda: busy.cursor().execute("SELECT SLEEP(3)"))
    t.start()
    wait_until(  # the server is busy before the backfill starts
        lambda: env.sql(
            "SELECT id FROM information_schema.processlist WHERE info = 'SELECT SLEEP(3)'"
        ),
        "the busy query to run",
    )
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
    assert [s.split()[2] for s in SCHEMA] == [
        "customers", "products", "orders", "order_items", "departments", "categories",
        "product_categories",
    ]  # fmt: skip


def test_a_dropped_source_connection_is_reconnected_mid_backfill(env, stack):
    from migrator.backfill.worker import Chunk, ChunkWorker
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


def test_two_backfills_at_once_share_one_plan_and_copy_each_chunk_once(env):
    """As N machines of a Kubernetes indexed Job: the first plans, the other joins; chunks are
    claimed with leases, so each is copied by exactly one of them."""
    path = make_shop(env, orders=600, chunk_size=30)
    args = ("backfill", "-m", str(path), "--json", "--workers", "1", "--max-rows-per-sec", "600")
    procs = [cli_process(*args, pipe=True) for _ in "ab"]
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
    path = make_shop(env, orders=600, chunk_size=30)
    cmd = ("backfill", "-m", str(path), "--json")
    # the victim holds its first chunk (a fault point pauses it there)
    with cli_process(*cmd, "--workers", "1", pause="chunk-copied:60") as victim:
        wait_until(
            lambda: (
                env.state.chunks.count_documents({"worker": {"$exists": True}}) >= 1
                or victim.poll() is not None
            ),
            "the victim to take a chunk",
        )
        assert victim.poll() is None, victim.log_tail()
        with cli_process(*cmd, "--workers", "2") as survivor:
            wait_until(  # all but the victim's
                lambda: (
                    env.state.chunks.count_documents({"done": False}) <= 1
                    or survivor.poll() is not None
                ),
                "the survivor to copy every other chunk",
            )
            assert survivor.poll() is None  # it waits for the chunk the victim holds
            victim.kill9()
            assert survivor.wait(120) == 0, survivor.log_tail()
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
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        env.target.orders.delete_one({"_id": 3})  # the application, MongoDB-first
        wait_until(
            lambda: env.sql("SELECT COUNT(*) FROM orders WHERE id = 3")[0][0] == 0,
            "reverse sync to delete the row",
        )
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        assert env.state.control.find_one({"_id": "control"})["phase"] == "read_mongo"
    finally:
        cdc.stop()
    p = migrator_cmd("backfill", "-m", str(path))
    assert p.returncode == 0, p.stderr


def test_a_killed_worker_process_ends_the_backfill_and_frees_the_copy(env):
    """One of the --workers processes dies (OOM killer, kill -9) holding a chunk: the
    coordinator does not wait for its result for ever, nor renew that chunk's lease and the
    copy membership for ever (no other machine could reclaim the chunk, CDC would stay
    paused): the backfill ends, and the copy is over."""
    path = make_shop(env, orders=300, chunk_size=100)
    with cli_process("backfill", "-m", str(path), "--workers", "2", pause="chunk-copied:4") as bf:
        wait_until(
            lambda: (
                env.state.chunks.count_documents({"worker": {"$exists": True}}) >= 1
                or bf.poll() is not None
            ),
            "a worker to take a chunk",
        )
        assert bf.poll() is None, bf.log_tail()

        # both worker processes run, and chunks are held (two per worker are handed out, so
        # the chunks alone do not say that the second process has started)
        def workers() -> list[int]:
            return [c for c in children(bf.pid) if "resource_tracker" not in cmdline(c)]

        wait_until(
            lambda: (
                len(workers()) == 2
                and env.state.chunks.count_documents({"worker": {"$exists": True}, "done": False})
                >= 2
            ),
            "both workers to run and chunks to be held",
        )
        running = workers()
        assert len(running) == 2, [cmdline(c) for c in running]
        os.kill(running[0], signal.SIGKILL)
        try:
            bf.wait(timeout=120)
        except subprocess.TimeoutExpired:
            copy = env.state.meta.find_one({"_id": "copy"})
            left = list(env.state.chunks.find({"done": False}, {"worker": 1, "lease": 1}))
            raise AssertionError(("still running after 120 s", copy, left)) from None
    # it may fail, but then the chunk is free and CDC is not fenced off any more
    assert StateStore(env.mongo, env.state_db).copy_in_progress() is None


def test_insert_or_replace_converges_where_upsert_does_with_a_stale_unique_value(env):
    """insert_or_replace's result is the same as upsert's: a stale document (a chunk retried
    after a crash, the source changed meanwhile) holds a unique value that a NEW row of the
    same batch now has; upsert (replace in order) frees it first, and insert_or_replace
    converges too (a duplicate on the unique index is not re-raised as a failure)."""
    coll = env.target.users
    coll.create_index("email", unique=True)
    coll.insert_one({"_id": 1, "email": "a@x"})  # stale: row 1's email was a@x when copied
    docs = [{"_id": 1, "email": "c@x"}, {"_id": 2, "email": "a@x"}]  # what the source has now

    ref = env.target.users_ref
    ref.create_index("email", unique=True)
    ref.insert_one({"_id": 1, "email": "a@x"})
    DocumentWriter(ref).upsert(docs)  # the previous writer converges
    assert list(ref.find().sort("_id")) == docs

    try:
        DocumentWriter(coll).insert_or_replace(docs)
        err = None
    except Exception as exc:
        err = f"{type(exc).__name__}: {str(exc)[:300]}"
    assert err is None, err
    assert list(coll.find().sort("_id")) == docs


def test_a_backfill_rerun_after_a_crash_converges_when_a_unique_value_moved(env):
    """The same end to end: a backfill dies after writing a chunk (before marking it done);
    the source moves a unique value from an old row to a new row of that chunk (CDC is not
    running, or paused: the rerun must converge); every rerun succeeds and ends exact."""
    env.sql(
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(50) NOT NULL UNIQUE)",
        "INSERT INTO users VALUES (1, 'a@x')",
    )
    path = env.mapping("  - {name: users, from: users}\n")
    env.target.users.create_index("email", unique=True)
    with cli_process("backfill", "-m", str(path), pause="chunk-copied:60") as victim:
        wait_until(
            lambda: env.target.users.count_documents({}) >= 1 or victim.poll() is not None,
            "the chunk to be written",
        )
        assert victim.poll() is None, victim.log_tail()
        victim.kill9()  # after writing the chunk, before marking it done
    env.sql("UPDATE users SET email = 'c@x' WHERE id = 1", "INSERT INTO users VALUES (2, 'a@x')")
    out = []
    for _ in range(2):
        p = migrator_cmd("backfill", "-m", str(path))
        out.append((p.returncode, p.stderr.strip().splitlines()[-1:]))
    assert [rc for rc, _ in out] == [0, 0], out
    assert [(d["_id"], d["email"]) for d in env.target.users.find().sort("_id")] == [
        (1, "c@x"),
        (2, "a@x"),
    ]


def test_the_indexes_cdc_needs_are_built_after_the_copy(env):
    """As DMS and mongorestore do: the server builds an index over the copied documents for
    much less than keeping it through every insert (CDC waits for the copy, so nothing needs
    it before). While chunks are written there is none; when the backfill ends it is there."""
    path = make_shop(env, orders=30, chunk_size=10)
    with cli_process("backfill", "-m", str(path), "--workers", "1", pause="chunk-copied:2") as bf:
        wait_until(
            lambda: env.target.orders.count_documents({}) > 0 or bf.poll() is not None,
            "the first chunk to be written",
        )
        assert bf.poll() is None, bf.log_tail()
        assert list(env.target.orders.index_information()) == ["_id_"]
        assert bf.wait(timeout=120) == 0, bf.log_tail()
    keys = [spec["key"] for spec in env.target.orders.index_information().values()]
    assert [("customer.id", 1)] in keys


def test_a_source_restart_never_pauses_the_copy_for_good(own_env):
    """The load monitor's check on a connection a MariaDB restart dropped failed on every
    later check, and a failed check paused the copy: a backfill with a source restart in it
    waited for ever. A failed check lets the copy go on and opens the connection again."""
    from migrator.devtools.sandbox import restart_mysql
    from migrator.model.settings import ThrottleSpec
    from migrator.source.connection import query
    from migrator.source.throttle import LoadMonitor

    def opener():
        return connect(parse_mysql_url(own_env.stack.mysql_url), database=False)

    monitor = LoadMonitor(opener(), ThrottleSpec(check_interval_seconds=0.001), reconnect=opener)
    assert monitor.reason_to_pause() is None
    restart_mysql(own_env.stack)
    wait_until(lambda: monitor.reason_to_pause() is None, "a check after the restart", timeout=5)
    # and the next checks read the server again, on the new connection
    assert query(monitor.conns[0][1], "SELECT 1")[0][0] == 1
    assert monitor.reason_to_pause() is None
