"""The phases of a migration, in order (DESIGN.md), and who is the source of truth in each."""

from __future__ import annotations

from typing import Literal

Phase = Literal["planned", "backfill", "sync", "dual_write", "read_mongo", "write_mongo", "done"]
PHASES: list[str] = [
    "planned",
    "backfill",
    "sync",
    "dual_write",
    "read_mongo",
    "write_mongo",
    "done",
]

# phase -> (source of truth, apps read, apps write)
ROUTING: dict[str, tuple[str, str, str]] = {
    "planned": ("mysql", "mysql", "mysql"),
    "backfill": ("mysql", "mysql", "mysql"),
    "sync": ("mysql", "mysql", "mysql"),
    "dual_write": ("mysql", "mysql", "mysql,mongo"),
    "read_mongo": ("mysql", "mongo", "mysql,mongo"),
    "write_mongo": ("mongo", "mongo", "mongo,mysql"),
    "done": ("mongo", "mongo", "mongo"),
}


def index(phase: str) -> int:
    return PHASES.index(phase)


def next_phase(phase: str) -> str | None:
    i = index(phase)
    return PHASES[i + 1] if i + 1 < len(PHASES) else None


def previous_phase(phase: str) -> str | None:
    i = index(phase)
    return PHASES[i - 1] if i > 0 else None
