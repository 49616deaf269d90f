"""The phase machine: one guarded, audited step at a time forward, any step back.

Every change is a compare-and-set on the control document under a lease; every change and
every refused attempt appends an audit entry (actor, time, from, to, reason, gates, forced).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from migrator.cdc.roles import table_roles
from migrator.cutover.control import (
    Control,
    LeaseHeld,
    default_actor,
    holder_is_dead,
    lease_holder,
    routing_fields,
)
from migrator.cutover.fence import FLIP_MARGIN, Fence
from migrator.cutover.gates import (
    GateResult,
    cdc_lag_seconds,
    evaluate,
    run_action,
    source_position,
    source_position_and_server,
)
from migrator.cutover.playbook import Action, Playbook
from migrator.errors import CheckFailed, ConfigError, MigratorError
from migrator.faults import fault_point
from migrator.model.phases import PHASES, ROUTING, index, next_phase, previous_phase
from migrator.model.settings import Mapping
from migrator.reverse.runner import checkpoint as reverse_checkpoint
from migrator.reverse.runner import (
    hold_fence,
    lag_seconds,
    operation_time,
    record_start,
    wait_for_reverse,
)
from migrator.runtime import Migration
from migrator.sink.mongo import with_retry
from migrator.state.store import now

log = logging.getLogger("migrator.cutover")


def _primary(phase: str) -> str:
    """The store writes go to first in a phase."""
    return ROUTING[phase][2].split(",")[0]


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
    fence: dict[str, Any] | None = None  # writers acknowledged / presumed gone, seconds
    pause_stages: dict[str, float] | None = None  # ms of the write pause spent in each stage
    cdc_restart: dict[str, Any] | None = None  # a rollback to MySQL-first: where CDC restarts

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.from_phase,
            "to": self.to_phase,
            "dry_run": self.dry_run,
            "changed": self.changed,
            "forced": self.forced,
            "seconds": round(self.seconds, 3),
            "write_pause_ms": self.write_pause_ms,
            "fence": self.fence,
            "pause_stages": self.pause_stages,
            "cdc_restart": self.cdc_restart,
            "gates": [g.to_dict() for g in self.gates],
            "hooks": self.hooks,
        }


def _decided(res: StepResult, decision: str, failing: list[str]) -> None:
    log.info(
        "cutover decision",
        extra={
            "from_phase": res.from_phase,
            "to_phase": res.to_phase,
            "decision": decision,
            "failing": failing,
        },
    )


def _changed(res: StepResult, seconds: float) -> None:
    log.info(
        "phase changed",
        extra={
            "from_phase": res.from_phase,
            "to_phase": res.to_phase,
            "forced": res.forced,
            "seconds": round(seconds, 3),
            "write_pause_ms": res.write_pause_ms,
        },
    )


def _str(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) for k, v in d.items()}


class _Lease:
    """The cutover lease, renewed from a thread while one operation runs: it dies with the
    process (within `seconds`), so a crashed operator never blocks the next one for long."""

    def __init__(self, control: Control, holder: str, seconds: float) -> None:
        self.control, self.holder, self.seconds = control, holder, seconds
        self._stop = threading.Event()
        control.acquire(holder, seconds)
        self._thread = threading.Thread(target=self._renew, name="migrator-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            with contextlib.suppress(Exception):  # a missed renewal only shortens the lease
                self.control.renew(self.holder, self.seconds)

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.control.release(self.holder)


# what a verification counts as a difference (verify.results.CollectionResult.clean)
DIFFERENCE_KINDS = ("missing", "extra", "different", "unconvertible")


class Machine:
    def __init__(
        self, migration: Migration | Mapping, playbook: Playbook, *, actor: str | None = None
    ) -> None:
        # a migration given is the caller's to close; one opened from settings is this one's
        self._owns = not isinstance(migration, Migration)
        self.migration = migration if isinstance(migration, Migration) else Migration(migration)
        self.mapping = self.migration.settings
        self.playbook = playbook
        self.actor = actor or default_actor()
        self.holder = lease_holder(self.actor)
        self.fence: dict[str, Any] | None = None  # what the last fenced flip waited for
        self.cdc_restart: dict[str, Any] | None = None  # where the last rollback left MySQL
        self.client = self.migration.client
        self.state = self.migration.state
        self.control = Control(self.state.control)
        self.audit = self.state.audit_log
        self.recover()

    def recover(self) -> None:
        """A switch whose process died left `freeze` set. Writers already ignore it after
        its timeout (fence.py); once the lease is gone (expired, or its holder is a dead
        process here), clear it and record what was interrupted (the phase never moved)."""
        doc = self.control.get()
        lease = doc.get("lease") or {}
        gone = (
            not lease
            or lease.get("expires", now()) < now()
            or holder_is_dead(str(lease.get("holder", "")))
        )
        if not (doc.get("freeze") and gone):
            return
        sw = doc.get("switch") or {}
        found = {
            "kind": sw.get("kind", "write switch"),
            "stage": sw.get("stage"),
            "to": sw.get("to"),
            "holder": sw.get("holder") or lease.get("holder"),
            "started_at": sw.get("started_at") or doc.get("freeze_at"),
            "phase": doc["phase"],
            "cleared_at": now(),
        }
        try:
            self.control.compare_and_set(
                doc["version"],
                {"freeze": False, "switch": None, "lease": None, "interrupted_switch": found},
            )
        except CheckFailed:
            return  # someone else changed it first
        log.warning("cleared the write freeze of an interrupted switch", extra=_str(found))
        self._audit(
            kind="recovery",
            outcome="done",
            from_phase=doc["phase"],
            to_phase=doc["phase"],
            detail=(
                f"cleared the write freeze left by a {found['kind']} to {found['to']} "
                f"interrupted at stage {found['stage']!r} (held by {found['holder']}); "
                f"the phase stayed {doc['phase']!r}"
            ),
        )

    def close(self) -> None:
        if self._owns:
            self.migration.close()

    def _audit(self, **entry: Any) -> None:
        doc = {"at": now(), "actor": self.actor, **entry}
        with_retry(lambda: self.audit.insert_one(doc))

    def _audit_step(self, kind: str, outcome: str, res: StepResult, **entry: Any) -> None:
        self._audit(
            kind=kind, outcome=outcome, from_phase=res.from_phase, to_phase=res.to_phase, **entry
        )

    def _set_phase(self, doc: dict[str, Any], phase: str, reason: str | None) -> None:
        """Compare-and-set the phase on the version its gates were judged at, under our lease
        (routing fields follow it; any freeze is cleared)."""
        self.control.compare_and_set(
            doc["version"],
            {
                "phase": phase,
                **routing_fields(phase),
                "freeze": False,
                "switch": None,
                "interrupted_switch": None,  # a phase moved on since: the audit keeps it
                "updated_at": now(),
                "updated_by": self.actor,
                "reason": reason,
            },
            holder=self.holder,
        )

    def _lease(self, kind: str, to: str | None, reason: str | None) -> _Lease:
        """Take the lease before reading the phase; a refusal is audited."""
        try:
            return _Lease(self.control, self.holder, self.playbook.defaults.lease_seconds)
        except LeaseHeld as exc:
            cur = self.control.get()["phase"]
            self._audit(
                kind=kind,
                outcome="refused",
                from_phase=cur,
                to_phase=to,
                reason=reason,
                detail=exc.message,
            )
            raise

    def _hooks(self, actions: list[Action], when: str, res: StepResult) -> bool:
        for a in actions:
            ok, what = run_action(a)
            res.hooks.append({"when": when, "hook": a.label, "ok": ok, "result": what})
            level = logging.INFO if ok else logging.WARNING
            log.log(
                level, "hook ran", extra={"when": when, "hook": a.label, "ok": ok, "result": what}
            )
            if not ok:
                return False
        return True

    # -- forward -----------------------------------------------------------------------------
    def plan_step(self, to: str | None, doc: dict[str, Any] | None = None) -> StepResult:
        cur = (doc or self.control.get())["phase"]
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
        for g in res.gates:
            gate = {"gate": g.name, "ok": g.ok, "measured": g.measured, "threshold": g.threshold}
            log.info("gate judged", extra={**gate, "from_phase": cur, "to_phase": target})
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
        log.info(
            "cutover started",
            extra={"to": to or "next", "dry_run": dry_run, "force": force, "reason": reason},
        )
        if dry_run:
            res = self.plan_step(to)
            res.dry_run = True
            names = [g.name for g in res.gates if not g.ok]
            _decided(res, "would be refused" if names else "would go ahead", names)
            return res
        if force and not reason:
            raise ConfigError("--force needs --reason: the audit must say why gates were skipped")
        lease = self._lease("cutover", to, reason)
        try:
            # judged under the lease: nobody can move the phase between the gates and the flip
            doc = self.control.get()
            try:
                res = self.plan_step(to, doc)
            except MigratorError as exc:
                self._audit(
                    kind="cutover",
                    outcome="refused",
                    from_phase=doc["phase"],
                    to_phase=to,
                    reason=reason,
                    detail=exc.message,
                )
                raise
            self._judge_gates(res, reason, force)
            if confirm is not None and not confirm(res):
                raise CheckFailed("not confirmed: nothing changed")
            step = self.playbook.step(res.to_phase)
            self._before_hooks("cutover", step.hooks.before, res, reason)
            doc = self.control.get()
            if _primary(res.from_phase) != _primary(res.to_phase):
                res.write_pause_ms = self._fenced_flip(doc, res.to_phase, reason)
                res.fence, res.pause_stages = self.fence, self.pause_stages
            else:
                self._set_phase(doc, res.to_phase, reason)
            res.changed = True
            _changed(res, time.monotonic() - t0)
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
                fence=res.fence,
                pause_stages=res.pause_stages,
            )
            return res
        finally:
            lease.release()

    def _judge_gates(self, res: StepResult, reason: str | None, force: bool) -> None:
        """Refuse the step (audited) when a gate fails, unless forced (then say so)."""
        failing = [g for g in res.gates if not g.ok]
        decision = "refused" if failing and not force else "go ahead"
        _decided(res, decision, [g.name for g in failing])
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
        if failing:
            log.warning(
                "forced past failing gates",
                extra={"failing": [g.name for g in failing], "reason": reason},
            )

    def _before_hooks(
        self, kind: str, hooks: list[Action], res: StepResult, reason: str | None
    ) -> None:
        """Run the step's before-hooks; one failing stops the step (audited)."""
        if not self._hooks(hooks, "before", res):
            self._audit_step(
                kind,
                "refused",
                res,
                reason=reason,
                hooks=res.hooks,
                detail="a before-hook failed",
            )
            what = "rollback" if kind == "rollback" else f"{res.from_phase} -> {res.to_phase}"
            raise CheckFailed(
                f"{what} stopped: before-hook {res.hooks[-1]['hook']!r} "
                f"failed ({res.hooks[-1]['result']})"
            )

    def _stage(self, stage: str, *, write: bool = True) -> None:
        """Where a fenced flip is, for `status` if its process dies (no version change)."""
        log.info("switch stage", extra={"stage": stage})
        if write:
            with_retry(
                lambda: self.control.coll.update_one(
                    {"_id": "control", "lease.holder": self.holder},
                    {"$set": {"switch.stage": stage}},
                )
            )
        self._marks.append((stage, time.monotonic()))
        fault_point(stage)

    def _fenced_flip(
        self, doc: dict[str, Any], target: str, reason: str | None, skip_reverse: bool = False
    ) -> float:
        """Change which store writes go to first: freeze, wait until every live writer has
        acknowledged (fence.py), for the write switch let CDC apply everything and re-verify
        what changed since the last clean verification, then flip and unfreeze in one
        compare-and-set, within the freeze's deadline. Any failure unfreezes and leaves the
        phase as it was. Returns the pause in ms."""
        d = self.playbook.defaults
        timeout = d.freeze_timeout_seconds
        fid = uuid.uuid4().hex
        fence = Fence(self.state.writers)
        surveyed = time.monotonic()
        fence.survey()
        surveyed = time.monotonic() - surveyed
        # everything that costs time but not a frozen write is done before the freeze
        verifier = self._verifier() if target == "write_mongo" else None
        if verifier is not None:  # a rollback's CDC restart compares with it (cdc.runner)
            transform = verifier.transform
            self.state.save_switch_schema(transform.schema.fingerprint(table_roles(transform)))
        t0 = time.monotonic()
        self.cdc_restart = None
        self._marks: list[tuple[str, float]] = [("freeze", t0)]
        deadline = t0 + timeout - FLIP_MARGIN  # writers give up the freeze after `timeout`
        doc, switch = self._freeze(doc, fid, target, timeout)
        phase = doc["phase"]
        log.info("writes frozen", extra={"kind": switch["kind"], "to_phase": target})
        fenced = None
        try:
            self._stage("fence", write=False)
            self.fence = {**fence.wait(fid, deadline=deadline), "survey": round(surveyed, 3)}
            if target == "write_mongo":
                self._drain_forward(deadline, timeout, verifier)
            elif _primary(phase) == "mongo":
                fenced = self._drain_back(deadline, timeout, phase, skip_reverse)
                if not skip_reverse:
                    self._no_reverse_dead_letters(phase)
                self.cdc_restart = self._cdc_restart_point()
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"the switch took longer than its freeze allows ({timeout:g} s, less a "
                    f"{FLIP_MARGIN:g} s margin): staying in {phase}"
                )
            self._stage("flip")
            self._set_phase(self.control.get(), target, reason)
            end = time.monotonic()
            pause = (end - t0) * 1000
            marks = [*self._marks, ("", end)]
            self.pause_stages = {
                name: round((b - a) * 1000, 1) for (name, a), (_, b) in itertools.pairwise(marks)
            }
            fault_point("flipped")
            return pause
        except BaseException as exc:
            self._unfreeze(fid, switch["kind"], phase, exc)
            raise
        finally:
            if verifier is not None:
                verifier.close()
            if fenced is not None:
                fenced.close()  # releases the fence: after the flip, or after giving up

    def _unfreeze(self, fid: str, kind: str, phase: str, exc: BaseException) -> None:
        """A switch that stopped: unfreeze writes (if this freeze still holds), phase unchanged."""
        log.warning(
            "switch stopped; writes unfrozen",
            extra={"kind": kind, "phase": phase, "cause": str(exc)[:300]},
        )
        cur = self.control.get()
        if cur.get("freeze") and cur.get("freeze_id") == fid:
            with contextlib.suppress(CheckFailed):
                self.control.compare_and_set(
                    cur["version"], {"freeze": False, "switch": None}, holder=self.holder
                )

    def _freeze(
        self, doc: dict[str, Any], fid: str, target: str, timeout: float
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Freeze writes and record the switch running, in one compare-and-set."""
        switch = {
            "id": fid,
            "kind": "write switch" if target == "write_mongo" else "rollback",
            "to": target,
            "stage": "fence",  # set with the freeze: one write less inside the pause
            "holder": self.holder,
            "started_at": now(),
        }
        doc = self.control.compare_and_set(
            doc["version"],
            {
                "freeze": True,
                "freeze_id": fid,
                "freeze_at": now(),
                "freeze_timeout": timeout,
                "switch": switch,
                "interrupted_switch": None,  # the audit keeps the earlier one
            },
            holder=self.holder,
        )
        return doc, switch

    def _drain_forward(self, deadline: float, timeout: float, verifier: Any) -> None:
        """The write switch, frozen: CDC applies everything, what changed is verified again."""
        self._stage("catch_up")
        self._catch_up(deadline, timeout)
        self._stage("reverify")
        self._reverify(verifier)
        # nothing is written now: reverse sync starts from this moment
        record_start(self.client, self.state, self.mapping)

    def _drain_back(self, deadline: float, timeout: float, phase: str, skip_reverse: bool) -> Any:
        """A rollback from MongoDB-first, frozen: reverse sync applies everything, then its
        batches are fenced (the fence returned is held across the flip)."""
        if not skip_reverse:
            self._stage("reverse_catch_up")
            self._reverse_catch_up(deadline, timeout, phase)
        # no reverse sync batch commits across the flip (reverse/runner.py)
        return hold_fence(
            self.mapping,
            wait=max(0.5, deadline - time.monotonic()),
            kill_after=2.0 if skip_reverse else None,
        )

    def _reverse_catch_up(self, deadline: float, timeout: float, phase: str) -> None:
        """A rollback to MySQL-first: every MongoDB change made up to the freeze must be in
        MySQL first (reverse lag 0), or MySQL would serve without them."""
        until = operation_time(self.client)
        if not wait_for_reverse(self.client, self.state, self.mapping, until, deadline=deadline):
            lag = lag_seconds(self.client, self.state, self.mapping)
            raise CheckFailed(
                f"reverse sync has not written MongoDB's changes to MySQL within "
                f"{timeout:g} s of the freeze (reverse lag {lag} s): staying in {phase}",
                hint="is `migrator cdc --follow` running (it carries them after the switch)? "
                "Or --force --reason '...' to roll back without them (audited)",
            )

    def _no_reverse_dead_letters(self, phase: str) -> None:
        """A change reverse sync dead-lettered is not lag, but MySQL lacks it just the same:
        the rollback waits for it as for lag (or --force rolls back without it)."""
        started = (reverse_checkpoint(self.state) or {}).get("started")
        if started is None:
            return
        stuck = self.state.reverse_dead_letters(started)
        if stuck:
            first = stuck[0]
            raise CheckFailed(
                f"reverse sync could not write {len(stuck)}{'+' if len(stuck) == 5 else ''} "
                f"MongoDB change(s) to MySQL since the write switch (dead_letters, source "
                f"reverse; first: {first.get('collection')} {first.get('key')!r}: "
                f"{str(first.get('reason'))[:200]}): MySQL would serve without them: "
                f"staying in {phase}",
                hint="fix those documents or the mapping, then a full `migrator verify "
                "--repair` (in this phase it writes MySQL from MongoDB; a clean run settles "
                "them); or `rollback --force --reason` to roll back without them (audited)",
            )

    def _cdc_restart_point(self) -> dict[str, Any]:
        """Writes are frozen and reverse sync has written MongoDB's changes to MySQL: MySQL
        holds nothing MongoDB lacks, so CDC restarts at the source's position now (state.py)."""
        position, server = source_position_and_server(self.mapping)
        pos = position.to_dict()
        self.state.save_cdc_rollback_point(pos, rollback=self.holder, server_id=server)
        return pos

    def _catch_up(self, deadline: float, timeout: float) -> None:
        """Every writer has acknowledged the freeze: CDC must apply the binlog up to where it
        is now (read once; polling the checkpoint alone is cheap)."""
        target = None if self.state.cdc_from_debezium() else source_position(self.mapping)
        while True:
            if target is not None and self.state.cdc_applied_through(target):
                return
            lag = None if target is not None else cdc_lag_seconds(self.mapping, self.state)
            if lag == 0.0:
                return
            if time.monotonic() > deadline:
                if lag is None:
                    lag = cdc_lag_seconds(self.mapping, self.state)
                raise CheckFailed(
                    f"CDC did not catch up within {timeout:g} s of the write freeze "
                    f"(lag {lag}): staying in read_mongo"
                )
            time.sleep(0.02)

    def _verifier(self) -> Any:
        """The re-verification's connections and compiled mapping, made before the freeze."""
        from migrator.verify.checker import Verifier

        v = Verifier(self.migration, recheck=1, recheck_delay=0.1)
        v.conn  # noqa: B018 (opens this thread's MySQL connection now)
        return v

    def _reverify(self, verifier: Any) -> None:
        """Re-verify what CDC touched since the last clean verification started (a running
        `verify --follow` keeps that short), or the playbook's window without one."""
        from migrator.verify.engine import verify

        last = self.state.verify_runs.find_one({"ok": True}, sort=[("finished", -1)])
        window = timedelta(minutes=self.playbook.defaults.reverify_window_minutes)
        if last is not None:
            window = min(window, now() - last["started"] + timedelta(seconds=1))
        check = verify(self.migration, since=window, verifier=verifier)
        if not check.ok:
            raise CheckFailed(
                f"re-verification of recent changes found "
                f"{len(check.differences)} differences: staying in read_mongo"
            )

    # -- back --------------------------------------------------------------------------------
    def rollback(
        self,
        to: str | None,
        *,
        reason: str | None = None,
        rollback_playbook: Playbook | None = None,
        force: bool = False,
    ) -> StepResult:
        t0 = time.monotonic()
        if force and not reason:
            raise ConfigError(
                "--force needs --reason: the audit must say why reverse sync was skipped"
            )
        log.info(
            "rollback started", extra={"to": to or "previous", "force": force, "reason": reason}
        )
        lease = self._lease("rollback", to, reason)
        try:
            doc = self.control.get()
            cur = doc["phase"]
            target = to or previous_phase(cur)
            if target is None:
                raise CheckFailed(f"the migration is {cur!r}: there is nothing to roll back to")
            if target not in PHASES:
                raise ConfigError(f"--to {target!r}: not a phase ({', '.join(PHASES)})")
            if index(target) >= index(cur):
                raise ConfigError(f"--to {target!r} is not behind {cur!r}")
            res = StepResult(cur, target)
            step = (rollback_playbook or Playbook(version=1)).step(target)
            self._before_hooks("rollback", step.hooks.before, res, reason)
            doc = self.control.get()
            res.forced = force
            if force:
                log.warning(
                    "rollback forced: reverse sync is not waited for", extra={"reason": reason}
                )
            if _primary(cur) != _primary(target):
                try:
                    res.write_pause_ms = self._fenced_flip(doc, target, reason, force)
                except CheckFailed as exc:
                    self._audit_step("rollback", "refused", res, reason=reason, detail=exc.message)
                    raise
                res.fence, res.pause_stages = self.fence, self.pause_stages
                res.cdc_restart = self.cdc_restart
            else:
                self._set_phase(doc, target, reason)
            res.changed = True
            _changed(res, time.monotonic() - t0)
            self._hooks(step.hooks.after, "after", res)
            res.seconds = time.monotonic() - t0
            self._audit_step(
                "rollback",
                "done",
                res,
                reason=reason,
                forced=force,
                hooks=res.hooks,
                seconds=res.seconds,
                write_pause_ms=res.write_pause_ms,
                fence=res.fence,
                pause_stages=res.pause_stages,
                cdc_restart=res.cdc_restart,
            )
            return res
        finally:
            lease.release()

    # -- status ------------------------------------------------------------------------------
    def _reverse_sync(self) -> dict[str, Any]:
        """From the write switch on, reverse sync (run by `cdc --follow`) writes MongoDB's
        changes back to MySQL: its lag and where it is (and, as at the top, the SDK's failed
        writes to its second store)."""
        from migrator.reverse.runner import checkpoint

        cp = checkpoint(self.state)
        running = self.state.mongo_is_truth() is not None
        lag = None  # before the switch and after a rollback nothing is reverse-synced
        if running:
            try:
                lag = lag_seconds(self.client, self.state, self.mapping)
            except MigratorError:
                lag = None
        return {
            "mode": "change stream -> MySQL (run by `migrator cdc --follow`)",
            "running": running,
            "started_at": cp and cp.get("start_at") and cp["start_at"].as_datetime(),
            "applied_through": cp
            and cp.get("applied_through")
            and cp["applied_through"].as_datetime(),
            "lag_seconds": lag,
            "sdk_failures": self.state.unsettled_sdk_failures(),
        }

    def _switch_state(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        """A switch under way, or the last one whose process died (and what it left)."""
        if doc.get("switch"):
            return {"running": True, **doc["switch"]}
        last = doc.get("interrupted_switch")
        if last:
            return {
                "running": False,
                "interrupted": True,
                **last,
                "left": f"phase {last['phase']!r}, writes unfrozen, routing unchanged",
            }
        return None

    def status(self) -> dict[str, Any]:
        """Everything `status`, its live view and the metrics show. MySQL down leaves what it
        measures (CDC lag, the gates) unknown and says so in `problems`; MongoDB down raises."""
        doc = self.control.get()
        st = self.state
        problems: dict[str, str] = {}
        cp = st.meta_doc("cdc_checkpoint")
        cdc_status = st.cdc_status() or {}
        try:
            lag = cdc_lag_seconds(self.mapping, st)
        except MigratorError as exc:
            lag, problems["mysql"] = None, exc.message
        nxt = next_phase(doc["phase"])
        try:
            gates = (
                [g.to_dict() for g in evaluate(nxt, self.mapping, st, self.playbook)] if nxt else []
            )
        except MigratorError as exc:
            problems.setdefault("mysql", exc.message)
            gates = [
                {
                    "name": "gates",
                    "ok": False,
                    "measured": f"cannot measure: {exc.message}",
                    "threshold": "-",
                }
            ]
        alive = st.cdc_alive()
        log.debug(
            "status read",
            extra={
                "phase": doc["phase"],
                "version": doc["version"],
                "freeze": doc.get("freeze", False),
                "cdc_lag_seconds": lag,
                "next_phase": nxt,
                "gates_failing": [g["name"] for g in gates if not g["ok"]],
            },
        )
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
            "switch": self._switch_state(doc),
            "backfill": self._backfill(),
            "cdc": {
                "lag_seconds": lag,
                "checkpoint_age_seconds": (now() - cp["saved_at"]).total_seconds() if cp else None,
                "events": cdc_status.get("events"),
                "events_per_sec": cdc_status.get("events_per_sec") if alive else None,
                "source": cdc_status.get("source"),
                "position": cp and cp.get("position"),
                "alive": alive,
                "waiting_for": cdc_status.get("waiting_for") if alive else None,
            },
            "reverse_sync": self._reverse_sync(),
            "verification": self._verification(),
            "verify_in_progress": self._verify_in_progress(),
            "dead_letters": st.dead_letter_count(),
            "newest_dead_letter": st.newest_dead_letter(),
            "pending": st.pending.count_documents({}),
            "sdk_failures": st.unsettled_sdk_failures(),
            "last_write_pause": self._last_pause(),
            "next_phase": nxt,
            "gates": gates,
            "problems": problems,
            "audit": list(self.audit.find({}, {"_id": 0}).sort("at", -1).limit(20)),
        }

    def _backfill(self, window: float = 60.0) -> dict[str, Any]:
        """Each collection's copy: chunks, rows, the rate over the last minute and an ETA."""
        st, out = self.state, {}
        for b in st.backfill.find():
            name = b["_id"]
            total, done = st.chunk_counts(name)
            rows = st.done_rows(name)
            rate = st.recent_rows(name, window) / window if b.get("status") != "complete" else 0.0
            left = (total - done) * rows / done if done else None
            out[name] = {
                "status": b.get("status"),
                "chunks": b.get("chunks"),
                "chunks_done": done,
                "chunks_total": total,
                "rows_done": rows,
                "rows_per_sec": rate,
                "eta_seconds": left / rate if left is not None and rate else None,
            }
        return out

    def _verification(self) -> dict[str, Any] | None:
        """The last run; the differences still open (found by a run, not yet found equal by
        a later check: what the verify_clean gate refuses on), by collection; and when every
        collection was last covered by a full or --changed run (the gate's age)."""
        last = self.state.last_verify_run()
        if last is None:
            return None
        names = [c.name for c in self.mapping.collections]
        open_counts, _over = self.state.open_differences(names)
        covering = [self.state.last_covering_run(n) for n in names]
        return {
            "ok": last.get("ok"),
            "mode": last.get("mode"),
            "finished": last.get("finished"),
            "age_seconds": (now() - last["finished"]).total_seconds(),
            "totals": last.get("totals"),
            "differences": {
                name: sum(int(c.get(k) or 0) for k in DIFFERENCE_KINDS)
                for name, c in (last.get("collections") or {}).items()
                if isinstance(c, dict)
            },
            "open_differences": {n: open_counts.get(n, 0) for n in names},
            "covered_at": None
            if any(r is None for r in covering)
            else min(r["finished"] for r in covering if r is not None),
        }

    def _verify_in_progress(self) -> dict[str, Any] | None:
        run = self.state.verify_in_progress()
        if run is None:
            return None
        colls = run.get("collections") or {}
        return {
            "started": run.get("started"),
            "updated_at": run.get("updated_at"),
            "checked": sum(int(c.get("checked", 0)) for c in colls.values()),
            "collections_done": sum(1 for c in colls.values() if c.get("done")),
            "collections": len((run.get("params") or {}).get("collections") or colls),
        }

    def _last_pause(self) -> dict[str, Any] | None:
        a = self.state.last_write_pause()
        if a is None:
            return None
        return {
            "at": a.get("at"),
            "ms": a.get("write_pause_ms"),
            "step": f"{a.get('from_phase')} -> {a.get('to_phase')}",
        }
