"""Binlog rows decoded in worker processes: the same stream, in the same order, as decoding in
the CDC process, on generated workloads (seeded: every type the decoders handle, transactions
big enough to be cut in pieces, a binlog rotation, a DDL, unmapped tables and schemas); the
documents CDC then writes equal a fresh backfill; the reader hands on a transaction of many
statements in pieces near its binlog size and picks only the mapped tables' rows; a commit is
delivered while unmapped non-transactional writes stream; a killed CDC leaves no child
behind, even while the source is down."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.binlog import BinlogSource
from migrator.cdc.binlog_parallel import ParallelBinlogSource
from migrator.cdc.binlog_read import BinlogReader, Heartbeat, RawTransaction, Tick
from migrator.cdc.runner import run_cdc
from migrator.model.events import DDL, Position, Transaction, reached
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.source.position import master_position
from migrator.source.schema import introspect

from .cdc_helpers import assert_same_as_fresh_backfill
from .helpers import alive, cdc_in_thread, cli_process, descendants, wait_until

TABLES = (
    "CREATE TABLE pd_a (id INT PRIMARY KEY, u BIGINT UNSIGNED, d DECIMAL(20,6), f DOUBLE, "
    "s VARCHAR(200) CHARACTER SET utf8mb4, t TEXT, dt DATETIME(6), ts TIMESTAMP(3) NULL, "
    "j JSON, e ENUM('x','y','z'), st SET('a','b','c'), b BLOB, bt BIT(10), y YEAR, tm TIME(2))",
    "CREATE TABLE pd_b (id INT PRIMARY KEY, a_id INT, note VARCHAR(50), big MEDIUMTEXT)",
    "CREATE TABLE pd_x (id INT PRIMARY KEY, v INT)",  # not mapped
)
MAPPING = "  - {name: pd_a, from: pd_a}\n  - {name: pd_b, from: pd_b}\n"


class Workload:
    """Random transactions over pd_a / pd_b (and noise elsewhere), from one seed."""

    def __init__(self, env: Any, seed: int) -> None:
        self.env, self.rng = env, random.Random(seed)
        self.a: set[int] = set()
        self.b: set[int] = set()
        self.next_id = 1
        self.extended = False

    def _a_values(self) -> list[Any]:
        r = self.rng

        def maybe(v: Any) -> Any:
            return None if r.random() < 0.15 else v

        base = datetime(2020, 1, 1) + timedelta(
            seconds=r.randrange(10**8), microseconds=r.randrange(10**6)
        )
        return [
            maybe(r.randrange(2**64)),
            maybe(f"{r.randrange(-(10**13), 10**13)}.{r.randrange(10**6):06d}"),
            maybe(r.uniform(-1e9, 1e9)),
            maybe("".join(r.choice("aé€😀 z'\\\"") for _ in range(r.randrange(0, 40)))),
            maybe("x" * r.randrange(0, 3000)),
            maybe(base.isoformat(sep=" ")),
            maybe(base.replace(microsecond=r.randrange(1000) * 1000).isoformat(sep=" ")[:23]),
            maybe(json.dumps({"k": r.randrange(100), "l": [1, "two", None], "s": "é"})),
            maybe(r.choice("xyz")),
            maybe(",".join(sorted(r.sample("abc", r.randrange(0, 4))))),
            maybe(bytes(r.randrange(256) for _ in range(r.randrange(0, 30)))),
            maybe(r.randrange(1024)),
            maybe(r.randrange(1901, 2155)),
            maybe(
                f"{r.randrange(-838, 838)}:{r.randrange(3600) // 60:02d}:{r.randrange(60):02d}.99"
            ),
        ]

    def _statement(self) -> tuple[str, Any]:
        r = self.rng
        kind = r.random()
        if kind < 0.35 or not self.a:
            i, self.next_id = self.next_id, self.next_id + 1
            self.a.add(i)
            return ("INSERT INTO pd_a VALUES (%s" + ", %s" * 14 + ")", [i, *self._a_values()])
        if kind < 0.55:
            i = r.choice(sorted(self.a))
            cols = ["u", "d", "f", "s", "t", "dt", "ts", "j", "e", "st", "b", "bt", "y", "tm"]
            vals = self._a_values()
            pick = r.sample(range(len(cols)), r.randrange(1, 5))
            sets = ", ".join(f"{cols[k]} = %s" for k in pick)
            return (f"UPDATE pd_a SET {sets} WHERE id = %s", [*(vals[k] for k in pick), i])
        if kind < 0.62:
            i = r.choice(sorted(self.a))
            self.a.discard(i)
            return ("DELETE FROM pd_a WHERE id = %s", [i])
        if kind < 0.85:
            i, self.next_id = self.next_id, self.next_id + 1
            self.b.add(i)
            extra = ", extra" if self.extended else ""
            args = [i, r.randrange(100), f"n{r.randrange(1000)}", "y" * r.randrange(0, 500)]
            if self.extended:
                args.append(r.choice([None, "e1", "e2"]))
            return (
                f"INSERT INTO pd_b (id, a_id, note, big{extra}) VALUES (%s, %s, %s, %s"
                + (", %s" if self.extended else "")
                + ")",
                args,
            )
        if kind < 0.93 and self.b:
            k = r.randrange(1, 5)
            return ("UPDATE pd_b SET a_id = a_id + 1 WHERE id %% %s = %s", [k, r.randrange(k)])
        if kind < 0.97:
            return ("REPLACE INTO pd_x VALUES (%s, %s)", [r.randrange(50), r.randrange(99)])
        return ("REPLACE INTO pd_other.t VALUES (%s, %s)", [r.randrange(50), r.randrange(99)])

    def run(self, transactions: int) -> None:
        conn = connect(parse_mysql_url(self.env.url))
        cur = conn.cursor()
        r = self.rng
        rotate_at, ddl_at, big_at = (r.randrange(transactions) for _ in range(3))
        for n in range(transactions):
            if n == rotate_at:
                cur.execute("FLUSH BINARY LOGS")
            if n == ddl_at and not self.extended:
                cur.execute("ALTER TABLE pd_b ADD COLUMN extra VARCHAR(20) NULL")
                self.extended = True
            cur.execute("START TRANSACTION")
            if n == big_at:
                # more than a piece (1 MB) and more than max_events rows in one transaction
                rows = []
                for _ in range(1500):
                    i, self.next_id = self.next_id, self.next_id + 1
                    self.b.add(i)
                    rows.append(f"({i}, 1, 'big', REPEAT('z', 900))")
                cur.execute("INSERT INTO pd_b (id, a_id, note, big) VALUES " + ",".join(rows))
                cur.execute("UPDATE pd_b SET note = 'bigger' WHERE note = 'big'")
            for _ in range(r.randrange(1, 8)):
                sql, args = self._statement()
                cur.execute(sql, args)
            cur.execute("ROLLBACK" if r.random() < 0.05 else "COMMIT")
        conn.close()


@pytest.fixture
def other_schema(env):
    cur = env.admin.cursor()
    cur.execute("CREATE DATABASE IF NOT EXISTS pd_other")
    cur.execute("CREATE TABLE IF NOT EXISTS pd_other.t (id INT PRIMARY KEY, v INT)")
    yield
    cur.execute("DROP DATABASE IF EXISTS pd_other")


def _setup(env: Any) -> Any:
    env.sql(*TABLES)
    return env.mapping(MAPPING)


def _shape(item: Any) -> Any:
    if isinstance(item, Transaction):
        return (
            "txn",
            [(e.table, e.op, e.before, e.after, e.commit_time) for e in item.events],
            item.position,
            item.complete,
            item.commit_time,
            item.gtid,
        )
    assert isinstance(item, DDL)
    return ("ddl", item.statement, item.position, item.after, item.tables)


def _read_all(source: Any, end: Position, conn: Any, db: str) -> list[Any]:
    out = []
    try:
        for item in source.items():
            if isinstance(item, DDL):
                source.set_schema(introspect(conn, db))
            if not isinstance(item, Heartbeat | Tick):
                out.append(_shape(item))
            done = isinstance(item, Heartbeat) or (isinstance(item, Transaction) and item.complete)
            if done and reached(item.position, end):
                return out
    finally:
        source.close()
    raise AssertionError("the stream ended early")


@pytest.mark.parametrize("seed", [11, 12])
def test_parallel_decoding_yields_the_same_stream_and_documents(env, other_schema, seed):
    path = _setup(env)
    m = load_mapping(path)
    backfill(m, workers=1)
    start = Position.from_dict(env.state.meta.find_one({"_id": "backfill_position"})["position"])
    Workload(env, seed).run(60)
    conn = connect(m.source_url)
    end = master_position(conn)
    schema0 = introspect(conn, env.db)
    tables = {"pd_a", "pd_b"}
    flavor = "mariadb" if "MariaDB" in conn.get_server_info() else "mysql"
    # the reference: read and decoded in this process (small pieces: big transactions split)
    here = _read_all(
        BinlogSource(m.source_url, schema0, tables, start, flavor=flavor, max_events=500),
        end,
        conn,
        env.db,
    )
    there = _read_all(
        ParallelBinlogSource(
            m.source_url, schema0, tables, start, decoders=3, flavor=flavor, max_events=500
        ),
        end,
        conn,
        env.db,
    )
    rows = sum(len(x[1]) for x in here if x[0] == "txn")
    pieces = sum(1 for x in here if x[0] == "txn" and not x[3])
    assert rows > 3000 and pieces >= 3, (rows, pieces)  # the workload did what it should
    assert any(x[0] == "ddl" for x in here)
    assert len(there) == len(here)
    for i, (a, b) in enumerate(zip(here, there, strict=True)):
        assert a == b, f"item {i} differs:\n in process {a!r:.600}\n parallel   {b!r:.600}"
    # the independent oracle: what CDC writes through the parallel decoders equals a fresh
    # backfill of MySQL's rows
    summary = run_cdc(
        m, mode="until-caught-up", on_ddl="extend", decoders=3, max_events_in_memory=500
    )
    assert summary.stopped == "caught up" and summary.dead_letters == 0
    assert_same_as_fresh_backfill(env, path)
    conn.close()


def _at_least(pids: set[int], n: int) -> set[int] | None:
    return pids if len(pids) >= n else None


def test_a_killed_cdc_leaves_no_reader_or_decoder_behind(env, other_schema):
    """SIGKILL gives the CDC process no chance to stop its children: they see their lifeline
    close and exit (a reader left running would hold a binlog connection for ever)."""
    path = _setup(env)
    backfill(load_mapping(path), workers=1)
    with cli_process("cdc", "-m", str(path), "--decoders", "2") as proc:
        # forkserver, reader, 2 decoders
        children = wait_until(lambda: _at_least(descendants(proc.pid), 4), "CDC's children")
        Workload(env, 5).run(10)  # the children are busy, not idle
        proc.kill9()
        wait_until(
            lambda: not [c for c in children if alive(c)], "CDC's children to exit", timeout=15
        )
    # and a new CDC carries on from the checkpoint
    summary = run_cdc(load_mapping(path), mode="until-caught-up", on_ddl="extend")
    assert summary.dead_letters == 0
    assert_same_as_fresh_backfill(env, path)


def test_a_transaction_of_many_statements_is_handed_on_in_pieces_near_its_binlog_size(env):
    """A transaction of many single-row statements (an ORM flushing row by row, a procedure
    looping) has one table map per statement. The reader keeps each table's map once and
    repeats those at the head of each 1 MB piece, not every map the transaction logged: what
    it hands to the decoders stays within a small multiple of the transaction's binlog size
    (repeating them all made the bytes grow quadratically past ~15k statements of a small
    table, and the maps held without bound), and CDC applies all 20k rows. How long that
    takes is bench/cdc.py's ("one transaction of 20,000 statements")."""
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

    summary = run_cdc(load_mapping(path), mode="until-caught-up", decoders=2)
    assert summary.stopped == "caught up" and summary.dead_letters == 0, summary
    assert env.target.rq_a.count_documents({}) == 20000


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


