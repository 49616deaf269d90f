"""The binlog source with rows decoded in worker processes.

One process reads the stream and splits it at transaction boundaries (binlog_read); it hands
batches of whole transactions round-robin to N decoder processes (binlog_decode); this process
takes their results back in the same round-robin order, so items come out in binlog order,
each transaction whole and in place (per-aggregate order holds because the total order does).
Checkpoints stay where they were: at commits, saved by the runner after MongoDB acknowledged.

A DDL stops the reader until the runner has handled it (`--on-ddl extend` changes the schema
every decoder normalises with). The children watch a pipe whose other end only this process
holds: when this process dies (even by SIGKILL) they see its end close and exit.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import select
import signal
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from migrator.cdc.binlog_decode import Decoder
from migrator.cdc.binlog_read import (
    BinlogReader,
    Heartbeat,
    RawStream,
    RawTransaction,
    ReaderStopped,
    Tick,
    Unit,
)
from migrator.errors import CheckFailed, ConnectError, MigratorError
from migrator.model.events import DDL, Position, Transaction
from migrator.model.schema import Schema
from migrator.model.urls import MySQLURL

log = logging.getLogger("migrator.cdc.binlog")

BATCH_BYTES = 512 << 10  # a batch is handed on at this size, ...
BATCH_UNITS = 256  # ... this many transactions,
BATCH_SECONDS = 0.02  # ... this age, or when nothing more is waiting on the socket
QUEUE_BATCHES = 4  # batches waiting per decoder, each way (memory stays bounded)
_ERRORS: dict[str, type[MigratorError]] = {
    "CheckFailed": CheckFailed,
    "ConnectError": ConnectError,
    "MigratorError": MigratorError,
}


def default_decoders() -> int:
    """Decoder processes when not told: one per core beyond the one that applies, up to 4."""
    return max(1, min(4, (os.cpu_count() or 1) - 1))


def _context() -> BaseContext:
    # forkserver: children start in milliseconds from a clean, single-threaded parent (this
    # process has pymongo's and the liveness threads: forking it is unsafe)
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """multiprocessing runs the parent's main module again in every child it starts (by path,
    or by name when run with -m): these children need nothing of it, and the CLI's imports the
    whole tool (~0.3 s a child). Without `__spec__` and `__file__` it is not passed."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__
    }
    main.__dict__["__spec__"] = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


@dataclass
class _ReaderArgs:
    url: MySQLURL
    database: str
    tables: set[str]
    start: Position
    server_id: int
    flavor: str
    heartbeat: float


def _describe(exc: BaseException) -> tuple[str, str, str | None]:
    if isinstance(exc, MigratorError):
        name = type(exc).__name__ if type(exc).__name__ in _ERRORS else "MigratorError"
        return name, str(exc), getattr(exc, "hint", None)
    return "MigratorError", f"{type(exc).__name__}: {exc}", None


def _rebuild(what: tuple[str, str, str | None], where: str) -> MigratorError:
    name, message, hint = what
    cls = _ERRORS.get(name, MigratorError)
    if name == "MigratorError" and hint is None:
        message = f"binlog {where} failed: {message}"
    return cls(message, hint=hint) if hint else cls(message)


class _Orphaned(Exception):
    """The process that started us is gone."""


def _child_setup() -> None:
    # Ctrl-C and a TERM sent to the process group are the parent's to handle: it stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _put(q: Any, msg: Any, lifeline: multiprocessing.connection.Connection) -> None:
    while True:
        try:
            q.put(msg, timeout=0.2)
            return
        except queue.Full:
            if lifeline.poll():
                raise _Orphaned() from None


def _get(q: Any, lifeline: multiprocessing.connection.Connection) -> Any:
    while True:
        try:
            return q.get(timeout=0.2)
        except queue.Empty:
            if lifeline.poll():
                raise _Orphaned() from None


def _more_waiting(stream: RawStream) -> bool:
    """Is more of the stream already here (so the batch can wait for it)?"""
    sock = getattr(stream._stream_connection, "_sock", None)
    if sock is None:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    ready, _, _ = select.select([sock], [], [], 0)
    return bool(ready)


