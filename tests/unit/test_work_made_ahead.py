"""MadeAhead: the next items made on a thread while the caller uses earlier ones, in order,
never more than the budget waiting, errors raised in the caller's turn, stopped on close."""

from __future__ import annotations

import threading
import time

import pytest

from migrator.handoff import MadeAhead


def test_items_come_in_order_and_are_made_ahead_of_the_caller():
    made: list[int] = []
    with MadeAhead(lambda x: made.append(x) or x * 10, range(6), size=lambda _: 1, budget=100) as a:
        it = iter(a)
        assert next(it) == 0
        deadline = time.monotonic() + 10
        while len(made) < 6:  # the rest is made while the caller holds the first
            assert time.monotonic() < deadline, made
            time.sleep(0.01)
        assert list(it) == [10, 20, 30, 40, 50]


def test_no_more_than_the_budget_waits_made():
    waiting = 0
    most = 0
    lock = threading.Lock()

    def make(x: int) -> int:
        nonlocal waiting, most
        with lock:
            waiting += x
            most = max(most, waiting)
        return x

    sizes = [3, 3, 3, 3, 9, 1, 1, 1, 1]  # the 9 goes alone once the others are taken
    with MadeAhead(make, sizes, size=lambda x: x, budget=7) as a:
        for x in a:
            with lock:
                waiting -= x  # taken: no longer waiting
            time.sleep(0.02)  # a slow caller: the thread fills the budget meanwhile
    # an item starts only while less than the budget waits: at most budget - 1 + the item
    assert most <= 7 - 1 + 9
    assert most >= 6  # it did work ahead


def test_a_failure_is_raised_in_the_caller_s_turn_after_the_items_before_it():
    def make(x: int) -> int:
        if x == 3:
            raise ValueError("row 3 does not convert")
        return x

    got: list[int] = []
    with (
        pytest.raises(ValueError, match="row 3"),
        MadeAhead(make, range(6), size=lambda _: 1, budget=100) as a,
    ):
        for x in a:
            got.append(x)
    assert got == [0, 1, 2]


def test_close_stops_the_thread_before_the_rest_is_made():
    made: list[int] = []
    a = MadeAhead(lambda x: made.append(x) or x, range(1000), size=lambda _: 1, budget=2)
    assert next(iter(a)) == 0
    a.close()
    assert not a._thread.is_alive()
    assert len(made) < 10