def _delivers_within(source: Any, seconds: float) -> tuple[bool, threading.Thread]:
    """Does `source` yield the committed hb_a row within `seconds`? (and the reading thread,
    which ends at the next item once the answer is known)"""
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
    return ok, t


def test_the_parallel_source_delivers_a_commit_while_unmapped_writes_stream(env):
    """Writes to non-transactional tables (MyISAM/Aria/MEMORY; here an unmapped log table in
    the same schema) make no unit for the decoders (a Query COMMIT with no mapped packets),
    and while they come more often than the heartbeat period the server sends no heartbeat
    either. A mapped commit read meanwhile is still handed on by its batch's age: the
    parallel source delivers it within seconds, as the in-process one (`--decoders 0`)
    does, not only once the other application stops writing."""
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
            delivered, reading = _delivers_within(here, 10)
            assert delivered, "in process: not delivered (test setup?)"
            reading.join(10)
        finally:
            here.close()
        there = ParallelBinlogSource(m.source_url, schema, {"hb_a"}, start, decoders=2)
        try:
            delivered, reading = _delivers_within(there, 10)
        finally:
            done.set()  # a held batch goes out at the next heartbeat: the reading thread ends
            w.join(5)
            reading.join(10)
            there.close()
        assert delivered, "parallel decoders: the committed change was not delivered in 10 s"
    finally:
        done.set()
        w.join(5)
        writer.close()