def _size(unit: Unit | Tick) -> int:
    return sum(len(p) for p in unit.packets) if isinstance(unit, RawTransaction) else 64


def _due(started: float, reader: BinlogReader) -> bool:
    """Send the batch held: it is old enough, or nothing more of the stream is here yet."""
    return (
        time.monotonic() - started >= BATCH_SECONDS
        or reader._stream is None
        or not _more_waiting(reader._stream)
    )


def _ddl_handled(
    control: multiprocessing.connection.Connection, lifeline: multiprocessing.connection.Connection
) -> Any:
    """Wait until the runner has handled a DDL (it may change the schema): the new schema, or
    None if it did not change."""
    while not control.poll(0.2):
        if lifeline.poll():
            raise _Orphaned()
    return control.recv()


def reader_main(
    args: _ReaderArgs,
    schema: Schema,
    inboxes: list[Any],
    control: multiprocessing.connection.Connection,
    lifeline: multiprocessing.connection.Connection,
) -> None:
    """The reading process: units in batches, round-robin to the decoders, in order."""
    _child_setup()
    reader = BinlogReader(
        args.url,
        args.database,
        args.tables,
        args.start,
        server_id=args.server_id,
        flavor=args.flavor,
        heartbeat=args.heartbeat,
        stopped=lifeline.poll,  # the CDC process is gone (its end of the pipe closed)
    )
    n = len(inboxes)
    seq = 0
    version, known = 0, [0] * n  # the schema's version, and the one each decoder has
    batch: list[Unit | Tick] = []
    size, started, sent = 0, 0.0, 0.0

    def send(kind: str, payload: Any) -> None:
        nonlocal seq, sent
        sent = time.monotonic()
        k = seq % n
        fresh = schema if known[k] < version else None
        known[k] = version
        _put(inboxes[k], (kind, payload, fresh, reader.reconnects), lifeline)
        seq += 1

    def flush() -> None:
        nonlocal batch, size
        if batch:
            send("units", batch)
            batch, size = [], 0

    try:
        for unit in reader.units():
            if isinstance(unit, Tick):
                # only unmapped events for a while: what is held must not wait for them
                if batch and _due(started, reader):
                    flush()
                elif not batch and time.monotonic() - sent >= 0.1:
                    send("units", [unit])  # the runner's own batch must not wait either
                if lifeline.poll():
                    raise _Orphaned()
                continue
            if not batch:
                started = time.monotonic()
            batch.append(unit)
            size += _size(unit)
            if (
                isinstance(unit, DDL | Heartbeat)
                or size >= BATCH_BYTES
                or len(batch) >= BATCH_UNITS
                or _due(started, reader)
            ):
                flush()
            if isinstance(unit, Heartbeat) and lifeline.poll():
                raise _Orphaned()
            if isinstance(unit, DDL):
                changed = _ddl_handled(control, lifeline)
                if changed is not None:
                    schema, version = changed, version + 1
        flush()
        send("end", None)
    except (_Orphaned, ReaderStopped):
        for q in inboxes:
            q.cancel_join_thread()
    except BaseException as exc:  # the runner raises it, in stream order
        with contextlib.suppress(_Orphaned):
            flush()
            send("error", _describe(exc))
    finally:
        reader.close()


def decoder_main(
    schema: Schema,
    tables: set[str],
    max_events: int,
    inbox: Any,
    outbox: Any,
    lifeline: multiprocessing.connection.Connection,
) -> None:
    """A decoding process: batches of units in, the items they make out, in order."""
    _child_setup()
    decoder = Decoder(schema, tables, max_events)
    try:
        while True:
            kind, payload, fresh, reconnects = _get(inbox, lifeline)
            if fresh is not None:
                decoder.set_schema(fresh)
            if kind != "units":
                _put(outbox, (kind, payload, reconnects), lifeline)
                return
            try:
                items = [item for unit in payload for item in decoder.decode(unit)]
            except Exception as exc:
                _put(outbox, ("error", _describe(exc), reconnects), lifeline)
                return
            _put(outbox, ("items", items, reconnects), lifeline)
    except _Orphaned:
        outbox.cancel_join_thread()


