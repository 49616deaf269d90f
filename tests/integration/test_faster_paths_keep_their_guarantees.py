"""What the faster paths of backfill and verify must still guarantee:
- full verify's one sorted scan, from the collection's first document, finds every extra
  document (an `_id` sorting before every number: null, MinKey, NaN; rows a `filter` leaves
  out; more than 1,000 in gaps; at chunk boundaries and past the end; string and composite
  keys; an empty source table) and hides no other difference;
- a backfill worker's read-ahead never writes after its coordinator died (its copy fence is
  gone, and CDC may apply newer changes to those rows);
- CDC has the indexes it finds documents by, even after a backfill that stopped early (the
  backfill builds them after its copy)."""

from __future__ import annotations

import time

from bson.decimal128 import Decimal128

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.model.settings import load_mapping
from migrator.state.store import StateStore
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import (
    alive,
    assert_orders_exact,
    children,
    cli_process,
    cmdline,
    make_shop,
    wait_until,
)


def _kinds(res):
    return sorted((d.kind, repr(d.id)) for d in res.differences)


def _table(env, n=200, chunk=50):
    env.sql(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(20))",
        f"INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_{n}",
    )
    path = env.mapping("  - {name: t, from: t}\n", backfill=f"{{chunk_size: {chunk}}}")
    backfill(load_mapping(path), workers=1)
    return path


def test_an_extra_document_with_a_null_id_hides_nothing(env):
    """null (and MinKey) sort before every number: the scan passes over that document (an
    extra) and goes on; no other document is reported."""
    path = _table(env)
    env.target.t.insert_one({"_id": None, "v": "ghost"})
    res = verify(load_mapping(path), recheck=0)
    assert _kinds(res) == [("extra", "None")]


def test_an_extra_document_with_a_nan_decimal_id_is_reported(env):
    """NaN sorts before every number and compares with none: the scan passes over that
    document (an extra) instead of ordering it."""
    path = _table(env)
    env.target.t.insert_one({"_id": Decimal128("NaN"), "v": "ghost"})
    res = verify(load_mapping(path), recheck=0)
    assert [d.kind for d in res.differences] == ["extra"]


def test_filtered_out_rows_documents_are_extras(env):
    env.sql(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, flag INT, v VARCHAR(20))",
        "INSERT INTO t SELECT seq, 1, CONCAT('v', seq) FROM seq_1_to_300",
    )
    path = env.mapping("  - {name: t, from: t, filter: 'flag = 1'}\n", backfill="{chunk_size: 50}")
    backfill(load_mapping(path), workers=1)
    # a whole chunk's rows filtered out now, and scattered ones, the first and the last
    env.sql("UPDATE t SET flag = 0 WHERE id BETWEEN 101 AND 160 OR id IN (1, 7, 250, 300)")
    res = verify(load_mapping(path), recheck=0)
    want = sorted([*range(101, 161), 1, 7, 250, 300])
    assert sorted(d.id for d in res.differences) == want
    assert {d.kind for d in res.differences} == {"extra"}


def test_more_than_a_thousand_extras_in_gaps_are_all_counted(env):
    env.sql(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t SELECT seq * 10, CONCAT('v', seq) FROM seq_1_to_300",
    )
    path = env.mapping("  - {name: t, from: t}\n", backfill="{chunk_size: 50}")
    backfill(load_mapping(path), workers=1)
    extras = [i for i in range(1, 3200) if i % 10 and i % 7 == 0]  # gaps, before and after
    env.target.t.insert_many([{"_id": i, "v": "ghost"} for i in extras])
    res = verify(load_mapping(path), recheck=0)
    c = res.collections[0]
    assert (c.extra, c.missing, c.different) == (len(extras), 0, 0)


def test_extras_at_chunk_boundaries_and_after_the_end(env):
    path = _table(env, n=200, chunk=50)
    env.sql("DELETE FROM t WHERE id IN (50, 51, 100, 200)")
    env.target.t.insert_many([{"_id": 0}, {"_id": -5}, {"_id": 201}, {"_id": 10**12}])
    res = verify(load_mapping(path), recheck=0)
    assert _kinds(res) == sorted(("extra", repr(i)) for i in (50, 51, 100, 200, 0, -5, 201, 10**12))


def test_string_and_composite_keys_find_extras(env):
    env.sql(
        "CREATE TABLE s (code VARCHAR(10) PRIMARY KEY, v INT)",
        "INSERT INTO s SELECT CONCAT('k', LPAD(seq, 4, '0')), seq FROM seq_1_to_120",
        "CREATE TABLE c (a INT, b INT, v INT, PRIMARY KEY (a, b))",
        "INSERT INTO c SELECT seq DIV 10, seq MOD 10, seq FROM seq_1_to_120",
    )
    path = env.mapping(
        "  - {name: s, from: s}\n  - {name: c, from: c}\n", backfill="{chunk_size: 25}"
    )
    backfill(load_mapping(path), workers=1)
    env.target.s.insert_many([{"_id": "a"}, {"_id": "k0050x"}, {"_id": 5}])
    env.target.c.insert_many([{"_id": {"a": 99, "b": 1}}])
    env.sql("DELETE FROM s WHERE code = 'k0060'", "DELETE FROM c WHERE a = 5 AND b = 5")
    res = verify(load_mapping(path), recheck=0)
    got = sorted((d.collection, d.kind, repr(d.id)) for d in res.differences)
    assert got == sorted(
        [
            ("s", "extra", "'a'"),
            ("s", "extra", "'k0050x'"),
            ("s", "extra", "5"),
            ("s", "extra", "'k0060'"),
            ("c", "extra", "{'a': 99, 'b': 1}"),
            ("c", "extra", "{'a': 5, 'b': 5}"),
        ]
    )


