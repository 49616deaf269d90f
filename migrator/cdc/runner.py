"""`migrator cdc` (binlog): tail the source from the checkpoint (or the backfill's position),
apply in batches, checkpoint after MongoDB acknowledged each batch, and say how far behind we
are. The binlog stream (binlog_stream.py) goes through the one change loop (loop.py), as the
Debezium consumer (kafka.py) does."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Literal

from migrator.cdc.applier import Applier
from migrator.cdc.binlog_parallel import default_decoders
from migrator.cdc.binlog_stream import BinlogStream
from migrator.cdc.ddl import OnDDL, adds_only_nullable_columns
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.loop import CdcSummary, ChangeLoop, LiveStats, LoopSettings
from migrator.model.events import reached
from migrator.model.settings import Mapping
from migrator.runtime import Migration, opened
from migrator.source.position import master_position

# what callers of `migrator.cdc.runner` use beside run_cdc
__all__ = [
    "CdcSummary",
    "LiveStats",
    "OnDDL",
    "adds_only_nullable_columns",
    "master_position",
    "reached",
    "run_cdc",
]


def run_cdc(
    migration: Migration | Mapping,
    *,
    mode: Literal["follow", "until-caught-up"] = "follow",
    on_ddl: OnDDL = "stop",
    batch_events: int = 2000,
    batch_seconds: float = 0.1,
    stop: threading.Event | None = None,
    on_batch: Callable[[LiveStats], None] | None = None,
    dry_run: bool = False,
    max_events_in_memory: int = 10_000,
    pending_timeout: float = 600.0,
    decoders: int | None = None,
) -> CdcSummary:
    """Tail the source and apply; `dry_run` decodes, transforms and builds every operation
    but writes nothing and saves no checkpoint (it measures the pipeline). Rows are decoded by
    `decoders` worker processes (None: one per core beyond this one, up to 4; 0: here).

    Memory is bounded by `max_events_in_memory` whatever a transaction's size: a bigger one
    is applied in pieces, and the checkpoint still moves only at commits."""
    with opened(migration, claim_state=not dry_run) as mig:
        lookup = SourceLookup(mig.source_url)
        try:
            applier = Applier(
                mig.transform,
                mig.target,
                mig.state,
                lookup,
                dry_run=dry_run,
                pending_bound_seconds=pending_timeout,
            )
            summary = CdcSummary(mode=mode, start={})
            stream = BinlogStream(
                mig,
                applier,
                lookup,
                summary,
                until_caught_up=mode == "until-caught-up",
                on_ddl=on_ddl,
                decoders=default_decoders() if decoders is None else decoders,
                max_events=max_events_in_memory,
                dry_run=dry_run,
            )
            settings = LoopSettings(
                mode=mode,
                dry_run=dry_run,
                batch_events=max(1, min(batch_events, max_events_in_memory)),
                batch_seconds=batch_seconds,
                max_events=max_events_in_memory,
                on_batch=on_batch,
            )
            loop = ChangeLoop(
                mig,
                stream,
                applier,
                settings,
                stop=stop or threading.Event(),
                summary=summary,
                live_fields={"source": "binlog"},
            )
            return loop.run()
        finally:
            lookup.close()
