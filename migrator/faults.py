"""Fault points: tests stop a process at a named point to kill it there."""

from __future__ import annotations

import os
import time


def fault_point(stage: str) -> None:
    """MIGRATOR_FAULT_PAUSE=stage:seconds sleeps here (a test then kills the process)."""
    name, _, secs = os.environ.get("MIGRATOR_FAULT_PAUSE", "").partition(":")
    if name == stage:
        time.sleep(float(secs or 30))
