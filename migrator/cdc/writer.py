"""Writing a batch's operations to MongoDB: an ordered bulk per collection (collections in
parallel, their documents being different); an operation the server refuses becomes a dead
letter and the rest goes on."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pymongo import DeleteOne
from pymongo.errors import BulkWriteError, DocumentTooLarge, InvalidDocument, WriteError

from migrator.model.events import ChangeEvent, Position
from migrator.sink.mongo import with_retry
from migrator.state.store import StateStore

Op = Any  # a pymongo write model
# (event or None, position, reason, collection): records a dead letter
Dead = Callable[[ChangeEvent | None, Position, str, str], None]


@dataclass
class BatchResult:
    events: int = 0
    applied: dict[tuple[str, str], int] = field(default_factory=dict)  # (table, op) -> count
    dead_letters: int = 0
    pending: int = 0
    resolved_pending: int = 0
    operations: int = 0
    coalesced: int = 0
    folded: int = 0  # changes made to a new document before it was written (newdocs.py)
    rebuilt: int = 0
    cascades: int = 0
    seconds: float = 0.0


@dataclass
class Tagged:
    """An operation and the change it comes from (for a dead letter, should it be refused)."""

    op: Op
    event: ChangeEvent | None
    position: Position
    # a new document written whole (newdocs.py): if the server refuses it (it exists after
    # all), these statements make the same changes
    fallback: list[Tagged] | None = None


class OpWriter:
    """Writes operations per collection, in order; counts them in `result.operations`."""

    def __init__(self, db: Any, state: StateStore, result: BatchResult, dead: Dead) -> None:
        self.db, self.state, self.result, self.dead = db, state, result, dead

    def write(self, ops: dict[str, list[Tagged]]) -> None:
        if len(ops) > 1:
            with ThreadPoolExecutor(max_workers=min(len(ops), 4)) as pool:
                for f in [pool.submit(self._write, c, t) for c, t in ops.items()]:
                    f.result()
        else:
            for coll, tagged in ops.items():
                self._write(coll, tagged)

    def _write(self, coll: str, tagged: list[Tagged]) -> None:
        """Ordered bulk; an op the server refuses becomes a dead letter and the rest goes on."""
        self.result.operations += len(tagged)
        # before they are sent: a backfill resume must never count too few deletes
        self.state.note_deletes(coll, sum(isinstance(t.op, DeleteOne) for t in tagged))
        start = 0
        collection = self.db[coll]
        while start < len(tagged):
            chunk = tagged[start:]
            try:
                with_retry(partial(collection.bulk_write, [t.op for t in chunk], ordered=True))
                return
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if not errors:
                    raise
                bad = errors[0]["index"]
                t = chunk[bad]
                start += bad + 1
                if t.fallback is not None:
                    self._write(coll, t.fallback)
                    continue
                self.dead(
                    t.event,
                    t.position,
                    f"MongoDB refused the write: {errors[0].get('errmsg', errors[0])}",
                    coll,
                )
            except (DocumentTooLarge, InvalidDocument, WriteError):
                # refused before it reached the server: find the op by writing one at a time
                for t in chunk:
                    try:
                        with_retry(partial(collection.bulk_write, [t.op], ordered=True))
                    except (BulkWriteError, DocumentTooLarge, InvalidDocument, WriteError) as e2:
                        if t.fallback is not None:
                            self._write(coll, t.fallback)
                        else:
                            self.dead(t.event, t.position, f"cannot apply: {e2}", coll)
                return
