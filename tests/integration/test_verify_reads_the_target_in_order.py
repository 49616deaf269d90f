"""A full verification reads each collection's documents with one sorted scan as it walks the
source's chunks upwards (not a query per chunk, nor a second scan for extra documents), and
still finds every kind of difference:
documents missing between chunks, extra documents in gaps, before the first key and after the
last, an `_id` that is not a number, and a changed one; with BIGINT keys (Int64 `_id`s). The
source rows of the next chunk are read while one is compared."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest
from bson.int64 import Int64
from pymongo import monitoring

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping
from migrator.verify.checker import Verifier
from migrator.verify.engine import verify
from migrator.verify.results import CollectionResult


class Finds(monitoring.CommandListener):
    def __init__(self, db: str) -> None:
        self.db, self.finds = db, 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        find = event.command_name == "find" and event.command.get("find") == "t"
        if find and event.database_name == self.db:
            self.finds += 1

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass


def test_one_sorted_scan_finds_every_difference(env):
    env.sql(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t SELECT seq * 3, CONCAT('v', seq) FROM seq_1_to_400",  # ids 3..1200, gaps
    )
    path = env.mapping("  - {name: t, from: t}\n", backfill="{chunk_size: 50}")
    backfill(load_mapping(path), workers=1)
    t = env.target.t
    assert isinstance(t.find_one({"_id": 3}, {"_id": 1})["_id"], int)
    t.delete_one({"_id": 300})  # missing, mid-walk
    t.delete_one({"_id": 153})  # missing, at a chunk's first key
    t.insert_one({"_id": Int64(301), "v": "ghost"})  # extra, in a gap between keys
    t.insert_one({"_id": 1, "v": "ghost"})  # extra, before the first key
    t.insert_one({"_id": 5000, "v": "ghost"})  # extra, after the last key
    t.insert_one({"_id": "x", "v": "ghost"})  # extra, not a number
    t.update_one({"_id": 900}, {"$set": {"v": "tampered"}})  # different

    finds = Finds(env.db)
    monitoring.register(finds)  # for every client made from now on (this test's database only)
    res = verify(load_mapping(path), recheck=0)
    got = sorted((d.kind, str(d.id)) for d in res.differences)
    assert got == sorted(
        [
            ("missing", "300"),
            ("missing", "153"),
            ("extra", "301"),
            ("extra", "1"),
            ("extra", "5000"),
            ("extra", "x"),
            ("different", "900"),
        ]
    )
    # 8 chunks of 50 rows (and the open end): one sorted scan, which also finds the extra
    # documents (no second scan), one lookup of the extras found, and one read of the document
    # whose bytes differ (compared in full); not a query per chunk
    assert res.collections[0].chunks >= 8
    assert finds.finds <= 3, finds.finds


def test_the_next_chunks_are_read_and_converted_while_the_walk_waits_for_the_target(env):
    """The walk does not leave MariaDB or the tool idle while the target's scan has not
    answered (a server that sorts the collection first takes seconds): before the first
    chunk is compared, every later one (within the memory bound) has been read from the
    source and converted. A walk that read only the next chunk ahead would wait in vain."""
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_200",
    )
    path = env.mapping("  - {name: t, from: t}\n", backfill="{chunk_size: 50}")
    backfill(load_mapping(path), workers=1)
    prepared: list[Any] = []
    checked: list[Any] = []

    class Watched(Verifier):
        def prepare_chunk(self, plan: Any, bounds: Any) -> Any:
            made = super().prepare_chunk(plan, bounds)
            prepared.append(bounds[1])
            return made

        def check_chunk(self, plan: Any, lo: Any, hi: Any, **kw: Any) -> Any:
            deadline = time.monotonic() + 30
            while not checked and None not in prepared:  # the last chunk ends open (None)
                assert time.monotonic() < deadline, f"only {prepared} were made ahead"
                time.sleep(0.01)
            checked.append(hi)
            return super().check_chunk(plan, lo, hi, **kw)

    v = Watched(load_mapping(path))
    try:
        plan = v.transform.collection("t")
        res = CollectionResult("t")
        found = v.full(plan, res, sample_pct=100, chunk_size=50, rnd=random.Random(1))
    finally:
        v.close()
    assert not found and res.checked == 200 and res.chunks >= 4
    assert checked == prepared  # compared in key order, each once


def test_a_source_read_that_fails_ahead_ends_the_walk_and_the_next_run_resumes_it(env):
    """The connection the walk reads the next chunks on is killed: verify fails (no hang, no
    clean result over chunks never compared), and the next run resumes from the last chunk
    compared, finding the differences before and after the failure once each."""
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t SELECT seq, CONCAT('v', seq) FROM seq_1_to_300",
    )
    path = env.mapping("  - {name: t, from: t}\n", backfill="{chunk_size: 30}")
    backfill(load_mapping(path), workers=1)
    env.target.t.update_one({"_id": 10}, {"$set": {"v": "tampered"}})
    env.target.t.delete_one({"_id": 250})
    calls: list[Any] = []

    class Killed(Verifier):
        def prepare_chunk(self, plan: Any, bounds: Any) -> Any:
            calls.append(bounds)
            if len(calls) == 4:  # the producer's own connection dies under it
                env.sql(f"KILL {self.conn.thread_id()}")
            return super().prepare_chunk(plan, bounds)

    v = Killed(load_mapping(path), recheck=0)
    try:
        with pytest.raises(Exception):  # noqa: B017  # the MySQL error, whatever its class
            verify(v.migration, recheck=0, verifier=v)
    finally:
        v.close()
    res = verify(load_mapping(path), recheck=0)
    got = sorted((d.kind, d.id) for d in res.differences)
    assert got == [("different", 10), ("missing", 250)], got
    assert res.collections[0].checked == 300
