"""The write switch as an on-call engineer relies on it (DESIGN.md, "The write switch and
after"): a dead switch never holds writes past the freeze timeout, the freeze is a fence every
live writer acknowledges, one operator at a time, and one SDK instance shared by threads."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from prometheus_client import generate_latest

from migrator.cdc.runner import run_cdc
from migrator.cutover.control import Control
from migrator.cutover.fence import Fence, Registration
from migrator.cutover.sdk import DualWriter
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.state.store import now
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import (
    FREEZE,
    cdc_caught_up,
    cli_process,
    start_cdc,
    step,
    to_read_mongo,
    wait_until,
    walk_to,
)


def control(env):
    return env.state.control.find_one({"_id": "control"})


def start_switch(path, pb, *, pause: str = "", to: str = "write_mongo"):
    """`migrator cutover --to TO` (the write switch by default) as its own process."""
    return cli_process(
        "cutover", "-m", str(path), "--to", to, "--force", "--reason", "fence test", "--yes",
        "--actor", "switch@ci", "--json", "--playbook", str(pb), pause=pause, pipe=True,
    )  # fmt: skip


def frozen_waits(w: DualWriter) -> float:
    """The SDK's own count of writes that met the write switch's freeze."""
    for line in generate_latest(w.registry).decode().splitlines():
        if line.startswith("migrator_sdk_frozen_waits_total "):
            return float(line.split()[1])
    raise AssertionError("no migrator_sdk_frozen_waits_total")


def test_a_switch_killed_at_any_stage_never_holds_writes_past_the_freeze_timeout(env, tmp_path):
    """How long the application's writes wait after a killed switch is bench/cutover.py's
    ("outage after a killed switch"); here: they meet the freeze, and go by themselves once
    it is over (the SDK would give up with WritesFrozen 2 s after the freeze timeout)."""
    path, pb = to_read_mongo(env, tmp_path)
    short = tmp_path / "short-freeze.yaml"  # the killed switches' freeze: 2 s
    short.write_text("version: 1\ndefaults: {freeze_timeout_seconds: 2}\n")
    w = DualWriter(load_mapping(path), control_ttl=0.2, freeze_wait=FREEZE + 2)
    try:
        for n, stage in enumerate(["fence", "catch_up", "reverify"]):
            with start_switch(path, short, pause=f"{stage}:60") as proc:
                wait_until(
                    lambda s=stage: (control(env).get("switch") or {}).get("stage") == s, stage
                )
                proc.kill9()
            # nobody runs a command: the application's next write waits out the freeze only
            waits = frozen_waits(w)
            w.update("orders", {"id": 1}, {"note": f"after a dead switch {n}"})
            assert frozen_waits(w) == waits + 1, stage  # it met the freeze, and went
            note = f"after a dead switch {n}"
            assert env.sql("SELECT note FROM orders WHERE id = 1")[0][0] == note
            assert env.target.orders.find_one({"_id": 1})["note"] == note
            st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
            assert st["phase"] == "read_mongo" and st["freeze"] is False
            sw = st["switch"]
            assert sw["interrupted"] and sw["stage"] == stage and sw["to"] == "write_mongo"
            assert "switch@ci" in sw["holder"] and "writes unfrozen" in sw["left"]
            run_cdc(load_mapping(path), mode="until-caught-up")
        # killed right after the flip: the flip and the unfreeze are one change
        with start_switch(path, pb, pause="flipped:60") as proc:
            wait_until(lambda: control(env)["phase"] == "write_mongo", "the flip")
            proc.kill9()
        assert control(env)["freeze"] is False
        # no freeze holds the next write: it goes although this writer now gives a freeze
        # only half a second before WritesFrozen
        w.freeze_wait = 0.5
        w.update("orders", {"id": 1}, {"note": "after the flip"})
        assert env.target.orders.find_one({"_id": 1})["note"] == "after the flip"
        # a retried switch works at once: the dead operator's lease is taken over (reverse
        # sync first carries the write made after the flip to MySQL, or the rollback waits)
        run_cdc(load_mapping(path), mode="until-caught-up")
        assert env.sql("SELECT note FROM orders WHERE id = 1")[0][0] == "after the flip"
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "again", check=0)
        run_cdc(load_mapping(path), mode="until-caught-up")
        assert verify(load_mapping(path)).ok
        step(path, "--to", "write_mongo", "--force", "--reason", "retry", "--playbook", str(pb))
        assert control(env)["phase"] == "write_mongo"
    finally:
        w.close()
    recoveries = list(env.state.audit.find({"kind": "recovery"}))
    assert len(recoveries) == 3 and all("interrupted at stage" in r["detail"] for r in recoveries)


def test_the_switch_waits_for_live_writers_and_not_for_dead_ones(env, tmp_path):
    path, pb = to_read_mongo(env, tmp_path)
    writers = env.state["writers"]
    stop = threading.Event()

    def stuck_writer():  # alive (it beats) but never acknowledges: a write that hangs
        n = 0
        while not stop.wait(0.1):
            n += 1
            writers.update_one(
                {"_id": "app-host:4242:stuck"}, {"$set": {"beats": n, "at": now()}}, upsert=True
            )

    t = threading.Thread(target=stuck_writer)
    t.start()
    try:
        p = step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb),
                 check=1)  # fmt: skip
    finally:
        stop.set()
        t.join()
    assert "did not acknowledge the write freeze" in p.stderr and "app-host:4242:stuck" in p.stderr
    doc = control(env)
    assert doc["phase"] == "read_mongo" and doc["freeze"] is False and doc["lease"] is None
    # the same writer, dead now (no more beats): presumed gone after its timeout
    res = json.loads(
        step(path, "--to", "write_mongo", "--force", "--reason", "t", "--playbook", str(pb)).stdout
    )
    assert res["to"] == "write_mongo" and res["fence"]["gone"] == 1


def test_no_write_runs_under_the_old_order_after_the_flip(env, tmp_path):
    """Two SDK instances, one shared by three threads, write hot rows through the switch and
    a rollback: every write routed MySQL-first ended before the flip to MongoDB-first, and the
    other way round for the rollback; both stores hold every acknowledged write."""
    path, pb = to_read_mongo(env, tmp_path)
    m = load_mapping(path)
    shared = DualWriter(m, control_ttl=1.0, freeze_wait=30)
    alone = DualWriter(m, control_ttl=1.0, freeze_wait=30)
    log: list[tuple[str, datetime, datetime]] = []  # (first store, routed, ended) per write
    local = threading.local()
    for w in (shared, alone):
        orig = w._writable

        def recording(orig=orig):
            doc = orig()
            local.order = doc["writes_to"][0]
            local.decided = datetime.utcnow()  # the write is routed from here on
            return doc

        w._writable = recording
    stop = threading.Event()

    def app(w, k):
        i = 0
        while not stop.is_set():
            i += 1
            w.update("orders", {"id": 1 + (i % 3)}, {"note": f"t{k}-{i}"})
            log.append((local.order, local.decided, datetime.utcnow()))

    threads = [threading.Thread(target=app, args=(shared, k)) for k in range(3)]
    threads.append(threading.Thread(target=app, args=(alone, 3)))

    def more_writes(n: int) -> None:
        """Wait for `n` more acknowledged writes (each thread writes in every phase)."""
        start = len(log)
        wait_until(lambda: len(log) >= start + n, f"{n} more application writes")

    cdc = start_cdc(env, path)
    for t in threads:
        t.start()
    try:
        more_writes(20)
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        flip = control(env)["updated_at"]
        more_writes(20)
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        back = control(env)["updated_at"]
        more_writes(20)
    finally:
        stop.set()
        for t in threads:
            t.join()
        shared.close()
        alone.close()
        cdc.stop()
    eps = timedelta(milliseconds=2)  # MongoDB keeps milliseconds
    assert {o for o, _, _ in log} == {"mysql", "mongo"}
    for order, start, end in log:
        if order == "mysql":
            assert end <= flip + eps or start >= back - eps, (order, start, end, flip, back)
        else:
            assert start >= flip - eps and end <= back + eps, (order, start, end, flip, back)
    run_cdc(m, mode="until-caught-up")
    assert verify(m).ok


def test_two_operators_at_once_end_in_one_audited_state(env, tmp_path):
    path, pb = to_read_mongo(env, tmp_path)
    with start_switch(path, pb, pause="fence:2") as proc:
        wait_until(lambda: (control(env).get("switch") or {}).get("stage") == "fence", "the fence")
        p = migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "panic", check=1)
        assert "another operation holds the cutover lease" in p.stderr
        _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert control(env)["phase"] == "write_mongo"
    audit = [(a["kind"], a["outcome"]) for a in env.state.audit.find({}).sort("at", 1)]
    assert audit[-2:] == [("rollback", "refused"), ("cutover", "done")]
    # both at the very same moment: whatever wins, the phase is what the audit says happened
    rollback = ("rollback", "-m", str(path), "--yes", "--reason", "race", "--actor", "rollback@ci")
    with start_switch(path, pb, to="done") as switch, cli_process(*rollback, pipe=True) as back:
        for p in (switch, back):
            p.communicate(timeout=120)
    codes = [switch.returncode, back.returncode]
    entries = list(env.state.audit.find({}).sort("at", 1))[len(audit) :]
    assert len(entries) == 2 and all(c in (0, 1, 2) for c in codes)
    done = [e for e in entries if e["outcome"] == "done"]
    assert len(done) >= 1
    assert control(env)["phase"] == done[-1]["to_phase"]
    assert control(env)["freeze"] is False and control(env)["lease"] is None


def test_one_sdk_instance_shared_by_threads_keeps_documents_right(env, tmp_path):
    """Threads share one SDK instance: each update carries its own row (read under the write
    lock), never another thread's, so no item moves between orders."""
    path, _ = to_read_mongo(env, tmp_path)
    migrator_cmd("rollback", "-m", str(path), "--to", "dual_write", "--yes", check=0)
    m = load_mapping(path)
    w = DualWriter(m, control_ttl=1.0)
    items = env.sql("SELECT order_id, line_no FROM order_items ORDER BY 1, 2 LIMIT 8")
    errors: list[BaseException] = []

    def app(k):
        try:
            for i in range(40):
                o, line = items[(i + k) % len(items)]
                w.update("order_items", {"order_id": o, "line_no": line}, {"qty": k * 100 + i})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=app, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert not errors
    res = verify(m, recheck=0)  # no CDC: the SDK's own MongoDB writes must be right
    assert res.ok, res.differences[:3]
    assert Control(env.state.control).get()["phase"] == "dual_write"


