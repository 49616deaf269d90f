"""The state store belongs to one migration; backfill --restart moves CDC's start and is refused
past sync; CDC never writes while a backfill copies; an idle source still has a measured lag."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest

from migrator.backfill.copy import CopyFence, _wait_for_plan, backfill
from migrator.cdc.runner import run_cdc
from migrator.cutover.gates import evaluate
from migrator.cutover.playbook import default_playbook
from migrator.devtools.shop import ShopWriter
from migrator.errors import CheckFailed
from migrator.model.events import Position, reached
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url
from migrator.progress import NullProgress
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect
from migrator.source.position import master_position
from migrator.state.store import StateStore, now
from migrator.verify.engine import verify

from .cdc_helpers import assert_same_as_fresh_backfill
from .conftest import migrator_cmd
from .helpers import (
    cdc_in_thread,
    cli_process,
    make_shop,
    purge_binlogs,
    ready,
    start_cdc,
    step,
    wait_until,
    walk_to,
)


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


def test_backfill_restart_after_a_purge_lets_cdc_start_again(own_env):
    env = own_env
    path = make_shop(env, orders=30)
    backfill(load_mapping(path), workers=1)
    run_cdc(load_mapping(path), mode="until-caught-up")  # CDC has a checkpoint of its own
    env.sql("UPDATE orders SET note = 'before purge' WHERE id = 1")
    purge_binlogs(env)
    p = migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=1)
    assert "purged" in p.stderr and "backfill --restart" in p.stderr
    migrator_cmd("backfill", "-m", str(path), "--restart", check=0)  # what the message says
    env.sql("UPDATE orders SET note = 'after restart' WHERE id = 2")
    migrator_cmd("cdc", "-m", str(path), "--until-caught-up", check=0)
    assert env.target.orders.find_one({"_id": 1})["note"] == "before purge"
    assert env.target.orders.find_one({"_id": 2})["note"] == "after restart"
    assert_same_as_fresh_backfill(env, path)


def test_backfill_restart_is_refused_past_sync(env):
    path = ready(env)
    walk_to(path, "dual_write")
    before = env.target.orders.count_documents({})
    p = migrator_cmd("backfill", "-m", str(path), "--restart", check=2)
    assert "dual_write" in p.stderr and "--restart" in p.stderr and "rollback" in p.stderr
    assert env.target.orders.count_documents({}) == before > 0


def test_cdc_waits_while_a_backfill_copies_and_then_converges(env):
    """A chunk read before a change and written after CDC applied it would overwrite the newer
    document: CDC must not apply while a backfill copies (it waits, then resumes)."""
    path = make_shop(env, orders=600, chunk_size=30)
    stop = threading.Event()
    writer = ShopWriter(connect(parse_mysql_url(env.url)), seed=3)

    def write() -> None:
        while not stop.is_set():
            writer.step()
            time.sleep(0.005)

    # the backfill records its position first; CDC is started while it copies (slowly enough
    # for CDC to start and acknowledge the copy before it ends)
    t = threading.Thread(target=write)
    saw_wait: list[bool] = []

    def cdc_waits_or_copy_over() -> bool:
        st = env.state.meta.find_one({"_id": "cdc_status"}) or {}
        if st.get("waiting_for") == "backfill":
            saw_wait.append(True)
            return True
        return bf.poll() is not None

    with cli_process(
        "backfill", "-m", str(path), "--max-rows-per-sec", "500", "--workers", "2"
    ) as bf:
        t.start()
        try:
            wait_until(
                lambda: env.state.chunks.count_documents({"done": True}) >= 3 or bf.poll(),
                "the backfill to copy",
            )
            assert bf.poll() is None, bf.log_tail()
            with cli_process("cdc", "-m", str(path), "--follow") as cdc:
                wait_until(cdc_waits_or_copy_over, "CDC to wait for the copy", 120, every=0.1)
                assert bf.wait(120) == 0, bf.log_tail()
                assert cdc.stop() == 0, cdc.log_tail()
        finally:
            stop.set()
            t.join()
    assert saw_wait, "CDC did not wait while the backfill copied"
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
    with cdc_in_thread(path, join=30):
        # nothing changes in the mapped tables; an unmapped one is busy
        env.sql(f"CREATE TABLE `{env.db}`.unrelated (id INT PRIMARY KEY)")
        for i in range(30):
            env.sql(f"INSERT INTO unrelated VALUES ({i})")
            time.sleep(0.1)
        busy = master_position(env.admin)
        # the status CDC publishes once it has read past the busy stretch
        wait_until(
            lambda: reached(
                Position.from_dict(
                    (env.state.meta.find_one({"_id": "cdc_status"}) or {}).get("position") or {}
                ),
                busy,
            ),
            "CDC to read past the unmapped writes",
        )
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


def test_an_idle_source_passes_the_lag_gate_while_cdc_follows(env):
    """No change since the backfill: `cdc --follow` alone (no --until-caught-up run before it)
    must make the lag measurable, and the gate pass, on a quiet source."""
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    assert verify(load_mapping(path)).ok
    walk_to(path, "sync")
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
        assert cdc.stop() == 0, cdc.log_tail()


def test_a_backfill_that_joins_a_copy_reads_nothing_before_its_creator_has_planned(env):
    """The creator resets (--restart), records the position and plans first; a joiner waits
    for that, and gives up with a clear error if the creator dies before it."""
    path = make_shop(env, orders=20)
    mapping = load_mapping(path)
    state = StateStore(env.mongo, env.state_db)
    creator = CopyFence(state, NullProgress()).start()
    joiner = CopyFence(state, NullProgress()).start()
    assert creator.created and not joiner.created and joiner.copy_id == creator.owner
    plans = [type("P", (), {"name": c.name})() for c in mapping.collections]
    for p in plans:
        state.update_collection(p.name, planned=True)  # a plan from before a --restart
    # old planned flags are not the creator's word: the joiner waits (here until its bound)
    with pytest.raises(CheckFailed, match=r"was not planned within 1 s"):
        _wait_for_plan(state, joiner, plans, timeout=1)  # type: ignore[arg-type]
    state.mark_copy_planned(creator.copy_id)
    _wait_for_plan(state, joiner, plans, timeout=1)  # type: ignore[arg-type]
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
        with pytest.raises(CheckFailed, match="stopped before it had planned"):
            _wait_for_plan(state, joiner, plans, timeout=5)  # type: ignore[arg-type]
    finally:
        joiner.stop()


def _plans(path):
    return [type("P", (), {"name": c.name})() for c in load_mapping(path).collections]


def _crash(state: StateStore, fence: CopyFence) -> None:
    """The fence's process dies (another machine's: its lease runs out; no end_copy)."""
    fence._ticker.stop()
    state.meta.update_one(
        {"_id": "copy"},
        {"$set": {"members.$[m].expires": now() - timedelta(seconds=1)}},
        array_filters=[{"m.owner": fence.owner}],
    )


def test_a_copy_taken_over_from_a_crashed_one_is_not_planned_before_its_new_creator_plans(env):
    """A copy whose members all died keeps its document, `planned: True` included. The next
    backfill takes it over (created=True, e.g. `--restart`); a joiner of the new copy waits
    for the new creator to reset (chunks, target documents, the position) and plan: the old
    copy's `planned` does not let it read at once."""
    path = make_shop(env, orders=20)
    state = StateStore(env.mongo, env.state_db)
    plans = _plans(path)
    for p in plans:
        state.update_collection(p.name, planned=True)  # the crashed run's plan
    crashed = CopyFence(state, NullProgress()).start()
    state.mark_copy_planned(crashed.copy_id)
    _crash(state, crashed)
    assert state.copy_in_progress() is None

    creator = CopyFence(state, NullProgress()).start()  # e.g. `backfill --restart`
    joiner = CopyFence(state, NullProgress()).start()
    try:
        assert creator.created and not joiner.created and joiner.copy_id == creator.owner
        # the creator has not reset nor planned yet: the joiner waits for it (to its bound)
        with pytest.raises(CheckFailed, match=r"^the copy .* was not planned within 1 s"):
            _wait_for_plan(state, joiner, plans, timeout=1)  # type: ignore[arg-type]
    finally:
        joiner.stop()
        creator.stop()


