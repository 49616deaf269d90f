"""Waiting for the Debezium bridge (debezium_bridge.py) to stream, without importing its JVM."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

STREAMING = "Connected to binlog at"


def wait_until_streaming(log: Path, proc: Any, timeout: float = 120.0) -> None:
    """Block until the connector streams the binlog (its snapshot is over). Writes made while
    a snapshot runs with snapshot.locking.mode=none can be lost: the binlog position is read
    after the consistent snapshot starts, so changes between the two are in neither (a delete
    lost that way left a deleted row's document in MongoDB: torture seed 401)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if STREAMING in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the Debezium bridge exited: {log.read_text()[-3000:]}")
        time.sleep(0.2)
    raise RuntimeError(f"Debezium did not start streaming in {timeout:.0f} s")
