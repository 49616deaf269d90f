"""What to type next, for the state a status shows: repair what blocks, else move on; and
the way back. Pure: a status (Machine.status()) in, advice out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from migrator.model.phases import PHASES, index, next_phase

# A full verification checkpoints after every group of chunks; one whose checkpoint is older
# than this stopped (killed, its machine gone): it resumes when run again
VERIFY_STOPPED_AFTER = timedelta(minutes=10)


def verify_stopped(run: dict[str, Any]) -> bool:
    at = run.get("updated_at")
    now = datetime.now(UTC).replace(tzinfo=None)
    return not isinstance(at, datetime) or now - at.replace(tzinfo=None) > VERIFY_STOPPED_AFTER


@dataclass(frozen=True)
class Advice:
    why: str
    command: str  # "" when the step is not a migrator command
    kind: str = "next"  # next | repair | rollback | wait


def advise(
    status: dict[str, Any], mapping_path: str, down: list[str], playbook: str | None = None
) -> list[Advice]:
    """`playbook`: the file the gates were judged with; an advised `cutover` uses it too."""
    m = f"-m {mapping_path}"
    cutover = f"migrator cutover {m}" + (f" --playbook {playbook}" if playbook else "")
    if down:
        return [
            Advice(
                f"{server} does not answer: bring it back; the checkpoints are safe and every "
                "command resumes"
                if server != "reading the status"
                else "the status could not be read (above): rerun with --log-level debug",
                "",
                "repair",
            )
            for server in down
        ]
    phase = status["phase"]
    sw = status.get("switch") or {}
    if sw.get("running"):
        return [Advice(f"a {sw.get('kind')} to {sw.get('to')} is running: wait", "", "wait")]
    out = _retry(sw, phase, m, cutover)
    out += _repairs(status, m, phase)
    nxt = status.get("next_phase")
    failing = [g for g in status.get("gates", []) if not g.get("ok")]
    if nxt and not failing and not out:
        out.append(Advice(f"every gate of {nxt} passes", f"{cutover} --to {nxt}"))
    elif failing and not out:  # nothing to type: say what the step waits for
        for g in failing:
            out.append(
                Advice(
                    f"{nxt} waits for {g['name']}: {g.get('measured')} (needs "
                    f"{g.get('threshold')}); see the runbook's `{g['name']}` section",
                    "",
                    "wait",
                )
            )
    if index(phase) >= index("dual_write"):
        out.append(
            Advice(
                "to go back one phase (applications follow the routing within seconds)",
                f"migrator rollback {m} --reason 'TEXT'",
                "rollback",
            )
        )
    return out


def _retry(sw: dict[str, Any], phase: str, m: str, cutover: str) -> list[Advice]:
    """A switch or rollback whose process died, while retrying it still makes sense."""
    to = sw.get("to")
    if not sw.get("interrupted") or to not in PHASES:
        return []
    why = (
        f"the {sw.get('kind')} to {to} died at stage {sw.get('stage')}; writes resumed and "
        "the phase stayed: retry it"
    )
    if sw.get("kind") == "rollback" and index(to) < index(phase):
        return [Advice(why, f"migrator rollback {m} --to {to} --reason 'retry'", "repair")]
    if sw.get("kind") != "rollback" and to == next_phase(phase):
        return [Advice(why, f"{cutover} --to {to} --reason 'retry'", "repair")]
    return []


def _repairs(status: dict[str, Any], m: str, phase: str) -> list[Advice]:
    out: list[Advice] = []
    cdc = status.get("cdc") or {}
    unfinished = [n for n, b in status.get("backfill", {}).items() if b.get("status") != "complete"]
    if phase in ("planned", "backfill") and (unfinished or not status.get("backfill")):
        out.append(
            Advice("the copy has not finished: start or resume it", f"migrator backfill {m}")
        )
    if index(phase) >= index("sync") and not cdc.get("alive") and phase != "done":
        out.append(Advice("no CDC process is running", f"migrator cdc {m} --follow", "repair"))
    if status.get("dead_letters"):
        newest = status.get("newest_dead_letter") or {}
        out.append(
            Advice(
                f"{status['dead_letters']} dead letter(s), newest: "
                f"{str(newest.get('reason', '?'))[:80]}; fix the cause, then repair",
                f"migrator state dump {m} --newest 20",
                "repair",
            )
        )
    run = status.get("verify_in_progress") or {}
    if run and verify_stopped(run):
        out.append(
            Advice(
                f"a full verification stopped {run.get('checked', 0):,} documents in (its last "
                "checkpoint is old): resume it",
                f"migrator verify {m}",
                "repair",
            )
        )
        return out
    for g in status.get("gates", []):
        if g.get("ok") or g.get("name") != "verify_clean" or run:
            continue
        v = status.get("verification")
        if v is None or v.get("ok"):
            out.append(Advice(f"verification: {g['measured']}", f"migrator verify {m}"))
        else:
            out.append(
                Advice(
                    f"the last verification found differences ({g['measured']}): re-check "
                    "what changed; repair what stays different",
                    f"migrator verify {m} --changed   # then, if still different: --repair",
                    "repair",
                )
            )
    return out
