"""Review findings for the binlog reader / parallel decoders split (commit 081ea22).

Each test but the last fails on the code as reviewed (081ea22); its docstring says what breaks
and why. The last one passes: coverage of the reader's raw table-map parse."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.binlog import BinlogSource
from migrator.cdc.binlog_parallel import ParallelBinlogSource
from migrator.cdc.binlog_read import BinlogReader, Heartbeat, RawTransaction
from migrator.cdc.runner import CdcSummary, master_position, reached, run_cdc
from migrator.errors import CheckFailed
from migrator.model.events import Position, Transaction
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.source.schema import introspect

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import REPO
from .test_cdc_parallel_decode import _alive, _descendants


def _run_cdc_in_thread(path: Any, **kw: Any) -> tuple[threading.Thread, threading.Event, dict]:
    stop = threading.Event()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["summary"] = run_cdc(load_mapping(path), stop=stop, **kw)
        except BaseException as exc:  # reported by the test
            out["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, stop, out


# --------------------------------------------------------------------------------------------
# 1. a transaction of many small statements: every piece repeats every table map so far


def test_many_statement_transaction_is_not_cut_into_ever_bigger_pieces(env):
    """A transaction of many single-row statements (an ORM flushing row by row, a procedure
    looping) has one table map per statement. The reader keeps *every* table map of the open
    transaction (`_Open.maps`, duplicates included) and repeats all of them at the head of each
    1 MB piece. Once those maps alone reach `piece_bytes` (~15k statements of a small table),
    every following row event makes a new piece of >1 MB: the bytes handed to the decoders grow
    quadratically (20k statements, a 4 MB binlog transaction, become ~10k pieces of 1.1+ MB,
    each decoder re-walking ~17k maps per piece), and the maps list itself grows without bound
    (the memory bound does not hold). Measured: CDC applies this transaction in 248 s (the
    code before the change: 11 s); twice the statements take four times as long.

    Checked twice: the reader's output for the transaction stays within a small multiple of
    its binlog size, and CDC applies the 20k rows within 60 s."""
    env.sql(
        "CREATE TABLE rq_a (id INT PRIMARY KEY, v INT)",
        "CREATE PROCEDURE rq_fill(n INT) BEGIN DECLARE i INT DEFAULT 0; START TRANSACTION; "
        "WHILE i < n DO INSERT INTO rq_a VALUES (i, i); SET i = i + 1; END WHILE; COMMIT; END",
    )
    path = env.mapping("  - {name: rq_a, from: rq_a}\n")
    m = load_mapping(path)
    backfill(m, workers=1)
    conn = connect(m.source_url)
    start = master_position(conn)
    env.sql("CALL rq_fill(20000)")
    end = master_position(conn)
    conn.close()
    binlog_bytes = end.pos - start.pos
    assert start.file == end.file and binlog_bytes < 8 << 20

    reader = BinlogReader(m.source_url, env.db, {"rq_a"}, start)
    handed_on = 0
    try:
        for unit in reader.units():
            if isinstance(unit, RawTransaction):
                handed_on += sum(len(p) for p in unit.packets)
                if handed_on > 4 * binlog_bytes:
                    break  # no need to read the rest: it only gets worse
            done = isinstance(unit, Heartbeat) or (
                isinstance(unit, RawTransaction) and unit.complete
            )
            if done and reached(unit.position, end):
                break
    finally:
        reader.close()
    assert handed_on <= 4 * binlog_bytes, (
        f"the reader handed on {handed_on} bytes (and counting) for a transaction of "
        f"{binlog_bytes} binlog bytes"
    )

    t, stop, out = _run_cdc_in_thread(path, mode="until-caught-up", decoders=2)
    t.join(60)
    stop.set()
    t.join(60)
    summary: CdcSummary | None = out.get("summary")
    assert "error" not in out, out.get("error")
    assert summary is not None and summary.stopped == "caught up", (
        f"CDC did not apply one 20k-statement transaction in 60 s: {summary}"
    )
    assert env.target.rq_a.count_documents({}) == 20000


# --------------------------------------------------------------------------------------------
# 2. a batch held back while the socket stays busy with events that make no unit


def _setup_log_writer(env: Any) -> tuple[Any, Any, threading.Event, threading.Thread]:
    """hb_a (mapped) gets one committed row; hb_log (MyISAM, unmapped: another application's
    log table) gets a backlog of 3000 rows behind it, then a row every 20 ms (more often than
    the 0.1 s heartbeat period: the server sends no heartbeat while it goes on)."""
    env.sql(
        "CREATE TABLE hb_a (id INT PRIMARY KEY, v INT)",
        "CREATE TABLE hb_log (id INT AUTO_INCREMENT PRIMARY KEY, v INT) ENGINE=MyISAM",
    )
    path = env.mapping("  - {name: hb_a, from: hb_a}\n")
    backfill(load_mapping(path), workers=1)
    env.sql("INSERT INTO hb_a VALUES (1, 1)")  # the change CDC must deliver
    writer = connect(parse_mysql_url(env.url))
    writer.autocommit(True)
    wcur = writer.cursor()
    for i in range(3000):
        wcur.execute("INSERT INTO hb_log (v) VALUES (%s)", (i,))
    done = threading.Event()

    def keep_logging() -> None:
        while not done.is_set():
            wcur.execute("INSERT INTO hb_log (v) VALUES (0)")
            time.sleep(0.02)

    w = threading.Thread(target=keep_logging, daemon=True)
    w.start()
    return path, writer, done, w


def _delivers_within(source: Any, seconds: float) -> bool:
    """Does `source` yield the committed hb_a row within `seconds`?"""
    got, quit_ = threading.Event(), threading.Event()

    def run() -> None:
        for item in source.items():
            if isinstance(item, Transaction) and any(e.table == "hb_a" for e in item.events):
                got.set()
            if got.is_set() or quit_.is_set():
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ok = got.wait(seconds)
    quit_.set()
    return ok


def test_parallel_source_does_not_hold_a_commit_while_unit_less_events_stream(env):
    """The reader process flushes its batch only when it appends a unit and either the batch
    is old or `_more_waiting` says the socket is empty. A mapped commit read while more bytes
    are waiting stays in the batch; if what follows makes no unit, nothing re-checks the
    batch's age. Writes to non-transactional tables (MyISAM/Aria/MEMORY; here an unmapped log
    table in the same schema) are such events (a Query COMMIT with no mapped packets), and
    while they come more often than the heartbeat period the server sends no heartbeat
    either: the committed change is never handed to a decoder, for as long as the other
    application keeps writing. The in-process source (what CDC used before the change, and
    `--decoders 0`) yields it at once; ParallelBinlogSource (the default) does not."""
    path, writer, done, w = _setup_log_writer(env)
    try:
        m = load_mapping(path)
        conn = connect(m.source_url)
        schema = introspect(conn, env.db)
        conn.close()
        start = Position.from_dict(
            env.state.meta.find_one({"_id": "backfill_position"})["position"]
        )
        here = BinlogSource(m.source_url, schema, {"hb_a"}, start)
        try:
            assert _delivers_within(here, 10), "in process: not delivered (test setup?)"
        finally:
            here.close()
        there = ParallelBinlogSource(m.source_url, schema, {"hb_a"}, start, decoders=2)
        try:
            delivered = _delivers_within(there, 10)
        finally:
            done.set()  # the held batch goes out at the next heartbeat: let the thread end
            w.join(5)
            time.sleep(0.5)
            there.close()
        assert delivered, "parallel decoders: the committed change was not delivered in 10 s"
    finally:
        done.set()
        w.join(5)
        writer.close()


def test_cdc_applies_a_commit_while_non_transactional_writes_elsewhere_go_on(env):
    """The same stall one level up, and older than the change: the runner checks its batch's
    age (`batch_seconds`) only when the next Transaction arrives, and flushes otherwise only at
    a heartbeat. With a steady stream of non-transactional writes to an unmapped table (no
    items, no heartbeats), a committed change sits in the runner's batch, unapplied, for as
    long as they go on, even with in-process decoding (--decoders 0). With decoder processes
    the reader's batch holds it first (the test above)."""
    path, writer, done, w = _setup_log_writer(env)
    t, stop, out = _run_cdc_in_thread(path, mode="follow", decoders=0)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and env.target.hb_a.count_documents({}) == 0:
            time.sleep(0.2)
        applied = env.target.hb_a.count_documents({})
    finally:
        stop.set()
        done.set()
        w.join(5)
        t.join(30)
        writer.close()
    assert "error" not in out, out.get("error")
    assert applied == 1, "the committed change was not applied within 15 s"


