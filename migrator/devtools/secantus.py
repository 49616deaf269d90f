"""Launch the sandbox's SecantusDB with one fix for a quirk of that test server.

SecantusDB 0.7 keeps a record of every retryable write (pymongo makes every write retryable)
and, on every write, scans all records for stale ones and, once there are over 10,000, sorts
them all to drop the oldest. After ~10k writes each write costs a sort of 10k items: measured
here, single `update_one`s fell from 1,500/s to under 100/s within 12,000 writes, and every
long test, the demo and the benches ran on the slowed server. The fix keeps its bounds (records
live 30 min, about 10,000 kept) but prunes in batches: the stale scan every 1,024 writes, and
past the cap it drops down to 90 % of it at once. Only the throwaway servers `sandbox.py` starts
run through here; nothing in the tool depends on it.

It also remembers each database's profiler settings: the server read them from its storage,
under its global lock, once for every command (4 % of its time in the cutover bench, py-spy).
They change only through `set_profile` (the `profile` command), which clears what it remembers.

Usage: python -m migrator.devtools.secantus [secantusd-py arguments]
"""

from __future__ import annotations

import sys
import threading
from typing import Any

CHECK_EVERY = 1024


def prune_retryable(registry: Any, lifetime: float, cap: int) -> None:
    """SecantusDB's `_prune_retryable_locked`, in batches (called under its lock)."""
    registry._sandbox_calls = getattr(registry, "_sandbox_calls", 0) + 1
    records = registry._retryable  # (lsid, txnNumber) -> (reply, recorded at, identity)
    if len(records) <= cap and registry._sandbox_calls % CHECK_EVERY:
        return
    cutoff = registry._time() - lifetime
    for k in [k for k, v in records.items() if v[1] < cutoff]:
        records.pop(k, None)
    if len(records) > cap:
        excess = len(records) - int(cap * 0.9)
        for k, _v in sorted(records.items(), key=lambda kv: kv[1][1])[:excess]:
            records.pop(k, None)


def cache_profile(storage_cls: Any) -> None:
    """Remember `get_profile` per database until the next `set_profile`."""
    read, write = storage_cls.get_profile, storage_cls.set_profile
    lock = threading.Lock()  # a read racing a set must not store the old settings after it

    def get_profile(self: Any, db: str) -> dict[str, Any]:
        cache = self.__dict__.setdefault("_sandbox_profiles", {})
        hit = cache.get(db)
        if hit is None:
            with lock:
                hit = cache[db] = read(self, db)
        return dict(hit)  # callers get their own copy, as from storage

    def set_profile(self: Any, db: str, **kw: Any) -> None:
        with lock:
            self.__dict__.setdefault("_sandbox_profiles", {}).pop(db, None)
            write(self, db, **kw)

    storage_cls.get_profile, storage_cls.set_profile = get_profile, set_profile


def _patch() -> None:
    from secantus import storage as s
    from secantus import transactions as t

    if hasattr(s.Storage, "get_profile") and hasattr(s.Storage, "set_profile"):
        cache_profile(s.Storage)

    lifetime = getattr(t, "_RETRYABLE_RECORD_LIFETIME_SECONDS", 30 * 60.0)
    cap = getattr(t, "_RETRYABLE_RECORD_MAX", 10_000)
    registry = getattr(t, "TransactionRegistry", None)
    if registry is not None and hasattr(registry, "_prune_retryable_locked"):
        registry._prune_retryable_locked = lambda self: prune_retryable(self, lifetime, cap)


def main() -> int:
    _patch()
    from secantus.cli import main as serve

    sys.argv[0] = "secantusd-py"
    return int(serve() or 0)


if __name__ == "__main__":
    sys.exit(main())
