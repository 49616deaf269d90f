"""Handing items from one thread to another without blocking past a stop: the producer gives
up once the consumer has failed or been told to stop."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def put_unless(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item` when there is room; False if `stop` was set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False


class MadeAhead(Generic[T]):
    """`make(x)` for each x of `inputs`, in order, on a thread, while the caller uses the ones
    made before: the work of the next items overlaps the caller's wait on something else (a
    server's answer). At most `budget` units (`size(item)`) wait made at once, however far
    ahead that is (the first always goes). An error in `make` is raised to the caller, in its
    turn; `close` stops the thread after the item it is making."""

    def __init__(
        self,
        make: Callable[[Any], T],
        inputs: Sequence[Any],
        *,
        size: Callable[[T], int],
        budget: int,
    ) -> None:
        self._cond = threading.Condition()
        self._ready: deque[tuple[T | None, int, BaseException | None]] = deque()
        self._held = 0
        self._stopped = False
        self._count = len(inputs)
        self._thread = threading.Thread(
            target=self._run, args=(make, list(inputs), size, budget), daemon=True
        )
        self._thread.start()

    def _run(
        self, make: Callable[[Any], T], inputs: list[Any], size: Callable[[T], int], budget: int
    ) -> None:
        for x in inputs:
            with self._cond:
                self._cond.wait_for(lambda: self._stopped or self._held < budget)
                if self._stopped:
                    return
            try:
                item = make(x)
                entry: tuple[T | None, int, BaseException | None] = (item, size(item), None)
            except BaseException as exc:  # handed to the caller, raised in its thread
                entry = (None, 0, exc)
            with self._cond:
                self._ready.append(entry)
                self._held += entry[1]
                self._cond.notify_all()
            if entry[2] is not None:
                return

    def __iter__(self) -> Iterator[T]:
        for _ in range(self._count):
            with self._cond:
                self._cond.wait_for(lambda: bool(self._ready))
                item, n, exc = self._ready.popleft()
                self._held -= n
                self._cond.notify_all()
            if exc is not None:
                raise exc
            yield item  # type: ignore[misc]  # made: not None

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join()

    def __enter__(self) -> MadeAhead[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
