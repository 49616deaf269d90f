"""`migrator status --watch` in a real pseudo-terminal: the screen follows a live migration
through its phases, says what to type next, names a server that went down, and leaves on
Ctrl-C with exit 0."""

from __future__ import annotations

import re

from migrator.backfill.copy import backfill
from migrator.model.settings import load_mapping
from migrator.verify.engine import verify

from .conftest import migrator_cmd
from .helpers import make_shop, start_cdc, step
from .terminal import Terminal


def test_the_live_view_follows_a_migration_through_its_phases(own_env):
    env = own_env
    path = make_shop(env, orders=30)
    m = f"-m {path}"
    with Terminal("status", "-m", str(path), "--watch", "--interval", "0.5") as term:
        screen = term.wait_for("phase planned", "backfill: not started")
        assert f"migrator backfill {m}" in screen  # what to type next
        assert "servers: MySQL and MongoDB answer" in screen

        step(path, "--to", "backfill")
        backfill(load_mapping(path), workers=1)
        screen = term.wait_for("phase backfill", "3/3 collections complete")
        assert re.search(r"orders\s+│\s*complete\s+│\s*\d+/\d+", screen), screen

        step(path, "--to", "sync")
        term.wait_for("phase sync", "CDC not running", f"migrator cdc {m} --follow")
        with start_cdc(env, path):
            term.wait_for("CDC running")
            assert verify(load_mapping(path)).ok
            screen = term.wait_for("verification: clean", f"migrator cutover {m} --to dual_write")

            step(path, "--to", "dual_write")
            screen = term.wait_for("phase dual_write", f"migrator rollback {m}")
            assert "by test@ci" in screen and "cutover" in screen  # who moved it; the audit

            env.state.dead_letters.insert_one(
                {"source": "cdc", "collection": "orders", "reason": "a value the rules refuse"}
            )
            # the gate that waits for them fails; the newest one's reason is shown
            term.wait_for("dead letters 1", "a value the rules refuse", "FAIL │ dlq_empty")

            env.state.dead_letters.delete_many({})
            step(path, "--to", "read_mongo")
            step(path, "--to", "write_mongo")
            screen = term.wait_for("phase write_mongo", "reverse sync lag", "last write pause")

            mysql = next(p for p in env.stack.procs if p.name in ("mariadb", "mysql"))
            mysql.stop()
            screen = term.wait_for("DOWN MySQL at", "source.url")
            assert "phase write_mongo" in screen  # the last good read stays on screen
            mongo = next(p for p in env.stack.procs if p.name in ("secantusdb", "mongod"))
            mongo.stop()
            screen = term.wait_for("DOWN MongoDB at", "target.url", timeout=90)
        assert term.ctrl_c() == 0
    password = env.url.split(":")[2].split("@")[0]
    assert password not in term.raw.decode(errors="replace")


def test_watch_and_json_are_alternatives(env):
    path = make_shop(env, orders=5)
    p = migrator_cmd("status", "-m", str(path), "--watch", "--json")
    assert p.returncode == 2 and "--watch" in p.stderr
