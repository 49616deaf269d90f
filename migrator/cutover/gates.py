"""Gates: measured checks a step must pass, each with its value and threshold."""

from __future__ import annotations

import subprocess
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any

from migrator.cutover.playbook import Action, Playbook
from migrator.model.events import Position, reached
from migrator.model.settings import Mapping
from migrator.source.connection import connect as mysql_connect
from migrator.source.position import master_position
from migrator.state.store import StateStore, now


@dataclass
class GateResult:
    name: str
    ok: bool
    measured: str
    threshold: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_position(mapping: Mapping) -> Position:
    """The source's current binlog position."""
    return source_position_and_server(mapping)[0]


def source_position_and_server(mapping: Mapping) -> tuple[Position, int]:
    """The source's current binlog position and @@server_id (whose binlog it is)."""
    conn = mysql_connect(mapping.source_url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT @@server_id")
        return master_position(conn), int(cur.fetchone()[0])
    finally:
        conn.close()


def cdc_lag_seconds(mapping: Mapping, state: StateStore) -> float | None:
    """Lag against the source's *current* position: 0 when the checkpoint has reached it, else
    now minus the commit time of the last applied event (the oldest unapplied is newer)."""
    cp = state.meta_doc("cdc_checkpoint")
    status = state.cdc_status() or {}
    if state.cdc_from_debezium():
        # Kafka offsets are not binlog positions: the consumer measures its own lag
        lag = status.get("lag_seconds")
        return None if lag is None else float(lag)
    if cp is None:
        return None
    conn = mysql_connect(mapping.source_url)
    try:
        current = master_position(conn)
    finally:
        conn.close()
    pos = Position.from_dict(cp["position"])
    if reached(pos, current) or (pos.gtid and pos.gtid == current.gtid):
        return 0.0
    commit = cp.get("commit_time") or cp.get("saved_at")
    return (now() - commit).total_seconds() if commit else float("inf")


def verification_gate(
    state: StateStore, max_age_minutes: float, collections: list[str] | None = None
) -> tuple[bool, str]:
    """Accept a full, clean run over every collection that checked something, or clean
    `--changed` runs over every collection on top of one; the age is the newest of those. A
    sample or a run over some collections proves nothing about the rest. A difference any
    run found refuses until a later check of that key finds it equal (a false difference:
    CDC had not applied a change yet); more than a run could list, until a new full run."""
    runs = state.verify_runs
    full = runs.find_one({"mode": "full", "complete": {"$ne": False}}, sort=[("finished", -1)])
    if full is None:
        return False, "no full verification yet (sample, partial and --changed runs do not count)"
    t = full.get("totals", {})
    diffs = sum(t.get(k, 0) for k in ("missing", "extra", "different", "unconvertible"))
    age_min = (now() - full["finished"]).total_seconds() / 60
    later = list(runs.find({"finished": {"$gt": full["finished"]}}, sort=[("finished", 1)]))
    untracked = [r for r in [full, *later] if not r.get("ok") and not r.get("tracked")]
    if untracked:  # recorded before open differences were kept: only a new run clears it
        r = untracked[-1]
        rt = r.get("totals", {})
        n = sum(rt.get(k, 0) for k in ("missing", "extra", "different", "unconvertible"))
        when = f"{age_min:.1f} min ago" if r is full else "after the last full run"
        return False, f"{n} differences ({r.get('mode')}, {when})"
    counts, overflowed = state.open_differences(collections)
    if overflowed:
        return False, (
            f"more differences in {', '.join(overflowed)} than a run lists: "
            "a new full verification must find them gone"
        )
    if counts:
        where = ", ".join(f"{c}: {n}" for c, n in sorted(counts.items()))
        return False, (
            f"{sum(counts.values())} differences still open ({where}); "
            "`verify --changed` re-checks them"
        )
    if not t.get("checked"):
        return False, "the last full verification checked nothing"
    on_top = [r for r in later if r.get("mode") == "changed" and r.get("complete", True)]
    newest = on_top[-1] if on_top else full
    age_min = (now() - newest["finished"]).total_seconds() / 60
    how = f"full + {len(on_top)} changed" if on_top else "full"
    if diffs:
        how += f", its {diffs} differences re-checked equal"
    return age_min < max_age_minutes, f"clean, {age_min:.1f} min ago ({how})"


def run_action(action: Action) -> tuple[bool, str]:
    """A shell command (exit 0) or an HTTP GET (2xx); returns (ok, what happened)."""
    if action.run:
        try:
            p = subprocess.run(
                action.run,
                shell=True,
                capture_output=True,
                text=True,
                timeout=action.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, f"timed out after {action.timeout_seconds:.0f} s"
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [""]
        return p.returncode == 0, f"exit {p.returncode}" + (f": {tail[0][:200]}" if tail[0] else "")
    assert action.http
    try:
        with urllib.request.urlopen(action.http, timeout=action.timeout_seconds) as r:
            return 200 <= r.status < 300, f"HTTP {r.status}"
    except OSError as exc:
        return False, f"HTTP GET failed: {exc}"


def evaluate(
    phase: str, mapping: Mapping, state: StateStore, playbook: Playbook
) -> list[GateResult]:
    step = playbook.step(phase)
    d = playbook.defaults
    out: list[GateResult] = []
    for g in step.gates:
        if g == "backfill_complete":
            names = [c.name for c in mapping.collections]
            docs = {b["_id"]: b for b in state.backfill.find({"_id": {"$in": names}})}
            done = [n for n in names if docs.get(n, {}).get("status") == "complete"]
            out.append(
                GateResult(
                    g,
                    len(done) == len(names),
                    f"{len(done)}/{len(names)} collections complete",
                    "all",
                )
            )
        elif g == "cdc_lag":
            limit = step.max_lag_seconds or d.max_lag_seconds
            lag = cdc_lag_seconds(mapping, state)
            out.append(
                GateResult(
                    g,
                    lag is not None and lag < limit,
                    "CDC has not run" if lag is None else f"{lag:.1f} s",
                    f"< {limit:g} s",
                )
            )
        elif g == "verify_clean":
            limit_min = step.verify_max_age_minutes or d.verify_max_age_minutes
            names = [c.name for c in mapping.collections]
            ok, measured = verification_gate(state, limit_min, names)
            out.append(GateResult(g, ok, measured, f"clean, < {limit_min:g} min"))
        elif g == "dlq_empty":
            n = state.dead_letter_count()
            out.append(GateResult(g, n == 0, f"{n} dead letters", "0"))
    for a in step.custom_gates:
        ok, what = run_action(a)
        out.append(GateResult(a.label, ok, what, "success"))
    return out