class ParallelBinlogSource:
    """BinlogSource's items, decoded by `decoders` processes (started at the first item)."""

    def __init__(
        self,
        url: MySQLURL,
        schema: Schema,
        tables: set[str],
        start: Position,
        *,
        decoders: int,
        server_id: int = 0,
        flavor: str = "mariadb",
        heartbeat: float = 0.1,
        max_events: int = 10_000,
    ) -> None:
        self.args = _ReaderArgs(
            url,
            schema.database,
            tables,
            start,
            server_id or 100_000 + int(time.time()) % 100_000,
            flavor,
            heartbeat,
        )
        self.schema = schema
        self.tables = tables
        self.decoders = max(1, decoders)
        self.max_events = max_events
        self.position = start  # the last commit delivered (after a DDL: the position after it)
        self.reconnects = 0
        self._changed: Schema | None = None
        self._procs: list[Any] = []
        self._queues: list[Any] = []
        self._outboxes: list[Any] = []
        self._lifeline: multiprocessing.connection.Connection | None = None
        self._control: multiprocessing.connection.Connection | None = None

    def set_schema(self, schema: Schema) -> None:
        """The schema after the DDL just delivered (the decoders get it before what follows)."""
        self.schema = self._changed = schema

    def _start(self) -> None:
        ctx = _context()
        lifeline_r, self._lifeline = ctx.Pipe(duplex=False)
        control_r, self._control = ctx.Pipe(duplex=False)
        inboxes = [ctx.Queue(QUEUE_BATCHES) for _ in range(self.decoders)]
        self._outboxes = [ctx.Queue(QUEUE_BATCHES) for _ in range(self.decoders)]
        self._queues = inboxes + self._outboxes
        self._procs = [
            ctx.Process(  # type: ignore[attr-defined]
                target=decoder_main,
                args=(self.schema, self.tables, self.max_events, inbox, outbox, lifeline_r),
                name=f"migrator-binlog-decoder-{i}",
                daemon=True,
            )
            for i, (inbox, outbox) in enumerate(zip(inboxes, self._outboxes, strict=True))
        ]
        self._procs.append(
            ctx.Process(  # type: ignore[attr-defined]
                target=reader_main,
                args=(self.args, self.schema, inboxes, control_r, lifeline_r),
                name="migrator-binlog-reader",
                daemon=True,
            )
        )
        with _main_script_hidden():
            for p in self._procs:
                p.start()
        lifeline_r.close()
        control_r.close()

    def _next(self, k: int) -> Any:
        while True:
            try:
                return self._outboxes[k].get(timeout=1.0)
            except queue.Empty:
                for p in self._procs:
                    if p.exitcode not in (None, 0):
                        raise MigratorError(
                            f"the CDC process {p.name} (pid {p.pid}) died (exit code {p.exitcode})",
                            hint="run CDC again: it resumes from its checkpoint",
                        ) from None

    def items(self) -> Iterator[Transaction | DDL | Heartbeat | Tick]:
        """Everything after the start, forever (the caller stops iterating)."""
        if not self._procs:
            self._start()
        seq = 0
        while True:
            kind, payload, reconnects = self._next(seq % self.decoders)
            seq += 1
            self.reconnects = reconnects
            if kind == "error":
                raise _rebuild(payload, "reader")
            if kind == "end":
                return
            for item in payload:
                if isinstance(item, Transaction) and item.complete:
                    self.position = item.position
                elif isinstance(item, DDL) and item.after is not None:
                    self.position = item.after
                yield item
                if isinstance(item, DDL) and self._control is not None:
                    self._control.send(self._changed)
                    self._changed = None

    def close(self) -> None:
        """Stop the children: they hold nothing that needs a goodbye (the server drops the
        binlog connection; what is in the queues is dropped with them)."""
        if self._lifeline is not None:
            self._lifeline.close()  # for a child between two of our signals
            self._lifeline = None
        if self._control is not None:
            self._control.close()
            self._control = None
        for p in self._procs:
            if p.is_alive():
                p.kill()
        for p in self._procs:
            p.join(5.0)
        for q in self._queues:
            q.cancel_join_thread()
            q.close()
        self._procs, self._queues, self._outboxes = [], [], []