# --------------------------------------------------------------------------------------------
# 3. the reader is left behind when CDC dies while the source is down


def test_a_killed_cdc_leaves_no_reader_behind_while_the_source_is_down(own_env):
    """The children are to exit when the CDC process dies. The decoders poll the lifeline
    every 0.2 s, but the reader looks at it only when it meets a heartbeat, a DDL or a full
    queue. While the source is down (restarting, failed over, decommissioned after the
    cutover) the reader sits in BinlogReader.units()' reconnect loop for ever and never looks:
    killing CDC then leaves a reader process behind that ignores SIGTERM and retries its
    binlog connection indefinitely (and, when the source comes back, opens a binlog dump
    nobody reads). Before the change the reconnect loop ran in the CDC process itself."""
    env = own_env
    env.sql("CREATE TABLE orph (id INT PRIMARY KEY, v INT)")
    path = env.mapping("  - {name: orph, from: orph}\n")
    backfill(load_mapping(path), workers=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator.cli.main", "cdc", "-m", str(path), "--decoders", "1"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(children) < 3:  # forkserver, reader, decoder
            time.sleep(0.2)
            children = _descendants(proc.pid)
        assert len(children) >= 3, children
        env.sql("INSERT INTO orph VALUES (1, 1)")
        time.sleep(1.0)
        mysql = next(p for p in env.stack.procs if p.name in ("mariadb", "mysql"))
        mysql.stop()  # the source goes away
        time.sleep(2.0)  # the reader is reconnecting now
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(c) for c in children):
            time.sleep(0.2)
        left = [c for c in children if _alive(c)]
        names = {}
        for c in left:
            try:
                with open(f"/proc/{c}/cmdline", "rb") as f:
                    names[c] = f.read().replace(b"\0", b" ")[:200]
            except OSError:
                pass
        # (the forkserver and the resource tracker stay while a child they started lives)
        assert not left, f"left behind 20 s after CDC was killed: {names}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for c in children:  # our own test's processes
            if _alive(c):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# 4. XA transactions (pre-existing: the change kept it)


