"""The phase machine: one guarded, audited step at a time forward, any step back.

Every change is a compare-and-set on the control document under a lease; every change and
every refused attempt appends an audit entry (actor, time, from, to, reason, gates, forced).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from ..config import Mapping
from ..errors import CheckFailed, ConfigError, MigratorError
from ..sink.mongo import connect as mongo_connect
from ..sink.mongo import with_retry
from ..state import StateStore, now
from .control import Control, default_actor, routing_fields
from .gates import GateResult, cdc_lag_seconds, evaluate, run_action
from .phases import PHASES, index, next_phase, previous_phase
from .playbook import Action, Playbook


@dataclass
class StepResult:
    from_phase: str
    to_phase: str
    gates: list[GateResult] = field(default_factory=list)
    dry_run: bool = False
    changed: bool = False
    forced: bool = False
    seconds: float = 0.0
    write_pause_ms: float | None = None
    hooks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.from_phase,
            "to": self.to_phase,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "forced": self.forced,
            "seconds": round(self.seconds, 3),
            "write_pause_ms": self.write_pause_ms,
            "gates": [g.to_dict() for g in self.gates],
            "hooks": self.hooks,
        }


class Machine:
    def __init__(self, mapping: Mapping, playbook: Playbook, *, actor: str | None = None) -> None:
        self.mapping = mapping
        self.playbook = playbook
        self.actor = actor or default_actor()
        self.client = mongo_connect(mapping.target.url)
        self.state = StateStore.open(self.client, mapping)
        self.control = Control(self.state.db["control"])
        self.audit = self.state.db["audit"]
        self.recover()

    def recover(self) -> None:
        """A write switch that crashed left `freeze` set: once its lease is gone, clear it (the
        phase never moved, so the system is still in read_mongo)."""
        doc = self.control.get()
        lease = doc.get("lease")
        if doc.get("freeze") and (lease is None or lease.get("expires") < now()):
            self.control.compare_and_set(doc["version"], {"freeze": False, "lease": None})
            self._audit(
                kind="recovery",
                outcome="done",
                from_phase=doc["phase"],
                to_phase=doc["phase"],
                detail="cleared the write freeze left by an interrupted write switch",
            )

    def close(self) -> None:
        self.client.close()

    def _audit(self, **entry: Any) -> None:
        doc = {"at": now(), "actor": self.actor, **entry}
        with_retry(lambda: self.audit.insert_one(doc))

    def _audit_step(self, kind: str, outcome: str, res: StepResult, **entry: Any) -> None:
        self._audit(
            kind=kind, outcome=outcome, from_phase=res.from_phase, to_phase=res.to_phase, **entry
        )

    def _set_phase(self, doc: dict[str, Any], phase: str, reason: str | None) -> None:
        """Compare-and-set the phase (routing fields follow it; any freeze is cleared)."""
        self.control.compare_and_set(
            doc["version"],
            {
                "phase": phase,
                **routing_fields(phase),
                "freeze": False,
                "updated_at": now(),
                "updated_by": self.actor,
                "reason": reason,
            },
        )

    def _hooks(self, actions: list[Action], when: str, res: StepResult) -> bool:
        for a in actions:
            ok, what = run_action(a)
            res.hooks.append({"when": when, "hook": a.label, "ok": ok, "result": what})
            if not ok:
                return False
        return True

    # -- forward -----------------------------------------------------------------------------
    def plan_step(self, to: str | None) -> StepResult:
        cur = self.control.get()["phase"]
        target = to or next_phase(cur)
        if target is None:
            raise CheckFailed(f"the migration is already {cur!r}: there is no next phase")
        if target not in PHASES:
            raise ConfigError(f"--to {target!r}: not a phase ({', '.join(PHASES)})")
        if index(target) <= index(cur):
            raise ConfigError(f"--to {target!r} is not ahead of {cur!r}: use `migrator rollback`")
        if index(target) != index(cur) + 1:
            raise CheckFailed(
                f"a jump from {cur!r} to {target!r} is refused: cutover moves one "
                f"phase at a time (next: {next_phase(cur)!r})"
            )
        res = StepResult(cur, target)
        res.gates = evaluate(target, self.mapping, self.state, self.playbook)
        return res

    def step(
        self,
        to: str | None,
        *,
        reason: str | None = None,
        force: bool = False,
        dry_run: bool = False,
        confirm: Callable[[StepResult], bool] | None = None,
    ) -> StepResult:
        t0 = time.monotonic()
        res = self.plan_step(to)
        res.dry_run = dry_run
        failing = [g for g in res.gates if not g.ok]
        if dry_run:
            return res
        if force and not reason:
            raise ConfigError("--force needs --reason: the audit must say why gates were skipped")
        if failing and not force:
            self._audit_step(
                "cutover",
                "refused",
                res,
                reason=reason,
                forced=False,
                gates=[g.to_dict() for g in res.gates],
                detail="gates failed: " + ", ".join(g.name for g in failing),
            )
            raise CheckFailed(
                f"{res.from_phase} -> {res.to_phase} refused: "
                + "; ".join(f"{g.name} is {g.measured} (needs {g.threshold})" for g in failing),
                hint="fix the gates, or --force --reason '...' (audited)",
            )
        res.forced = bool(failing)
        if confirm is not None and not confirm(res):
            raise CheckFailed("not confirmed: nothing changed")
        try:
            self.control.acquire(self.actor, self.playbook.defaults.lease_seconds)
        except CheckFailed as exc:
            self._audit_step(
                "cutover",
                "refused",
                res,
                reason=reason,
                detail=exc.message,
            )
            raise
        try:
            step = self.playbook.step(res.to_phase)
            if not self._hooks(step.hooks.before, "before", res):
                self._audit_step(
                    "cutover",
                    "refused",
                    res,
                    reason=reason,
                    hooks=res.hooks,
                    detail="a before-hook failed",
                )
                raise CheckFailed(
                    f"{res.from_phase} -> {res.to_phase} stopped: before-hook "
                    f"{res.hooks[-1]['hook']!r} failed ({res.hooks[-1]['result']})"
                )
            if res.to_phase == "write_mongo":
                res.write_pause_ms = self._write_switch(reason)
            else:
                doc = self.control.get()
                self._set_phase(doc, res.to_phase, reason)
            res.changed = True
            self._hooks(step.hooks.after, "after", res)
            res.seconds = time.monotonic() - t0
            self._audit_step(
                "cutover",
                "done",
                res,
                reason=reason,
                forced=res.forced,
                gates=[g.to_dict() for g in res.gates],
                hooks=res.hooks,
                seconds=res.seconds,
                write_pause_ms=res.write_pause_ms,
            )
            return res
        finally:
            self.control.release(self.actor)

    def _write_switch(self, reason: str | None) -> float:
        """Freeze writes, let CDC apply everything, re-verify recent changes, flip, unfreeze.
        Any failure unfreezes and stays in read_mongo. Returns the pause in ms."""
        from ..verify.engine import verify

        d = self.playbook.defaults
        doc = self.control.get()
        doc = self.control.compare_and_set(doc["version"], {"freeze": True, "freeze_at": now()})
        t0 = time.monotonic()
        try:
            deadline = t0 + d.freeze_timeout_seconds
            while True:
                lag = cdc_lag_seconds(self.mapping, self.state)
                if lag == 0.0:
                    break
                if time.monotonic() > deadline:
                    raise CheckFailed(
                        f"CDC did not catch up within {d.freeze_timeout_seconds:g} s "
                        f"of the write freeze (lag {lag}): staying in read_mongo"
                    )
                time.sleep(0.05)
            check = verify(
                self.mapping,
                since=timedelta(minutes=d.reverify_window_minutes),
                recheck=1,
                recheck_delay=0.1,
            )
            if not check.ok:
                raise CheckFailed(
                    f"re-verification of recent changes found "
                    f"{len(check.differences)} differences: staying in read_mongo"
                )
            doc = self.control.get()
            self._set_phase(doc, "write_mongo", reason)
            return (time.monotonic() - t0) * 1000
        except BaseException:
            doc = self.control.get()
            if doc.get("freeze"):
                self.control.compare_and_set(doc["version"], {"freeze": False})
            raise

    # -- back --------------------------------------------------------------------------------
    def rollback(
        self,
        to: str | None,
        *,
        reason: str | None = None,
        rollback_playbook: Playbook | None = None,
    ) -> StepResult:
        t0 = time.monotonic()
        cur = self.control.get()["phase"]
        target = to or previous_phase(cur)
        if target is None:
            raise CheckFailed(f"the migration is {cur!r}: there is nothing to roll back to")
        if target not in PHASES:
            raise ConfigError(f"--to {target!r}: not a phase ({', '.join(PHASES)})")
        if index(target) >= index(cur):
            raise ConfigError(f"--to {target!r} is not behind {cur!r}")
        res = StepResult(cur, target)
        self.control.acquire(self.actor, self.playbook.defaults.lease_seconds)
        try:
            step = (rollback_playbook or Playbook(version=1)).step(target)
            if not self._hooks(step.hooks.before, "before", res):
                self._audit_step(
                    "rollback",
                    "refused",
                    res,
                    reason=reason,
                    hooks=res.hooks,
                    detail="a before-hook failed",
                )
                raise CheckFailed(
                    f"rollback stopped: before-hook {res.hooks[-1]['hook']!r} "
                    f"failed ({res.hooks[-1]['result']})"
                )
            doc = self.control.get()
            self._set_phase(doc, target, reason)
            res.changed = True
            self._hooks(step.hooks.after, "after", res)
            res.seconds = time.monotonic() - t0
            self._audit_step(
                "rollback",
                "done",
                res,
                reason=reason,
                hooks=res.hooks,
                seconds=res.seconds,
            )
            return res
        finally:
            self.control.release(self.actor)

    # -- status ------------------------------------------------------------------------------
    def _reverse_sync(self) -> dict[str, Any]:
        """After the write switch the SDK writes MongoDB, then MySQL; a MySQL write it could
        not make waits in sdk_failures: reverse lag is the age of the oldest one."""
        failures = self.state.db["sdk_failures"]
        q = {"store": "mysql", "repaired": False}
        oldest = failures.find_one(q, sort=[("at", 1)])
        return {
            "mode": "dual-write SDK: MongoDB first, then MySQL",
            "unapplied": failures.count_documents(q),
            "lag_seconds": 0.0 if oldest is None else (now() - oldest["at"]).total_seconds(),
        }

    def status(self) -> dict[str, Any]:
        doc = self.control.get()
        st = self.state
        backfill = {
            b["_id"]: {"status": b.get("status"), "chunks": b.get("chunks")}
            for b in st.backfill.find()
        }
        for name in backfill:
            total, done = st.chunk_counts(name)
            backfill[name].update(chunks_done=done, chunks_total=total)
        cp = st.meta.find_one({"_id": "cdc_checkpoint"})
        cdc_status = st.cdc_status() or {}
        try:
            lag = cdc_lag_seconds(self.mapping, st)
        except MigratorError:
            lag = None
        last = st.last_verify_run()
        nxt = next_phase(doc["phase"])
        gates = evaluate(nxt, self.mapping, st, self.playbook) if nxt else []
        audit = list(self.audit.find({}, {"_id": 0}).sort("at", -1).limit(20))
        return {
            "phase": doc["phase"],
            "version": doc["version"],
            "freeze": doc.get("freeze", False),
            "source_of_truth": doc.get("source_of_truth"),
            "reads_from": doc.get("reads_from"),
            "writes_to": doc.get("writes_to"),
            "updated_by": doc.get("updated_by"),
            "updated_at": doc.get("updated_at"),
            "reason": doc.get("reason"),
            "lease": doc.get("lease"),
            "backfill": backfill,
            "cdc": {
                "lag_seconds": lag,
                "checkpoint_age_seconds": (now() - cp["saved_at"]).total_seconds() if cp else None,
                "events": cdc_status.get("events"),
                "position": cp and cp.get("position"),
                "alive": st.cdc_alive(),
                "waiting_for": cdc_status.get("waiting_for") if st.cdc_alive() else None,
            },
            "reverse_sync": self._reverse_sync(),
            "verification": None
            if last is None
            else {
                "ok": last.get("ok"),
                "mode": last.get("mode"),
                "finished": last.get("finished"),
                "age_seconds": (now() - last["finished"]).total_seconds(),
                "totals": last.get("totals"),
            },
            "dead_letters": st.dead_letter_count(),
            "pending": st.pending.count_documents({}),
            "next_phase": nxt,
            "gates": [g.to_dict() for g in gates],
            "audit": audit,
        }
