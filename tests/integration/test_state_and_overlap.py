"""The state store belongs to one migration; backfill --restart moves CDC's start and is refused
past sync; CDC never writes while a backfill copies; an idle source still has a measured lag."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

from migrator.backfill.copy import backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.gates import evaluate
from migrator.cutover.playbook import default_playbook
from migrator.devtools.shop import ShopWriter
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect
from migrator.state.store import StateStore

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import REPO, Env, migrator_cmd
from .test_backfill import make_shop


def test_a_second_migration_on_the_same_state_database_is_refused(env, tmp_path):
    path_a = make_shop(env, orders=10)
    backfill(load_mapping(path_a), workers=1)
    # another source database, another target database, the same state database
    env.sql(f"CREATE DATABASE IF NOT EXISTS `{env.db}_b`")
    env.admin.cursor().execute(f"CREATE TABLE `{env.db}_b`.t (id INT PRIMARY KEY)")
    try:
        other = tmp_path / "b.yaml"
        other.write_text(
            "version: 1\n"
            f'source: {{url: "{env.url}_b"}}\n'
            f'target: {{url: "{env.stack.mongo_url}", database: {env.db}_b}}\n'
            f"state: {{database: {env.state_db}}}\n"
            "collections:\n  - {name: t, from: t}\n"
        )
        for cmd in (["backfill"], ["cdc", "--until-caught-up"], ["verify"], ["status"]):
            p = migrator_cmd(*cmd, "-m", str(other), check=2)
            assert f"state database {env.state_db!r} belongs to another migration" in p.stderr
            assert f"{env.db} -> {env.db}" in p.stderr and "state:" in p.stderr
        assert env.mongo[f"{env.db}_b"].t.count_documents({}) == 0
    finally:
        env.admin.cursor().execute(f"DROP DATABASE `{env.db}_b`")
        env.mongo.drop_database(f"{env.db}_b")


def test_a_state_database_without_identity_is_refused_until_claimed(env, tmp_path):
    """Records but no identity (an older version's state, or its identity removed): no mapping
    takes it over silently; `migrator state claim` does, audited, and only for one migration."""
    path_a = make_shop(env, orders=10)
    backfill(load_mapping(path_a), workers=1)
    env.state.meta.delete_one({"_id": "identity"})
    env.sql(f"CREATE DATABASE IF NOT EXISTS `{env.db}_b`")
    env.admin.cursor().execute(f"CREATE TABLE `{env.db}_b`.t (id INT PRIMARY KEY)")
    try:
        other = tmp_path / "b.yaml"
        other.write_text(
            "version: 1\n"
            f'source: {{url: "{env.url}_b"}}\n'
            f'target: {{url: "{env.stack.mongo_url}", database: {env.db}_b}}\n'
            f"state: {{database: {env.state_db}}}\n"
            "collections:\n  - {name: t, from: t}\n"
        )
        for path in (other, path_a):
            for cmd in (["backfill"], ["cdc", "--until-caught-up"], ["verify"], ["status"]):
                p = migrator_cmd(*cmd, "-m", str(path), check=2)
                assert f"state database {env.state_db!r} has no identity" in p.stderr, p.stderr
                assert "migrator state claim" in p.stderr
            p = migrator_cmd(
                "cutover", "-m", str(path), "--next", "--yes", "--reason", "x", check=2
            )
            assert "has no identity" in p.stderr
            p = migrator_cmd("plan", "-m", str(path), "--json", check=1)
            assert any("has no identity" in b for b in json.loads(p.stdout)["blocking"])
        assert env.state.meta.find_one({"_id": "identity"}) is None
        assert env.mongo[f"{env.db}_b"].t.count_documents({}) == 0
        # the user says whose it is: a reason is required, the claim is audited
        migrator_cmd("state", "claim", "-m", str(path_a), check=2)
        p = migrator_cmd(
            "state", "claim", "-m", str(path_a), "--reason", "upgraded from 0.x",
            "--actor", "dba@host", "--json", check=0,
        )  # fmt: skip
        assert json.loads(p.stdout)["claimed"] is True
        ident = env.state.meta.find_one({"_id": "identity"})
        assert ident["source"].endswith(f"/{env.db}") and ident["target"] == env.db
        entry = env.state.audit.find_one({"kind": "claim_state"})
        assert entry["actor"] == "dba@host" and entry["reason"] == "upgraded from 0.x"
        migrator_cmd("backfill", "-m", str(path_a), check=0)
        # now it is migration a's: b is refused as before, and cannot claim it
        p = migrator_cmd("backfill", "-m", str(other), check=2)
        assert "belongs to another migration" in p.stderr
        p = migrator_cmd("state", "claim", "-m", str(other), "--reason", "mine", check=2)
        assert "belongs to another migration" in p.stderr
    finally:
        env.admin.cursor().execute(f"DROP DATABASE `{env.db}_b`")
        env.mongo.drop_database(f"{env.db}_b")


def test_an_empty_state_database_is_taken_by_the_first_mapping(env):
    path = make_shop(env, orders=5)
    migrator_cmd("backfill", "-m", str(path), check=0)
    ident = env.state.meta.find_one({"_id": "identity"})
    assert ident is not None and ident["target"] == env.db


def _purge(env: Env) -> None:
    env.sql("FLUSH BINARY LOGS")
    current = env.sql("SHOW MASTER STATUS")[0][0]
    deadline = time.monotonic() + 30
    while len(env.sql("SHOW BINARY LOGS")) > 1 and time.monotonic() < deadline:
        env.sql(f"PURGE BINARY LOGS TO '{current}'")
        time.sleep(0.2)
    assert [r[0] for r in env.sql("SHOW BINARY LOGS")] == [current]


def test_backfill_restart_after_a_purge_lets_cdc_start_again(own_env):
    env = own_env
    path = make_shop(env, orders=30)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")  # CDC has a checkpoint of its own
    env.sql("UPDATE orders SET note = 'before purge' WHERE id = 1")
    _purge(env)
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=1)
    assert "purged" in p.stderr and "backfill --restart" in p.stderr
    migrator_cmd("backfill", "-m", str(path), "--restart", check=0)  # what the message says
    env.sql("UPDATE orders SET note = 'after restart' WHERE id = 2")
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=0)
    assert env.target.orders.find_one({"_id": 1})["note"] == "before purge"
    assert env.target.orders.find_one({"_id": 2})["note"] == "after restart"
    assert_same_as_fresh_backfill(env, path)


def test_backfill_restart_is_refused_past_sync(env):
    from .test_cutover import ready, step

    path = ready(env)
    for _ in range(3):
        step(path, "--next")  # backfill, sync, dual_write
    before = env.target.orders.count_documents({})
    p = migrator_cmd("backfill", "-m", str(path), "--restart", check=2)
    assert "dual_write" in p.stderr and "--restart" in p.stderr and "rollback" in p.stderr
    assert env.target.orders.count_documents({}) == before > 0


def test_cdc_waits_while_a_backfill_copies_and_then_converges(env):
    """A chunk read before a change and written after CDC applied it would overwrite the newer
    document: CDC must not apply while a backfill copies (it waits, then resumes)."""
    path = make_shop(env, orders=3000, chunk_size=100)
    stop = threading.Event()
    writer = ShopWriter(connect(parse_mysql_url(env.url)), seed=3)

    def write() -> None:
        while not stop.is_set():
            writer.step()
            time.sleep(0.005)

    # the backfill records its position first; CDC is started while it copies
    bf = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "migrator.cli.main",
            "backfill",
            "-m",
            str(path),
            "--max-rows-per-sec",
            "1500",
            "--workers",
            "2",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    t = threading.Thread(target=write)
    t.start()
    cdc = None
    try:
        deadline = time.monotonic() + 60
        while env.state.chunks.count_documents({"done": True}) < 3:
            assert time.monotonic() < deadline and bf.poll() is None
            time.sleep(0.05)
        cdc = subprocess.Popen(
            [sys.executable, "-m", "migrator.cli.main", "cdc", "-m", str(path), "--follow"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        saw_wait = False
        while bf.poll() is None:
            st = env.state.meta.find_one({"_id": "cdc_status"}) or {}
            saw_wait = saw_wait or st.get("waiting_for") == "backfill"
            time.sleep(0.1)
        assert bf.returncode == 0, bf.stderr.read() if bf.stderr else ""
        assert saw_wait
        time.sleep(2)
    finally:
        stop.set()
        t.join()
        if cdc is not None:
            cdc.send_signal(signal.SIGTERM)
            cdc.communicate(timeout=60)
    assert cdc.returncode == 0
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=0)
    assert_same_as_fresh_backfill(env, path)


def test_first_runs_started_together_on_a_fresh_state_database_are_all_accepted(env, monkeypatch):
    """README: the same `backfill` on N machines (pods started together). One process finds no
    identity and then, before it looks for records, another claims the fresh database: the
    identity it then sees is this migration's, not another's records. (Six threads opening
    one fresh state database were refused 4 times in 10 trials.)"""
    path = make_shop(env, orders=5)
    m = load_mapping(path)
    real = StateStore.holds_records
    other = mongo_connect(m.target.url)

    def another_process_claims_first(self: StateStore) -> bool:
        monkeypatch.setattr(StateStore, "holds_records", real)
        StateStore.open(other, m)  # the other pod, between this one's two reads
        return real(self)

    monkeypatch.setattr(StateStore, "holds_records", another_process_claims_first)
    client = mongo_connect(m.target.url)
    try:
        StateStore.open(client, m)  # must not be refused: the identity is its own
    finally:
        client.close()
        other.close()
    assert env.state.meta.find_one({"_id": "identity"})["target"] == env.db


def test_an_idle_source_has_a_measured_lag_and_passes_the_lag_gate(env):
    path = make_shop(env, orders=10)
    backfill(load_mapping(path), workers=1)
    stop = threading.Event()
    t = threading.Thread(
        target=lambda: run_cdc(load_mapping(path), mode="follow", stop=stop), daemon=True
    )
    t.start()
    try:
        # nothing changes in the mapped database; another database is busy
        env.sql(f"CREATE TABLE `{env.db}`.unrelated (id INT PRIMARY KEY)")
        for i in range(30):
            env.sql(f"INSERT INTO unrelated VALUES ({i})")
            time.sleep(0.1)
        time.sleep(2.5)
        st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
        assert st["cdc"]["lag_seconds"] is not None and st["cdc"]["lag_seconds"] < 2, st["cdc"]
        assert st["cdc"]["alive"] is True
        m = load_mapping(path)
        client = mongo_connect(m.target.url)
        try:
            gates = evaluate(
                "dual_write", m, StateStore(client, m.state.database), default_playbook()
            )
        finally:
            client.close()
        lag = next(g for g in gates if g.name == "cdc_lag")
        assert lag.ok, lag
    finally:
        stop.set()
        t.join(timeout=30)


def test_an_idle_source_passes_the_lag_gate_while_cdc_follows(env):
    """No change since the backfill: `cdc --follow` alone (no --until-caught-up run before it)
    must make the lag measurable, and the gate pass, on a quiet source."""
    from .test_cutover import step
    from .test_write_fence import start_cdc, wait_until

    path = make_shop(env, orders=20)
    migrator_cmd("backfill", "-m", str(path), check=0)
    migrator_cmd("verify", "-m", str(path), check=0)
    step(path, "--to", "backfill")
    step(path, "--to", "sync")
    cdc = start_cdc(env, path)
    try:
        wait_until(
            lambda: (env.state.meta.find_one({"_id": "cdc_status"}) or {}).get("lag_seconds") == 0,
            "CDC to say it is caught up",
        )
        st = json.loads(migrator_cmd("status", "-m", str(path), "--json", check=0).stdout)
        assert st["cdc"]["position"] is not None and st["cdc"]["lag_seconds"] == 0
        moved = json.loads(step(path, "--to", "dual_write", "--reason", "idle").stdout)
        assert moved["to"] == "dual_write"
        lag = next(g for g in moved["gates"] if g["name"] == "cdc_lag")
        assert lag["ok"] and lag["measured"] == "0.0 s"
    finally:
        cdc.terminate()
        assert cdc.wait(30) == 0


def test_a_backfill_that_joins_a_copy_reads_nothing_before_its_creator_has_planned(env):
    """The creator resets (--restart), records the position and plans first; a joiner waits
    for that, and gives up with a clear error if the creator dies before it."""
    from migrator.backfill.copy import CopyFence, _wait_for_plan
    from migrator.errors import CheckFailed
    from migrator.progress import NullProgress

    path = make_shop(env, orders=20)
    mapping = load_mapping(path)
    state = StateStore(env.mongo, env.state_db)
    creator = CopyFence(state, NullProgress()).start()
    joiner = CopyFence(state, NullProgress()).start()
    assert creator.created and not joiner.created and joiner.copy_id == creator.owner
    plans = [type("P", (), {"name": c.name})() for c in mapping.collections]
    for p in plans:
        state.update_collection(p.name, planned=True)  # a plan from before a --restart
    waited: list[float] = []

    def join() -> None:
        t0 = time.monotonic()
        _wait_for_plan(state, joiner, plans)  # type: ignore[arg-type]
        waited.append(time.monotonic() - t0)

    t = threading.Thread(target=join)
    t.start()
    time.sleep(1.0)
    assert t.is_alive()  # old planned flags are not the creator's word
    state.mark_copy_planned(creator.copy_id)
    t.join(timeout=10)
    assert waited and waited[0] >= 1.0
    # the creator's copy ends with the joiner still in it: the copy lives on (CDC stays paused)
    creator.stop()
    assert state.copy_in_progress() is not None
    joiner.stop()
    assert state.copy_in_progress() is None

    # a creator that stops before planning: the joiner says so instead of waiting
    creator = CopyFence(state, NullProgress()).start()
    joiner = CopyFence(state, NullProgress()).start()
    creator.stop()
    try:
        _wait_for_plan(state, joiner, plans, timeout=5)  # type: ignore[arg-type]
        raise AssertionError("joined a copy nobody plans")
    except CheckFailed as exc:
        assert "stopped before it had planned" in exc.message
    finally:
        joiner.stop()
