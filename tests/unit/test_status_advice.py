"""What the live view tells on-call to type, for each state a migration can show."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from migrator.monitor.advice import advise

M = "-m shop.yaml"


def status(phase: str, **over: Any) -> dict[str, Any]:
    nxt = {"planned": "backfill", "sync": "dual_write", "dual_write": "read_mongo"}.get(phase)
    base: dict[str, Any] = {
        "phase": phase,
        "next_phase": nxt,
        "switch": None,
        "backfill": {"orders": {"status": "complete"}},
        "cdc": {"alive": True},
        "dead_letters": 0,
        "gates": [{"name": "cdc_lag", "ok": True, "measured": "0.0 s"}],
        "verification": {"ok": True},
        "verify_in_progress": None,
    }
    return base | over


def commands(st: dict[str, Any], down: list[str] | None = None) -> list[str]:
    return [a.command for a in advise(st, "shop.yaml", down or [])]


def test_every_gate_passing_says_move_on():
    assert commands(status("sync")) == [f"migrator cutover {M} --to dual_write"]


def test_a_copy_not_finished_says_resume_it():
    st = status("planned", backfill={"orders": {"status": "running"}})
    assert f"migrator backfill {M}" in commands(st)


def test_no_cdc_in_a_phase_that_needs_it_says_start_it_and_not_move_on():
    cmds = commands(status("sync", cdc={"alive": False}))
    assert cmds == [f"migrator cdc {M} --follow"]


def test_dead_letters_say_look_at_them_and_not_move_on():
    st = status("sync", dead_letters=3, newest_dead_letter={"reason": "bad date"})
    (a,) = advise(st, "shop.yaml", [])
    assert "3 dead letter(s)" in a.why and "bad date" in a.why and a.kind == "repair"
    assert a.command == f"migrator state dump {M} --newest 20"


def test_differences_say_recheck_then_repair():
    st = status(
        "sync",
        verification={"ok": False},
        gates=[{"name": "verify_clean", "ok": False, "measured": "2 differences"}],
    )
    assert commands(st) == [f"migrator verify {M} --changed   # then, if still different: --repair"]


def test_no_verification_says_run_one_unless_one_runs():
    gate = [{"name": "verify_clean", "ok": False, "measured": "no full verification yet"}]
    assert commands(status("sync", verification=None, gates=gate)) == [f"migrator verify {M}"]
    running = {"checked": 5, "updated_at": datetime.now(UTC).replace(tzinfo=None)}
    waiting = advise(status("sync", gates=gate, verify_in_progress=running), "shop.yaml", [])
    assert [(a.kind, a.command) for a in waiting] == [("wait", "")]
    assert "waits for verify_clean" in waiting[0].why


def test_an_interrupted_switch_says_retry_it_and_roll_back_stays_open():
    sw = {"interrupted": True, "kind": "write switch", "to": "write_mongo", "stage": "fence"}
    cmds = commands(status("read_mongo", switch=sw, next_phase="write_mongo"))
    assert cmds[0] == f"migrator cutover {M} --to write_mongo --reason 'retry'"
    assert cmds[-1] == f"migrator rollback {M} --reason 'TEXT'"


def test_a_running_switch_says_wait_only():
    sw = {"running": True, "kind": "write switch", "to": "write_mongo"}
    (a,) = advise(status("read_mongo", switch=sw), "shop.yaml", [])
    assert a.kind == "wait" and a.command == ""


def test_rollback_is_offered_from_dual_write_on_and_not_before():
    assert not any("rollback" in c for c in commands(status("sync")))
    assert commands(status("dual_write"))[-1] == f"migrator rollback {M} --reason 'TEXT'"
    assert commands(status("done", next_phase=None)) == [f"migrator rollback {M} --reason 'TEXT'"]


def test_a_server_down_says_bring_it_back_and_nothing_else():
    advice = advise(status("sync", cdc={"alive": False}), "shop.yaml", ["MySQL at db:3306"])
    assert [a.why.split(" does not")[0] for a in advice] == ["MySQL at db:3306"]
