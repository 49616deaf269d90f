"""A function called every few seconds from a daemon thread: liveness and lease renewals that
must go on while the main loop is busy (a long batch, a long chunk)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("migrator.ticker")


class Ticker:
    def __init__(self, fn: Callable[[], None], interval: float, name: str) -> None:
        self.fn = fn
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Ticker:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.fn()
            except Exception:  # the main loop meets the same server and reports it
                log.debug("%s failed", self._thread.name, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
