"""`--log-format json --log-level debug`: every command writes one JSON object per line on
stderr, each carrying the migration's identity once the mapping is read, and says what it
started, decided and finished; a failing command logs its error; no line holds the password.

One shop and one run of the commands, in the order an operator runs them, are shared by the
tests below; each test reads what one command logged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from migrator.devtools.sandbox import free_port

from .conftest import Env, migrator_cmd
from .helpers import make_shop

IDENTITY = ("migration", "source", "target", "state_db", "command")


class Logged:
    """What one command run wrote: its exit code and its log records."""

    def __init__(self, args: tuple[str, ...], code: int, stderr: str) -> None:
        self.args, self.code, self.stderr = args, code, stderr
        self.records: list[dict[str, Any]] = []
        for line in stderr.splitlines():
            try:
                self.records.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{args}: a stderr line is not JSON: {line!r}") from None

    def named(self, msg: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["msg"] == msg]

    def one(self, msg: str) -> dict[str, Any]:
        found = self.named(msg)
        assert len(found) == 1, (msg, self.stderr[-4000:])
        return found[0]


def logged(*args: str, check: int) -> Logged:
    p = migrator_cmd("--log-format", "json", "--log-level", "debug", *args, check=check)
    return Logged(args, p.returncode, p.stderr)


@pytest.fixture(scope="module")
def runs(stack, admin, mongo, tmp_path_factory) -> Iterator[tuple[Env, dict[str, Logged]]]:
    env = Env(stack, admin, mongo, tmp_path_factory.mktemp("json-logs"))
    try:
        path = str(make_shop(env, orders=12, chunk_size=5))
        r: dict[str, Logged] = {}
        r["plan"] = logged("plan", "-m", path, "--no-samples", check=0)
        r["backfill"] = logged("backfill", "-m", path, "--workers", "1", check=0)
        r["verify"] = logged("verify", "-m", path, check=0)
        r["status"] = logged("status", "-m", path, "--json", check=0)
        r["state dump"] = logged("state", "dump", "-m", path, "--json", check=0)
        yes = ("--yes", "--actor", "test@ci")
        r["to backfill"] = logged("cutover", "-m", path, "--next", *yes, check=0)
        r["dry run"] = logged("cutover", "-m", path, "--next", "--dry-run", check=0)
        r["to sync"] = logged("cutover", "-m", path, "--next", *yes, check=0)
        # dual_write needs CDC's lag under 2 s, and CDC has not run: refused (exit 1)
        r["refused"] = logged("cutover", "-m", path, "--next", *yes, check=1)
        # the same mapping with the source at a port nobody listens on (exit 2)
        port = urlsplit(env.url).port
        away = Path(path).read_text().replace(f":{port}/", f":{free_port()}/")
        (env.tmp / "away.yaml").write_text(away)
        r["unreachable"] = logged("plan", "-m", str(env.tmp / "away.yaml"), check=2)
        yield env, r
    finally:
        env.cleanup()


def test_every_line_is_json_with_the_identity_and_never_the_password(runs):
    env, r = runs
    password = urlsplit(env.url).password
    assert password and len(password) >= 4
    src = urlsplit(env.url)
    for name, run in r.items():
        assert password not in run.stderr, name
        assert run.records, f"{name} logged nothing"
        for rec in run.records:
            missing = [k for k in IDENTITY if not rec.get(k)]
            assert not missing, (name, missing, rec)
            assert rec["migration"] == f"{env.db}->{env.db}"
            assert rec["source"] == f"{src.hostname}:{src.port}/{env.db}" or name == "unreachable"
            assert rec["target"] == env.db and rec["state_db"] == env.state_db
            assert rec["command"] == ("state dump" if run.args[0] == "state" else run.args[0])
            assert rec["level"] in ("debug", "info", "warning", "error")


def test_plan_logs_its_checks_and_its_verdict(runs):
    _env, r = runs
    plan = r["plan"]
    assert plan.one("plan started")["level"] == "info"
    checks = {c["check"]: c for c in plan.named("plan check")}
    assert {"server", "binlog_format"} <= set(checks)
    assert all(c["level"] in ("debug", "info", "warning") for c in checks.values())
    verdict = plan.one("plan finished")
    assert verdict["blocked"] is False and verdict["level"] == "info"
    assert plan.records[-1]["msg"] == "command finished" and plan.records[-1]["exit_code"] == 0


def test_backfill_logs_each_chunk_claimed_and_written_and_its_totals(runs):
    env, r = runs
    b = r["backfill"]
    started = b.one("backfill started")
    assert started["workers"] == 1 and set(started["collections"]) == {
        "customers",
        "products",
        "orders",
    }
    claimed = b.named("chunk claimed")
    written = b.named("chunk written")
    assert claimed and {c["chunk"] for c in claimed} == {w["chunk"] for w in written}
    assert all(w["level"] == "debug" and w["seconds"] >= 0 for w in written)
    orders = [w for w in written if w["collection"] == "orders"]
    assert sum(w["rows"] for w in orders) == 12 and sum(w["docs"] for w in orders) == 12
    finished = b.one("backfill finished")
    assert finished["rows"] == sum(w["rows"] for w in written) == 12 + 30 + 10
    assert finished["documents"] == env.target.orders.count_documents({}) + 40


def test_verify_logs_each_collection_and_a_clean_finish(runs):
    _env, r = runs
    v = r["verify"]
    assert v.one("verify started")["mode"] == "full"
    per = {c["collection"]: c for c in v.named("collection verified")}
    assert per["orders"]["checked"] == 12 and per["orders"]["clean"] is True
    done = v.one("verify finished")
    assert done["ok"] is True and done["checked"] == 12 + 30 + 10 and done["level"] == "info"


def test_status_and_state_dump_log_what_they_read(runs):
    _env, r = runs
    st = r["status"].one("status read")
    assert st["level"] == "debug" and st["phase"] == "planned"
    assert r["state dump"].one("state dumped")["level"] == "debug"


def test_cutover_logs_each_gate_its_decision_and_the_phase_change(runs):
    _env, r = runs
    gate = r["dry run"].one("gate judged")
    assert gate["level"] == "info" and gate["gate"] == "backfill_complete" and gate["ok"]
    assert gate["measured"] == "3/3 collections complete" and gate["threshold"] == "all"
    assert r["dry run"].one("cutover decision")["decision"] == "would go ahead"
    assert not r["dry run"].named("phase changed")
    changed = r["to sync"].one("phase changed")
    assert (changed["from_phase"], changed["to_phase"]) == ("backfill", "sync")
    assert r["to sync"].one("cutover decision")["decision"] == "go ahead"


def test_a_refused_cutover_logs_the_failing_gate_and_its_error(runs):
    _env, r = runs
    refused = r["refused"]
    lag = next(g for g in refused.named("gate judged") if g["gate"] == "cdc_lag")
    assert lag["ok"] is False and lag["measured"] == "CDC has not run"
    assert refused.one("cutover decision")["decision"] == "refused"
    err = refused.one("command failed")
    assert err["level"] == "error" and err["exit_code"] == 1
    assert err["error_type"] == "CheckFailed" and "cdc_lag is CDC has not run" in err["error"]
    assert err["hint"] and refused.records[-1] is err


def test_an_unreachable_server_is_an_error_record_with_exit_code_2(runs):
    _env, r = runs
    err = r["unreachable"].one("command failed")
    assert err["level"] == "error" and err["exit_code"] == 2
    assert err["error_type"] == "ConnectError" and "cannot reach MySQL at" in err["error"]
    assert r["unreachable"].records[-1] is err
    assert not r["unreachable"].named("command finished")