def test_an_empty_source_table_reports_every_document_as_extra(env):
    path = _table(env, n=30, chunk=10)
    env.sql("DELETE FROM t")
    res = verify(load_mapping(path), recheck=0)
    assert res.collections[0].extra == 30 and res.collections[0].missing == 0


def test_cdc_after_a_killed_backfill_has_the_indexes_it_finds_documents_by(env):
    """A backfill killed mid-copy releases the copy fence at once (its process is gone), so
    CDC applies again over the partial copy: fan-out updates find orders by `customer.id`,
    an index the backfill builds only at the end of its copy; CDC builds it when it starts."""
    path = make_shop(env, orders=60, chunk_size=10)
    args = ("--workers", "1", "--collection", "orders")
    with cli_process("backfill", "-m", str(path), *args, pause="chunk-copied:30") as bf:
        wait_until(
            lambda: env.target.orders.count_documents({}) > 0 or bf.poll() is not None,
            "the first chunk to be written",
        )
        assert bf.poll() is None, bf.log_tail()
        bf.kill9()
    assert StateStore(env.mongo, env.state_db).copy_in_progress() is None  # CDC may apply
    cust = env.target.orders.find_one({}, {"customer.id": 1})["customer"]["id"]
    env.sql(f"UPDATE customers SET email = 'moved@x' WHERE id = {cust}")
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert env.target.orders.find_one({"customer.id": cust})["customer"]["email"] == "moved@x"
    keys = [spec["key"] for spec in env.target.orders.index_information().values()]
    assert [("customer.id", 1)] in keys


def test_orphaned_workers_write_no_chunk_read_before_the_kill_over_cdc_s_changes(env):
    """kill -9 of the backfill coordinator ends the copy fence at once (a dead local process
    holds nothing), so CDC applies again. Each orphaned worker has read (and queued) its next
    chunk already: it must write nothing of it, or it would put back rows older than CDC's
    changes and mark the chunk done, and the resumed backfill would skip it."""
    path = make_shop(env, orders=80, chunk_size=10)
    args = ("--workers", "2", "--collection", "orders")
    with cli_process("backfill", "-m", str(path), *args, pause="chunk-copied:20") as bf:
        wait_until(
            lambda: env.target.orders.count_documents({}) >= 20 or bf.poll() is not None,
            "both workers to write their first chunk",
        )
        assert bf.poll() is None, bf.log_tail()
        time.sleep(1.0)  # each worker reads its next chunk while its writer waits
        workers = [c for c in children(bf.pid) if "resource_tracker" not in cmdline(c)]
        bf.kill9()
    t_kill = time.monotonic()
    assert StateStore(env.mongo, env.state_db).copy_in_progress() is None  # CDC may apply
    before = dict(env.sql("SELECT id, total FROM orders"))
    env.sql("UPDATE orders SET total = total + 1000")
    run_cdc(load_mapping(path), mode="until-caught-up")
    assert time.monotonic() - t_kill < 15, "CDC was too slow for this test to mean anything"
    wait_until(lambda: not [c for c in workers if alive(c)], "the orphans to stop", timeout=90)
    p = migrator_cmd("backfill", "-m", str(path), "--collection", "orders", check=0)
    assert p.returncode == 0, p.stderr
    stale = sorted(
        d["_id"] for d in env.target.orders.find() if d["total"].to_decimal() == before[d["_id"]]
    )
    assert stale == []  # e.g. [11, ..., 20, 21, ..., 30]: the chunks read ahead before the kill
    assert_orders_exact(env)


def test_extra_documents_whose_id_no_key_can_have_are_reported(env):
    """An `_id` no source key can give (an infinity or a fraction in an integer-keyed
    collection; a scalar or other fields in a composite-keyed one) is an extra document,
    reported, never a crash, and the repair deletes it; the other documents hide nothing."""
    env.sql(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_60",
        "CREATE TABLE c (a INT, b INT, v INT, PRIMARY KEY (a, b))",
        "INSERT INTO c SELECT seq DIV 10, seq MOD 10, seq FROM seq_1_to_30",
    )
    path = env.mapping(
        "  - {name: t, from: t}\n  - {name: c, from: c}\n", backfill="{chunk_size: 20}"
    )
    backfill(load_mapping(path), workers=1)
    odd = [float("inf"), float("-inf"), 2.5]
    env.target.t.insert_many([{"_id": i} for i in odd])
    env.target.c.insert_many([{"_id": 7}, {"_id": {"a": 1}}, {"_id": {"a": 1, "b": 2, "z": 3}}])
    for workers in (1, 2):
        res = verify(load_mapping(path), recheck=0, workers=workers, restart=True)
        got = sorted((d.collection, d.kind, repr(d.id)) for d in res.differences)
        want = sorted(
            [("t", "extra", repr(i)) for i in odd]
            + [("c", "extra", "7"), ("c", "extra", "{'a': 1}")]
            + [("c", "extra", "{'a': 1, 'b': 2, 'z': 3}")]
        )
        assert got == want, (workers, got)
    verify(load_mapping(path), recheck=0, repair=True, restart=True)  # deletes them
    assert verify(load_mapping(path), recheck=0, restart=True).ok
    assert env.target.t.count_documents({}) == 60 and env.target.c.count_documents({}) == 30
