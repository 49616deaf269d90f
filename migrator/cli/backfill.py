"""`migrator backfill`: the resumable parallel copy."""

from __future__ import annotations

import functools

import click

from migrator.backfill.copy import BackfillSummary, backfill
from migrator.cli import render
from migrator.cli.common import (
    err,
    handle_errors,
    json_option,
    load,
    mapping_option,
    metrics_port_option,
    out,
    print_json,
    process_metrics,
)
from migrator.metrics import CountingProgress
from migrator.progress import NullProgress


@click.command("backfill")
@mapping_option
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    help="Parallel worker processes (default: backfill.workers in the mapping, 2).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1, 1_000_000),
    help="Rows per chunk (default: backfill.chunk_size, 5000).",
)
@click.option(
    "--max-rows-per-sec",
    type=click.FloatRange(0),
    default=0,
    help="Throttle the whole copy to this many root rows per second (0 = no limit).",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Forget checkpoints, empty the target "
    "collections, record a new binlog position and copy everything again.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read, transform and BSON-encode everything but "
    "write nothing; reports the rows/s the pipeline reaches.",
)
@click.option(
    "--collection", "collections", multiple=True, help="Only this collection (repeatable)."
)
@metrics_port_option
@json_option
@handle_errors
def backfill_cmd(
    mapping_path: str,
    workers: int | None,
    chunk_size: int | None,
    max_rows_per_sec: float,
    restart: bool,
    dry_run: bool,
    collections: tuple[str, ...],
    metrics_port: int | None,
    as_json: bool,
) -> None:
    """Copy every mapped table into MongoDB documents, resumably, in parallel.

    Records the binlog position first (CDC starts there), plans chunks by primary key, and
    checkpoints each chunk after MongoDB acknowledged it: after a crash or kill, run the same
    command again and it resumes at the first unfinished chunk. Pauses while the source's
    Threads_running or replica lag is above the mapping's `throttle` limits.

    Example: migrator backfill -m shop.yaml --workers 2 --max-rows-per-sec 20000
    """
    mapping = load(mapping_path)
    rows = process_metrics(mapping, "backfill", metrics_port).get("migrator_backfill_rows_total")
    run = functools.partial(
        backfill,
        mapping,
        workers=workers,
        chunk_size=chunk_size,
        max_rows_per_sec=max_rows_per_sec,
        restart=restart,
        dry_run=dry_run,
        collections=list(collections) or None,
    )
    if as_json:
        summary = run(progress=CountingProgress(NullProgress(), rows))
        print_json(summary.to_dict())
    else:
        with render.RichProgress(err) as progress:
            summary = run(progress=CountingProgress(progress, rows))
        print_summary(summary)
    raise SystemExit(1 if summary.dead_letters else 0)


def print_summary(s: BackfillSummary) -> None:
    title = "Backfill (dry run: nothing written)" if s.dry_run else "Backfill"
    rows = [
        [
            c.name,
            c.table,
            f"{c.rows:,}",
            f"{c.documents:,}",
            f"{c.bytes / 2**20:,.1f}",
            f"{c.chunks_run}/{c.chunks_total}",
            c.chunks_skipped,
            c.dead_letters,
        ]
        for c in s.collections
    ]
    out.print(
        render.table(
            title,
            [
                "collection",
                "table",
                "rows",
                "documents",
                "MiB",
                "chunks",
                "skipped",
                "dead letters",
            ],
            rows,
        )
    )
    out.print(
        f"{s.rows:,} rows in {s.seconds:.1f} s = [bold]{s.rows_per_sec:,.0f} rows/s[/] "
        f"with {s.workers} worker(s)"
        + (f"; paused {s.paused_seconds:.0f} s for load" if s.paused_seconds else "")
    )
    if s.position:
        p = s.position
        out.print(f"CDC starts at {p['file']}:{p['pos']} (GTID {p.get('gtid') or '-'})")
    if s.dead_letters:
        out.print(
            f"[bold red]{s.dead_letters} row(s) went to the dead-letter collection[/] "
            "(state database, collection dead_letters): see the reasons there"
        )
