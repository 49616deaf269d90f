"""Progress reporting as one small interface: rich bars on a terminal, nothing for --json/tests."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, collection: str, total_rows: int, done_rows: int = 0) -> None: ...

    def advance(self, collection: str, rows: int) -> None: ...

    def finish(self, collection: str, rows: int) -> None: ...

    def note(self, message: str) -> None: ...


class NullProgress:
    def start(self, collection: str, total_rows: int, done_rows: int = 0) -> None:
        pass

    def advance(self, collection: str, rows: int) -> None:
        pass

    def finish(self, collection: str, rows: int) -> None:
        pass

    def note(self, message: str) -> None:
        pass
