"""The `next` section of `status --watch`: what it tells on-call to type must be a command the
CLI accepts in the state shown, and it never calls a blocked migration done."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from rich.console import Console

from migrator.model.phases import next_phase
from migrator.monitor.advice import advise
from migrator.monitor.snapshot import Snapshot, utcnow
from migrator.monitor.view import screen


def status(phase: str, **over: Any) -> dict[str, Any]:
    """A status as Machine.status() returns it: every gate passes, CDC runs, verified."""
    now = utcnow()
    base: dict[str, Any] = {
        "phase": phase,
        "version": 4,
        "updated_by": "ops@host",
        "updated_at": now,
        "reason": None,
        "freeze": False,
        "switch": None,
        "backfill": {
            "orders": {
                "status": "complete",
                "chunks_done": 3,
                "chunks_total": 3,
                "rows_done": 30,
                "rows_per_sec": 0.0,
                "eta_seconds": None,
            }
        },
        "cdc": {
            "alive": True,
            "lag_seconds": 0.0,
            "events_per_sec": 10.0,
            "events": 100,
            "checkpoint_age_seconds": 1.0,
            "source": "binlog",
        },
        "reverse_sync": {"running": False},
        "verification": {"ok": True, "mode": "full", "age_seconds": 60.0, "differences": {}},
        "verify_in_progress": None,
        "dead_letters": 0,
        "newest_dead_letter": None,
        "pending": 0,
        "sdk_failures": 0,
        "last_write_pause": None,
        "next_phase": next_phase(phase),
        "gates": [{"name": "cdc_lag", "ok": True, "measured": "0.0 s", "threshold": "< 2 s"}],
        "problems": {},
        "audit": [],
    }
    return base | over


def drawn(st: dict[str, Any]) -> str:
    console = Console(width=200, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(screen(Snapshot(st, utcnow(), {}), "shop->shop", "shop.yaml"))
    return console.export_text()


def commands(st: dict[str, Any]) -> list[str]:
    return [a.command for a in advise(st, "shop.yaml", []) if a.command]


def test_a_gate_failing_with_no_repair_to_type_is_not_called_done():
    # CDC runs but is 12 s behind: the cdc_lag gate of dual_write fails
    lagging = status(
        "sync",
        cdc={**status("sync")["cdc"], "lag_seconds": 12.0},
        gates=[{"name": "cdc_lag", "ok": False, "measured": "12.0 s", "threshold": "< 2 s"}],
    )
    # a full verification is running: the verify_clean gate fails until it ends
    verifying = status(
        "sync",
        verify_in_progress={
            "checked": 500,
            "collections_done": 0,
            "collections": 3,
            "updated_at": utcnow(),
        },
        gates=[
            {
                "name": "verify_clean",
                "ok": False,
                "measured": "no full verification yet",
                "threshold": "clean",
            }
        ],
    )
    for st in (lagging, verifying):
        text = drawn(st)
        assert "the migration is done" not in text, text


def test_an_interrupted_rollback_is_retried_with_rollback_not_cutover():
    # a rollback write_mongo -> read_mongo whose process died: the phase stayed write_mongo
    sw = {
        "running": False,
        "interrupted": True,
        "kind": "rollback",
        "to": "read_mongo",
        "stage": "fence",
        "phase": "write_mongo",
    }
    st = status("write_mongo", switch=sw, reverse_sync={"running": True, "lag_seconds": 0.0})
    retry = commands(st)[0]
    # `migrator cutover --to read_mongo` from write_mongo is refused ("not ahead of")
    assert retry.startswith("migrator rollback ") and "--to read_mongo" in retry, retry


def test_every_advised_cutover_is_the_next_phase():
    # a write switch died in read_mongo; the operator then rolled back to dual_write (an
    # unfenced step, which leaves the interrupted switch recorded in the control document)
    sw = {
        "running": False,
        "interrupted": True,
        "kind": "write switch",
        "to": "write_mongo",
        "stage": "fence",
        "phase": "read_mongo",
    }
    for phase in ("sync", "dual_write"):  # `rollback --to` any earlier phase
        st = status(phase, switch=sw)
        for cmd in commands(st):
            m = re.search(r"migrator cutover .*--to (\w+)", cmd)
            # `cutover` refuses a jump over phases (a jump from 'dual_write' to 'write_mongo')
            assert m is None or m.group(1) == next_phase(phase), (phase, cmd)


def test_a_verification_interrupted_hours_ago_is_resumed_not_waited_for():
    # a full verify killed 3 h ago leaves its checkpoint with status "running"
    dead = {
        "checked": 500,
        "collections_done": 1,
        "collections": 3,
        "updated_at": utcnow() - timedelta(hours=3),
    }
    gate = [
        {
            "name": "verify_clean",
            "ok": False,
            "measured": "no full verification yet",
            "threshold": "clean",
        }
    ]
    st = status("sync", verification=None, verify_in_progress=dead, gates=gate)
    assert any(c.startswith("migrator verify -m shop.yaml") for c in commands(st)), commands(st)
