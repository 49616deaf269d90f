"""Handing items from one thread to another through a bounded queue without blocking past a
stop: the producer gives up once the consumer has failed or been told to stop."""

from __future__ import annotations

import queue
import threading
from typing import Any


def put_unless(q: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put `item` when there is room; False if `stop` was set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.5)
            return True
        except queue.Full:
            continue
    return False
