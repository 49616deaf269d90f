"""The sandbox's fixes for SecantusDB keep its behaviour: retryable-write records within the
server's bounds, profiler settings as stored."""

from __future__ import annotations

from typing import Any

from migrator.devtools.secantus import CHECK_EVERY, cache_profile, prune_retryable


class Registry:
    def __init__(self, records: dict[Any, Any], clock: float) -> None:
        self._retryable = records
        self.clock = clock

    def _time(self) -> float:
        return self.clock


def test_past_the_cap_the_oldest_go_and_the_newest_stay() -> None:
    reg = Registry({("s", i): ({}, float(i), b"") for i in range(12_000)}, clock=12_000.0)
    prune_retryable(reg, lifetime=1e9, cap=10_000)
    kept = sorted(k[1] for k in reg._retryable)
    assert len(kept) == 9_000
    assert kept[0] == 3_000 and kept[-1] == 11_999


def test_stale_records_go_within_a_batch_of_writes() -> None:
    reg = Registry({("s", i): ({}, 0.0, b"") for i in range(100)}, clock=100.0)
    reg._retryable[("s", "fresh")] = ({}, 99.0, b"")
    for _ in range(CHECK_EVERY):
        prune_retryable(reg, lifetime=10.0, cap=10_000)
    assert list(reg._retryable) == [("s", "fresh")]


def test_under_the_cap_most_calls_scan_nothing() -> None:
    reg = Registry({("s", 1): ({}, 0.0, b"")}, clock=100.0)
    prune_retryable(reg, lifetime=10.0, cap=10_000)  # call 1 of the batch: not a check
    assert ("s", 1) in reg._retryable


class _Storage:
    """SecantusDB's profiler settings as its storage keeps them (reads counted)."""

    def __init__(self) -> None:
        self.saved: dict[str, dict[str, Any]] = {}
        self.reads = 0

    def get_profile(self, db: str) -> dict[str, Any]:
        self.reads += 1
        return dict(self.saved.get(db, {"level": 0, "slowms": 100, "sampleRate": 1.0}))

    def set_profile(self, db: str, *, level: int, slowms: int = 100) -> None:
        self.saved[db] = {"level": level, "slowms": slowms, "sampleRate": 1.0}


def test_profile_settings_are_read_once_and_a_set_is_seen_at_once() -> None:
    cache_profile(_Storage)
    st = _Storage()
    for _ in range(50):
        assert st.get_profile("shop")["level"] == 0
    assert st.reads == 1
    st.get_profile("shop")["level"] = 2  # a caller's copy, not what is remembered
    assert st.get_profile("shop")["level"] == 0
    st.set_profile("shop", level=2, slowms=0)
    assert st.get_profile("shop") == {"level": 2, "slowms": 0, "sampleRate": 1.0}
    assert st.get_profile("other")["level"] == 0  # per database
    assert st.reads == 3