def test_a_joiner_does_not_take_a_stale_cdc_ack_for_a_pause(env):
    """CDC acknowledges a copy by its creator's id, and leaves `acked_copy` in its status
    after it resumes: a joiner's fence returns only once CDC is paused again, not on an ack
    left over from before. Here: the copy's only member stalls past its lease (CDC resumes, as
    designed), then its ticker renews the lease again (the member is still in the document),
    and a second backfill joins the copy."""
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    state = StateStore(env.mongo, env.state_db)
    with cdc_in_thread(path, join=30):
        wait_until(state.cdc_alive, "CDC to run")
        creator = CopyFence(state, NullProgress()).start()  # CDC acks it and pauses
        assert (state.cdc_status() or {}).get("waiting_for") == "backfill"
        _crash(state, creator)  # stalls: its lease runs out
        wait_until(
            lambda: (state.cdc_status() or {}).get("waiting_for") != "backfill",
            "CDC to resume (it applies again)",
        )
        state.renew_copy(creator.owner)  # the stalled process wakes: its ticker renews
        joiner = CopyFence(state, NullProgress()).start()
        st = state.cdc_status() or {}
        joiner.stop()
        creator.stop()
        assert st.get("waiting_for") == "backfill", (
            "the joiner's fence returned while CDC was not paused",
            {k: st.get(k) for k in ("acked_copy", "waiting_for", "alive_at")},
        )