def test_two_phase_xa_transaction_on_a_mapped_table_is_not_lost(env):
    """MariaDB (10.5+) and MySQL (5.7+) binlog an XA transaction at XA PREPARE, as its own
    event group (GTID, table maps, rows, `XA END`, XA_PREPARE_LOG_EVENT), and the XA COMMIT
    later as another group holding only the `XA COMMIT` query. The reader skips every query
    starting with "XA " and has no case for XA_PREPARE, so the prepared rows stay in the open
    transaction until the next GTID event throws them away: a committed row never reaches
    MongoDB, and the checkpoint moves past it. (The previous in-process source did the same;
    the rewritten reader kept it.) Either outcome is acceptable here: the row applied, or CDC
    stopping with CheckFailed before the XA transaction and staying there on a rerun."""
    env.sql("CREATE TABLE xa_a (id INT PRIMARY KEY, v VARCHAR(20))")
    path = env.mapping("  - {name: xa_a, from: xa_a}\n")
    backfill(load_mapping(path), workers=1)
    cur = env.admin.cursor()
    cur.execute(f"USE `{env.db}`")
    cur.execute("XA START 'rv1'")
    cur.execute("INSERT INTO xa_a VALUES (1, 'prepared')")
    cur.execute("XA END 'rv1'")
    cur.execute("XA PREPARE 'rv1'")
    cur.execute("XA COMMIT 'rv1'")
    env.sql("INSERT INTO xa_a VALUES (2, 'plain')")
    try:
        summary = run_cdc(load_mapping(path), mode="until-caught-up", decoders=2)
    except CheckFailed:
        with pytest.raises(CheckFailed):  # stopped before it, not past it
            run_cdc(load_mapping(path), mode="until-caught-up", decoders=0)
        return
    assert summary.stopped == "caught up"
    assert_same_as_fresh_backfill(env, path)


# --------------------------------------------------------------------------------------------
# coverage (passes): the reader's fixed-offset table-map parse


def test_table_maps_with_multibyte_prefix_and_case_variant_names(env):
    """The reader picks the mapped tables' packets by reading schema and table names at fixed
    offsets of the raw table map. Multibyte names (length bytes count bytes, not characters),
    an unmapped table whose name is a prefix of the mapped one and one differing only by case
    share transactions with it: only the mapped table's rows may reach MongoDB, all of them."""
    env.sql(
        "CREATE TABLE `café_ü€` (id INT PRIMARY KEY, v VARCHAR(20))",
        "CREATE TABLE `café` (id INT PRIMARY KEY, v VARCHAR(20))",
        "CREATE TABLE `CAFÉ_Ü€` (id INT PRIMARY KEY, v VARCHAR(20))",
    )
    path = env.mapping('  - {name: cafe, from: "café_ü€"}\n')
    backfill(load_mapping(path), workers=1)
    for i in range(1, 40):
        env.sql(
            "START TRANSACTION",
            f"INSERT INTO `café` VALUES ({i}, 'prefix')",
            f"INSERT INTO `café_ü€` VALUES ({i}, 'é{i}')",
            f"INSERT INTO `CAFÉ_Ü€` VALUES ({i}, 'case')",
            f"UPDATE `café_ü€` SET v = 'ü{i}' WHERE id = {i - 1}",
            f"DELETE FROM `CAFÉ_Ü€` WHERE id = {i - 1}",
            "COMMIT",
        )
    summary = run_cdc(load_mapping(path), mode="until-caught-up", decoders=2)
    assert summary.stopped == "caught up" and summary.dead_letters == 0
    assert summary.applied == {"café_ü€ insert": 39, "café_ü€ update": 38}, summary.applied
    assert_same_as_fresh_backfill(env, path)
