"""What a verification found (differences, counts per collection) and where it is kept:
the run summaries, the open differences, and what a clean full run settles."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bson.decimal128 import Decimal128

from migrator.model.keys import id_key
from migrator.model.urls import redact
from migrator.state.store import StateStore, storable

log = logging.getLogger("migrator.verify")


@dataclass
class Difference:
    collection: str
    id: Any
    kind: str  # missing | extra | different | unconvertible
    fields: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""  # unconvertible: why the source row has no document
    cdc_behind: bool = False  # re-checked while CDC had not caught up within the bound


@dataclass
class CollectionResult:
    name: str
    checked: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    unconvertible: int = 0  # source rows the Transform cannot convert: never checked
    rechecked: int = 0  # differences that went away on a re-check (rows changing under load)
    behind: int = 0  # differences reported while CDC had not caught up within the bound
    repaired: int = 0
    chunks: int = 0

    @property
    def clean(self) -> bool:
        return not (self.missing or self.extra or self.different or self.unconvertible)


@dataclass
class VerifyResult:
    mode: str
    started: datetime
    seconds: float = 0.0
    collections: list[CollectionResult] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    repaired: int = 0
    complete: bool = True  # every collection of the mapping was verified

    @property
    def ok(self) -> bool:
        return all(c.clean for c in self.collections)

    def to_dict(self) -> dict[str, Any]:
        """The stable --json schema: totals by collection and kind, then the differences."""
        return {
            "ok": self.ok,
            "mode": self.mode,
            "complete": self.complete,
            "started": self.started.isoformat(timespec="seconds") + "Z",
            "seconds": round(self.seconds, 3),
            "totals": {
                "checked": sum(c.checked for c in self.collections),
                "missing": sum(c.missing for c in self.collections),
                "extra": sum(c.extra for c in self.collections),
                "different": sum(c.different for c in self.collections),
                "unconvertible": sum(c.unconvertible for c in self.collections),
                "repaired": self.repaired,
            },
            "collections": {
                c.name: {k: v for k, v in asdict(c).items() if k != "name"}
                for c in self.collections
            },
            "differences": [
                {
                    "collection": d.collection,
                    "_id": _jsonable(d.id),
                    "kind": d.kind,
                    "fields": d.fields,
                    **({"reason": redact(d.reason)} if d.reason else {}),
                }
                for d in self.differences
            ],
        }


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, Decimal128 | Decimal):
        return str(v)
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, bytes):
        return v.hex()
    return v


def diff_doc(d: Difference) -> dict[str, Any]:
    return {
        "collection": d.collection,
        "id": storable(d.id),
        "kind": d.kind,
        "fields": d.fields,
        "reason": d.reason,
        "cdc_behind": d.cdc_behind,
    }


def diff_from_doc(d: dict[str, Any]) -> Difference:
    """A difference as `diff_doc` stored it."""
    return Difference(
        d["collection"],
        d["id"],
        d["kind"],
        d["fields"],
        d.get("reason", ""),
        bool(d.get("cdc_behind")),
    )


def settle_full_run(
    state: StateStore, result: VerifyResult, names: list[str], repaired_from: Any
) -> None:
    """After a clean full run of these collections: forget their touched marks; a complete
    repair toward MySQL (`repaired_from`: MongoDB's time at its start) restarts a reverse
    sync that lost its place."""
    if not result.ok:
        return
    state.prune_touched(result.started, names)
    if result.complete:
        # every document equals MySQL's rows now: what reverse sync could not write back
        # before this run started is settled (a rollback no longer waits for it)
        state.settle_reverse_dead_letters(result.started)
    if result.complete and repaired_from is not None:
        from migrator.reverse.runner import restart_after_repair

        if restart_after_repair(state, repaired_from):
            log.warning("verify --repair: reverse sync restarts from this run's start")


def track_open_differences(
    state: StateStore,
    result: VerifyResult,
    tracked: dict[str, tuple[list[Difference], list[Any]]],
    limit: int,
) -> None:
    """Keep the set of open differences (see StateStore.replace_open_differences): a full
    run replaces its collections'; a run that re-checked open keys clears those found equal;
    every run adds what it found. `tracked`: collection -> (its differences, open keys it
    re-checked)."""
    found: list[dict[str, Any]] = []
    overflowed: list[str] = []
    kinds = ("missing", "extra", "different", "unconvertible")
    counts = {c.name: sum(getattr(c, k) for k in kinds) for c in result.collections}
    for name, (diffs, reopened) in tracked.items():
        if counts.get(name, len(diffs)) > min(len(diffs), limit):
            overflowed.append(name)  # not every key is known: only a full run clears it
        found += [
            {"c": name, "k": storable(d.id), "kind": d.kind, "run_mode": result.mode}
            for d in diffs[:limit]
        ]
        still = {id_key(d.id) for d in diffs}
        state.clear_open_differences(name, [k for k in reopened if id_key(k) not in still])
    if result.mode == "full":
        state.replace_open_differences(list(tracked), found, overflowed, everything=result.complete)
    else:
        state.add_open_differences(found, overflowed)


def record_run(state: StateStore, result: VerifyResult, *, covers: bool) -> None:
    """A run's summary in verify_runs (`covers`: the next --changed may start after it)."""
    data = result.to_dict()
    state.record_verify_run(
        {
            **data,
            "started": result.started,
            "differences": data["differences"][:100],
            "covers": covers,
            "tracked": True,  # its differences are in the open set (StateStore)
        }
    )
