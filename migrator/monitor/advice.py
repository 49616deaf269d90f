"""What to type next, for the state a status shows: repair what blocks, else move on; and
the way back. Pure: a status (Machine.status()) in, advice out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrator.model.phases import index


@dataclass(frozen=True)
class Advice:
    why: str
    command: str  # "" when the step is not a migrator command
    kind: str = "next"  # next | repair | rollback | wait


def advise(status: dict[str, Any], mapping_path: str, down: list[str]) -> list[Advice]:
    m = f"-m {mapping_path}"
    out: list[Advice] = []
    for server in down:
        out.append(
            Advice(
                f"{server} does not answer: bring it back; the checkpoints are safe and every "
                "command resumes",
                "",
                "repair",
            )
        )
    if down:
        return out
    phase = status["phase"]
    sw = status.get("switch") or {}
    if sw.get("running"):
        return [Advice(f"a {sw.get('kind')} to {sw.get('to')} is running: wait", "", "wait")]
    if sw.get("interrupted"):
        out.append(
            Advice(
                f"the {sw.get('kind')} to {sw.get('to')} died at stage {sw.get('stage')}; "
                "writes resumed and the phase stayed: retry it",
                f"migrator cutover {m} --to {sw.get('to')} --reason 'retry'",
                "repair",
            )
        )
    out.extend(_repairs(status, m, phase))
    failing = [g for g in status.get("gates", []) if not g.get("ok")]
    nxt = status.get("next_phase")
    if nxt and not failing and not out:
        out.append(Advice(f"every gate of {nxt} passes", f"migrator cutover {m} --to {nxt}"))
    if index(phase) >= index("dual_write"):
        out.append(
            Advice(
                "to go back one phase (applications follow the routing within seconds)",
                f"migrator rollback {m} --reason 'TEXT'",
                "rollback",
            )
        )
    return out


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
    for g in status.get("gates", []):
        if g.get("ok") or g.get("name") != "verify_clean" or status.get("verify_in_progress"):
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