def test_cdc_applies_a_commit_while_non_transactional_writes_elsewhere_go_on(env):
    """The same one level up: the runner applies its batch by age (`batch_seconds`) while a
    steady stream of non-transactional writes to an unmapped table goes on (no items, no
    heartbeats), not only when the next transaction or a heartbeat comes, even with
    in-process decoding (--decoders 0)."""
    path, writer, done, w = _setup_log_writer(env)
    try:
        with cdc_in_thread(path, decoders=0, join=30):
            wait_until(
                lambda: env.target.hb_a.count_documents({}) == 1,
                "the committed change to be applied while the other writes go on",
                timeout=15,
            )
    finally:
        done.set()
        w.join(5)
        writer.close()


def test_a_killed_cdc_leaves_no_reader_behind_while_the_source_is_down(own_env):
    """The children exit when the CDC process dies, the reader too while it sits in its
    reconnect loop because the source is down (restarting, failed over, decommissioned after
    the cutover): it looks at its lifeline there as well, so no reader is left retrying its
    binlog connection for ever (and opening a binlog dump nobody reads when the source comes
    back)."""
    env = own_env
    env.sql("CREATE TABLE orph (id INT PRIMARY KEY, v INT)")
    path = env.mapping("  - {name: orph, from: orph}\n")
    backfill(load_mapping(path), workers=1)
    children: set[int] = set()
    try:
        with cli_process("cdc", "-m", str(path), "--decoders", "1") as proc:
            # forkserver, reader, decoder
            children = wait_until(lambda: _at_least(descendants(proc.pid), 3), "CDC's children")
            env.sql("INSERT INTO orph VALUES (1, 1)")
            wait_until(lambda: env.target.orph.count_documents({}) == 1, "CDC to apply the row")
            mysql = next(p for p in env.stack.procs if p.name in ("mariadb", "mysql"))
            mysql.stop()  # the source goes away
            wait_until(lambda: "reconnecting" in proc.log_tail(), "the reader to reconnect")
            proc.kill9()

        def left() -> dict[int, bytes]:
            names = {}
            for c in children:
                if alive(c):
                    try:
                        with open(f"/proc/{c}/cmdline", "rb") as f:
                            names[c] = f.read().replace(b"\0", b" ")[:200]
                    except OSError:
                        names[c] = b"?"
            return names

        # (the forkserver and the resource tracker stay while a child they started lives)
        wait_until(lambda: not left(), lambda: f"no child of the killed CDC: {left()}", 20)
    finally:
        for c in children:  # our own test's processes
            if alive(c):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(c, signal.SIGKILL)


def test_only_the_mapped_table_s_rows_pass_among_multibyte_prefix_and_case_variant_names(env):
    """The reader picks the mapped tables' packets by reading schema and table names at fixed
    offsets of the raw table map. Multibyte names (length bytes count bytes, not characters),
    an unmapped table whose name is a prefix of the mapped one and one differing only by case
    share transactions with it: only the mapped table's rows reach MongoDB, all of them."""
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
