"""The sandbox's fix for SecantusDB's retryable-write records keeps the server's bounds."""

from __future__ import annotations

from typing import Any

from migrator.sandbox_secantus import CHECK_EVERY, prune_retryable


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