def test_a_member_s_lease_is_renewed_while_it_copies(env):
    """renew_copy (array_filters, $max) moves the member's expiry on this server."""
    make_shop(env, orders=5)
    state = StateStore(env.mongo, env.state_db)
    fence = CopyFence(state, NullProgress()).start()
    try:
        first = state.meta.find_one({"_id": "copy"})["members"][0]["expires"]
        wait_until(
            lambda: (
                state.meta.find_one({"_id": "copy"})["members"][0]["expires"]
                > first + timedelta(seconds=2)
            ),
            "the member's lease to be renewed",
            timeout=30,
        )
    finally:
        fence.stop()
    assert state.meta.find_one({"_id": "copy"}) is None


def test_a_backfill_starts_at_once_while_cdc_follows_an_idle_source(env):
    """A backfill takes the copy lease and waits until a live CDC acknowledges it. A CDC
    following a quiet source (the normal state between maintenance jobs) has no batch to
    apply, and still acknowledges: the backfill goes ahead (it is not held until its
    600 s bound and then failed with "CDC did not pause for the backfill")."""
    path = make_shop(env, orders=5)
    backfill(load_mapping(path), workers=1)
    errors: list[BaseException] = []

    def second_backfill() -> None:
        try:
            backfill(load_mapping(path), workers=1)  # e.g. a collection added to the mapping
        except BaseException as exc:  # reported below
            errors.append(exc)

    bf = threading.Thread(target=second_backfill)
    with cdc_in_thread(path):
        # CDC is idle: it has published its status from reading heartbeats
        wait_until(
            lambda: (env.state.meta.find_one({"_id": "cdc_status"}) or {}).get("position"),
            "CDC to be idle",
        )
        bf.start()
        bf.join(timeout=30)
        held = bf.is_alive()
    if held:
        bf.join(timeout=120)
    assert not held, "the backfill was still waiting for an idle CDC after 30 s"
    assert not errors, errors
