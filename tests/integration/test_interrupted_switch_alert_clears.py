"""An interrupted write switch is reported (status, `migrator_switch_interrupted`, the
MigratorWriteSwitchInterrupted alert) while it is the thing to resolve; once the operator has
moved the phase another way (a rollback), it is history: the alert must not fire on for ever."""

from __future__ import annotations

import json

from .conftest import migrator_cmd
from .helpers import cli_process, state_metric, to_read_mongo, wait_until


def _interrupted_gauge(path) -> float:
    return state_metric(path, "migrator_switch_interrupted")


def test_a_rollback_after_an_interrupted_switch_clears_it(env, tmp_path):
    path, _ = to_read_mongo(env, tmp_path)
    short = tmp_path / "short-freeze.yaml"
    short.write_text("version: 1\ndefaults: {freeze_timeout_seconds: 2}\n")
    sw = cli_process(
        "cutover", "-m", str(path), "--to", "write_mongo", "--force", "--reason", "t", "--yes",
        "--json", "--playbook", str(short), pause="fence:60", pipe=True,
    )  # fmt: skip
    with sw as proc:
        ctl = env.state.control
        wait_until(lambda: ctl.find_one({"_id": "control"}).get("switch") or {}, "the switch")
        proc.kill9()
    st = json.loads(migrator_cmd("status", "-m", str(path), "--json").stdout)
    assert st["phase"] == "read_mongo" and st["switch"]["interrupted"]
    assert _interrupted_gauge(path) == 1
    # on-call decides against retrying: back to dual_write (not fenced: MySQL stays first)
    migrator_cmd("rollback", "-m", str(path), "--yes", "--reason", "give up the switch today")
    st = json.loads(migrator_cmd("status", "-m", str(path), "--json").stdout)
    assert st["phase"] == "dual_write"
    # nothing is interrupted any more: the alert (max of the gauge == 1 for 1m) must clear
    assert _interrupted_gauge(path) == 0, st["switch"]
