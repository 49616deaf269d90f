"""Review findings on backfill scale-out (copy members, leased chunks, insert_or_replace)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

from migrator.backfill.copy import CopyFence, _wait_for_plan, backfill
from migrator.cdc.runner import run_cdc
from migrator.errors import CheckFailed
from migrator.model.settings import load_mapping
from migrator.progress import NullProgress
from migrator.sink.mongo import DocumentWriter
from migrator.state.store import StateStore, now

from .conftest import REPO
from .test_backfill import make_shop


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
    backfill takes it over (created=True, e.g. `--restart`) but the takeover `$set`s only the
    lease: `planned` stays True. A joiner then reads/copies at once, while the new creator is
    still resetting (deleting chunks, target documents, the position) and planning."""
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
        # the creator has not reset nor planned yet: the joiner must wait for it
        t0 = time.monotonic()
        try:
            _wait_for_plan(state, joiner, plans, timeout=3)  # type: ignore[arg-type]
            returned = f"returned after {time.monotonic() - t0:.2f} s"
        except CheckFailed as exc:
            returned = f"CheckFailed: {exc.message}"
        assert returned.startswith("CheckFailed: the copy"), (
            "joiner went ahead before its creator planned: " + returned,
            f"copy doc planned={state.meta.find_one({'_id': 'copy'}).get('planned')!r}",
        )
    finally:
        joiner.stop()
        creator.stop()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(x) for x in text]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_killed_worker_process_does_not_hang_the_backfill_and_cdc_forever(env):
    """One of the --workers processes dies (OOM killer, kill -9) holding a chunk: the
    coordinator waits for its result forever (`outstanding` never drops, other workers are
    alive), and its fence ticker renews that chunk's lease and the copy membership forever:
    no other machine can reclaim the chunk, every backfill polls for it, CDC stays paused."""
    path = make_shop(env, orders=300, chunk_size=100)
    bf = subprocess.Popen(
        [sys.executable, "-m", "migrator.cli.main", "backfill", "-m", str(path), "--workers", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MIGRATOR_FAULT_PAUSE": "chunk-copied:4"},
    )
    try:
        deadline = time.monotonic() + 60
        while env.state.chunks.count_documents({"worker": {"$exists": True}}) < 1:
            assert time.monotonic() < deadline and bf.poll() is None
            time.sleep(0.05)
        time.sleep(1.0)  # a worker is inside the pause, holding its chunk
        workers = [c for c in _children(bf.pid) if "resource_tracker" not in _cmdline(c)]
        assert len(workers) == 2, [_cmdline(c) for c in workers]
        os.kill(workers[0], signal.SIGKILL)
        try:
            bf.wait(timeout=120)
            outcome = f"exited {bf.returncode}"
        except subprocess.TimeoutExpired:
            outcome = "still running after 120 s"
        copy = env.state.meta.find_one({"_id": "copy"})
        left = list(env.state.chunks.find({"done": False}, {"worker": 1, "lease": 1}))
        assert bf.returncode is not None, (outcome, "copy:", copy, "chunks left:", left)
        # it may fail, but then the chunk is free and CDC is not fenced off any more
        assert StateStore(env.mongo, env.state_db).copy_in_progress() is None
    finally:
        if bf.poll() is None:
            bf.kill()
            bf.communicate()


def test_insert_or_replace_converges_where_upsert_does_with_a_stale_unique_value(env):
    """insert_or_replace claims 'the result is the same as upsert'. A stale document (a chunk
    retried after a crash, the source changed meanwhile) holds a unique value that a NEW row
    of the same batch now has: upsert (replace in order) frees it first and succeeds;
    insert_many (unordered) reports a dup on the unique index, which is re-raised. Every
    rerun of the backfill fails the same way: it can never complete without --restart."""
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
    running, or paused: the rerun must converge); the rerun fails on every try."""
    env.sql(
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(50) NOT NULL UNIQUE)",
        "INSERT INTO users VALUES (1, 'a@x')",
    )
    path = env.mapping("  - {name: users, from: users}\n")
    env.target.users.create_index("email", unique=True)
    cmd = [sys.executable, "-m", "migrator.cli.main", "backfill", "-m", str(path)]
    victim = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "MIGRATOR_FAULT_PAUSE": "chunk-copied:60"},
    )
    deadline = time.monotonic() + 60
    while env.target.users.count_documents({}) < 1:
        assert time.monotonic() < deadline and victim.poll() is None
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    env.sql("UPDATE users SET email = 'c@x' WHERE id = 1", "INSERT INTO users VALUES (2, 'a@x')")
    out = []
    for _ in range(2):
        p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
        out.append((p.returncode, p.stderr.strip().splitlines()[-1:]))
    assert [rc for rc, _ in out] == [0, 0], out
    assert [(d["_id"], d["email"]) for d in env.target.users.find().sort("_id")] == [
        (1, "c@x"),
        (2, "a@x"),
    ]


def test_a_joiner_does_not_take_a_stale_cdc_ack_for_a_pause(env):
    """CDC acknowledges a copy by its creator's id, and leaves `acked_copy` in its status
    after it resumes. A joiner waits for `acked_copy == copy id`: an ack left over from before
    CDC resumed satisfies it, so the joiner reads while CDC applies. Here: the copy's only
    member stalls past its lease (CDC resumes, as designed), then its ticker renews the lease
    again (the member is still in the document), and a second backfill joins the copy."""
    path = make_shop(env, orders=20)
    backfill(load_mapping(path), workers=1)
    stop = threading.Event()
    t = threading.Thread(
        target=lambda: run_cdc(load_mapping(path), mode="follow", stop=stop), daemon=True
    )
    t.start()
    state = StateStore(env.mongo, env.state_db)
    try:
        deadline = time.monotonic() + 60
        while not state.cdc_alive():
            assert time.monotonic() < deadline
            time.sleep(0.1)
        creator = CopyFence(state, NullProgress()).start()  # CDC acks it and pauses
        assert (state.cdc_status() or {}).get("waiting_for") == "backfill"
        _crash(state, creator)  # stalls: its lease runs out
        while (state.cdc_status() or {}).get("waiting_for") == "backfill":
            assert time.monotonic() < deadline
            time.sleep(0.05)  # CDC resumed (it applies again)
        state.renew_copy(creator.owner)  # the stalled process wakes: its ticker renews
        joiner = CopyFence(state, NullProgress()).start()
        st = state.cdc_status() or {}
        joiner.stop()
        creator.stop()
        assert st.get("waiting_for") == "backfill", (
            "the joiner's fence returned while CDC was not paused",
            {k: st.get(k) for k in ("acked_copy", "waiting_for", "alive_at")},
        )
    finally:
        stop.set()
        t.join(timeout=30)


def test_a_member_s_lease_is_renewed_while_it_copies(env):
    """Sanity: renew_copy (array_filters, $max) moves the member's expiry on this server."""
    make_shop(env, orders=5)
    state = StateStore(env.mongo, env.state_db)
    fence = CopyFence(state, NullProgress()).start()
    try:
        first = state.meta.find_one({"_id": "copy"})["members"][0]["expires"]
        time.sleep(4.5)
        later = state.meta.find_one({"_id": "copy"})["members"][0]["expires"]
        assert later > first + timedelta(seconds=2)
    finally:
        fence.stop()
    assert state.meta.find_one({"_id": "copy"}) is None
