"""Binlog rows decoded in worker processes: the same stream, in the same order, as decoding in
the CDC process, on generated workloads (seeded: every type the decoders handle, transactions
big enough to be cut in pieces, a binlog rotation, a DDL, unmapped tables and schemas); the
documents CDC then writes equal a fresh backfill; a killed CDC leaves no child behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from migrator.backfill.copy import backfill
from migrator.cdc.binlog import BinlogSource
from migrator.cdc.binlog_parallel import ParallelBinlogSource
from migrator.cdc.binlog_read import Heartbeat, Tick
from migrator.cdc.runner import master_position, reached, run_cdc
from migrator.model.events import DDL, Position, Transaction
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.source.schema import introspect

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import REPO

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


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, pp in parents.items() if pp == p}
        todo += list(kids - out)
        out |= kids
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_killed_cdc_leaves_no_reader_or_decoder_behind(env, other_schema):
    """SIGKILL gives the CDC process no chance to stop its children: they see their lifeline
    close and exit (a reader left running would hold a binlog connection for ever)."""
    path = _setup(env)
    backfill(load_mapping(path), workers=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "migrator.cli.main", "cdc", "-m", str(path), "--decoders", "2"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        children: set[int] = set()
        while time.monotonic() < deadline and len(children) < 4:  # forkserver, reader, 2 decoders
            time.sleep(0.2)
            children = _descendants(proc.pid)
        assert len(children) >= 4, children
        Workload(env, 5).run(10)  # the children are busy, not idle
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(c) for c in children):
            time.sleep(0.2)
        assert not [c for c in children if _alive(c)]
    finally:
        if proc.poll() is None:
            proc.kill()
    # and a new CDC carries on from the checkpoint
    summary = run_cdc(load_mapping(path), mode="until-caught-up", on_ddl="extend")
    assert summary.dead_letters == 0
    assert_same_as_fresh_backfill(env, path)