def test_after_the_switch_cdc_applies_nothing_from_mysql_until_a_rollback(env, tmp_path):
    """MongoDB is the source of truth from write_mongo on: a MySQL change (an admin) must not
    overwrite the newer document; the same `cdc --follow` carries MongoDB's changes to MySQL
    instead (reverse sync), and after a rollback restarts where the rollback left MySQL."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path)
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        env.target.orders.update_one({"_id": 3}, {"$set": {"note": "newer, in MongoDB"}})
        wait_until(
            lambda: env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "newer, in MongoDB",
            "reverse sync",
        )
        env.sql("UPDATE orders SET note = 'older, in MySQL' WHERE id = 3")
        # the same process goes on carrying MongoDB's changes (and not MySQL's): one made
        # after the MySQL change reaches MySQL
        env.target.orders.update_one({"_id": 13}, {"$set": {"note": "a later MongoDB change"}})
        wait_until(
            lambda: (
                env.sql("SELECT note FROM orders WHERE id = 13")[0][0] == "a later MongoDB change"
            ),
            "reverse sync",
        )
        assert env.target.orders.find_one({"_id": 3})["note"] == "newer, in MongoDB"
        st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
        assert st["cdc"]["alive"] and st["reverse_sync"]["lag_seconds"] == 0
        p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", "--json", check=0)
        assert "MongoDB is the source of truth" in json.loads(p.stdout)["stopped"]
        assert env.target.orders.find_one({"_id": 3})["note"] == "newer, in MongoDB"
        # verify --repair goes toward the source of truth: MySQL's row is rewritten from
        # MongoDB's document, the document stays
        p = migrator_cmd("verify", "-m", str(path), "--repair", "--json", check=0)
        assert json.loads(p.stdout)["totals"]["repaired"] == 1
        assert env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "newer, in MongoDB"
        assert env.target.orders.find_one({"_id": 3})["note"] == "newer, in MongoDB"
        assert verify(load_mapping(path)).ok
        # MongoDB changes reverse sync writes to MySQL (their echo is in the binlog), then a
        # MySQL change made directly while MongoDB is the truth
        for i in range(5, 15):
            env.target.orders.update_one({"_id": i}, {"$set": {"note": f"in MongoDB {i}"}})
        wait_until(
            lambda: env.sql("SELECT note FROM orders WHERE id = 14")[0][0] == "in MongoDB 14",
            "reverse sync",
        )
        env.sql("UPDATE orders SET note = 'older, in MySQL' WHERE id = 4")
        events = (env.state.meta.find_one({"_id": "cdc_status"}) or {}).get("events", 0)
        p = migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", "--json",
                         check=0)  # fmt: skip
        restart = json.loads(p.stdout)["cdc_restart"]
        assert restart["file"] and restart["pos"]
        env.sql("UPDATE orders SET note = 'after the rollback' WHERE id = 5")
        wait_until(
            lambda: env.target.orders.find_one({"_id": 5})["note"] == "after the rollback",
            "CDC to resume",
        )
        # CDC restarted at the rollback's position: the echoes were not replayed (documents
        # would have gone back in time until CDC caught up), only the change made after it
        cp = env.state.meta.find_one({"_id": "cdc_checkpoint"})["position"]
        assert (cp["file"], cp["pos"]) >= (restart["file"], restart["pos"])
        cdc_caught_up(env, status=True)  # the status (published once a second) is of now
        applied = env.state.meta.find_one({"_id": "cdc_status"})["events"] - events
        assert applied == 1, applied
        assert env.target.orders.find_one({"_id": 14})["note"] == "in MongoDB 14"
        # the direct MySQL write of the time MongoDB was the truth is not carried (README):
        # a full verify finds it, and repair now goes toward MySQL
        res = verify(load_mapping(path))
        assert [d.id for d in res.differences] == [4], res.differences
        p = migrator_cmd("verify", "-m", str(path), "--repair", "--json", check=0)
        assert json.loads(p.stdout)["totals"]["repaired"] == 1
        assert env.target.orders.find_one({"_id": 4})["note"] == "older, in MySQL"
        assert env.target.orders.find_one({"_id": 3})["note"] == "newer, in MongoDB"
    finally:
        assert cdc.stop() == 0, cdc.log_tail()


@pytest.mark.parametrize("restarted", [False, True], ids=["same-cdc", "cdc-restarted"])
def test_a_mapped_table_altered_while_mongodb_was_the_truth_is_met_after_the_rollback(
    env, tmp_path, restarted
):
    """CDC restarts where the rollback left MySQL, except when a mapped table's columns
    changed since the write switch: the DDL is in the skipped stretch (a running CDC's
    decoder still holds the old columns; one started since has the new ones, but the DDL's
    --on-ddl handling, here filling the new column's default into every document, would be
    skipped): it replays from its checkpoint instead and meets the DDL."""
    path, pb = to_read_mongo(env, tmp_path)
    cdc = start_cdc(env, path, "--on-ddl", "extend")
    try:
        walk_to(path, "write_mongo", pb)  # the switch, in process (CDC running)
        env.sql("ALTER TABLE orders ADD COLUMN extra INT NULL DEFAULT 7")
        if restarted:
            cdc.stop()
            cdc = start_cdc(env, path, "--on-ddl", "extend")
        env.target.orders.update_one({"_id": 3}, {"$set": {"note": "in MongoDB"}})
        wait_until(
            lambda: env.sql("SELECT note FROM orders WHERE id = 3")[0][0] == "in MongoDB",
            "reverse sync",
        )
        migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "back", check=0)
        env.sql("UPDATE orders SET extra = 5, note = 'after' WHERE id = 2")
        wait_until(
            lambda: env.target.orders.find_one({"_id": 2}).get("note") == "after" or cdc.poll(),
            "CDC to apply the change made after the rollback",
        )
        assert cdc.poll() is None, cdc.log_tail()
        doc = env.target.orders.find_one({"_id": 2})
        assert doc["note"] == "after" and doc["extra"] == 5, doc
        assert env.target.orders.find_one({"_id": 4}).get("extra") == 7  # the DDL was met
        assert env.target.orders.find_one({"_id": 3})["note"] == "in MongoDB"
    finally:
        cdc.stop()


def test_the_survey_tells_each_live_writer_once_and_a_dead_one_by_its_silence(env):
    """Before the freeze the switch tells live writers from dead ones. A writer seen to beat
    once is live for the rest of the survey: requiring every writer to have just beaten at
    the same look made a survey with several writers run to its timeout every time."""
    writers = env.state["writers"]
    regs = [Registration(writers) for _ in range(8)]
    dead = Registration(writers)
    dead.beat()  # registered, then its process died
    stop = threading.Event()

    def beating(r):
        while not stop.wait(0.25):
            r.beat()

    threads = [threading.Thread(target=beating, args=(r,)) for r in regs]
    for t in threads:
        t.start()
    try:
        fence = Fence(writers, writer_timeout=1.0)
        fence.survey()
        assert fence.live == {r.id for r in regs}
        assert fence.gone == {dead.id}
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_a_write_stuck_in_mysql_keeps_its_writer_alive_and_the_switch_does_not_flip(env, tmp_path):
    """An SDK write waits on a MySQL row lock for longer than the switch's writer timeout
    (3 s). Its writer must keep beating (alive) without acknowledging: the switch waits for
    it and gives up at its deadline (a beat that waited for the write's lock would make the
    writer look gone after 3 s, and the switch flip while that write could still finish under
    the old order, MySQL first)."""
    path, _ = to_read_mongo(env, tmp_path)
    pb = tmp_path / "slow.yaml"
    pb.write_text("version: 1\ndefaults: {freeze_timeout_seconds: 8}\n")
    m = load_mapping(path)
    blocker = connect(parse_mysql_url(m.source.url))
    blocker.autocommit(False)
    cur = blocker.cursor()
    cur.execute("SELECT id FROM orders WHERE id = 1 FOR UPDATE")
    w = DualWriter(m, control_ttl=1.0, freeze_wait=30)
    stuck = threading.Thread(target=w.update, args=("orders", {"id": 1}, {"note": "stuck"}))
    try:
        stuck.start()
        wait_until(  # the write is in flight, waiting for the row lock
            lambda: env.sql(
                "SELECT id FROM information_schema.processlist WHERE info LIKE 'UPDATE %%' "
                "AND db = %s AND id <> CONNECTION_ID()",
                args=(env.db,),
            ),
            "the SDK's UPDATE to wait for the row lock",
        )
        with start_switch(path, pb) as proc:
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, (out, err)
        assert "did not acknowledge the write freeze" in err, err
        assert control(env)["phase"] == "read_mongo" and control(env)["freeze"] is False
    finally:
        blocker.rollback()
        blocker.close()
        stuck.join(timeout=30)
        w.close()
    assert env.sql("SELECT note FROM orders WHERE id = 1")[0][0] == "stuck"
    assert env.target.orders.find_one({"_id": 1})["note"] == "stuck"
