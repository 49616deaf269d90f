"""An interrupted write switch is reported (status, `migrator_switch_interrupted`, the
MigratorWriteSwitchInterrupted alert) while it is the thing to resolve; once the operator has
moved the phase another way (a rollback), it is history: the alert must not fire on for ever."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, generate_latest

from migrator.cutover.playbook import default_playbook
from migrator.model.settings import load_mapping
from migrator.monitor.exporter import StateCollector

from .conftest import migrator_cmd
from .helpers import cli_process, to_read_mongo, wait_until


def _interrupted_gauge(path) -> float:
    reg = CollectorRegistry()
    collector = StateCollector(load_mapping(path), default_playbook(), every=0.2)
    try:
        wait_until(lambda: collector.poller.current().status is not None, "a status read")
        reg.register(collector)
        for line in generate_latest(reg).decode().splitlines():
            if line.startswith("migrator_switch_interrupted{"):
                return float(line.split()[-1])
    finally:
        collector.close()
    raise AssertionError("no migrator_switch_interrupted")


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
