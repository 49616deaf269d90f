"""`migrator verify`: row by row, through the mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

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
from migrator.errors import ConfigError
from migrator.metrics import CountingProgress, ProcessMetrics
from migrator.progress import NullProgress
from migrator.verify.checker import RECHECK_WAIT
from migrator.verify.engine import parse_duration, verify
from migrator.verify.report import junit, markdown
from migrator.verify.results import VerifyResult


@click.command("verify")
@mapping_option
@click.option("--collections", help="Comma-separated collections (default: all).")
@click.option(
    "--sample",
    "sample_pct",
    type=click.FloatRange(0.01, 100),
    default=100,
    help="Verify this percentage of chunks, chosen at random.",
)
@click.option("--since", help="Only documents CDC changed in this window, e.g. 15m, 2h.")
@click.option(
    "--changed", is_flag=True, help="Only documents CDC changed since the last verification."
)
@click.option(
    "--repair",
    is_flag=True,
    help="Repair toward the source of truth, then verify again: before the write switch "
    "re-copy differing documents from MySQL (deleting extras); after it rewrite MySQL's rows "
    "from MongoDB's documents (the reverse mapping).",
)
@click.option(
    "--max-rows-per-sec",
    type=click.FloatRange(0),
    default=0,
    help="Throttle the source reads (0 = no limit).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 32),
    default=1,
    show_default=True,
    help="Chunks verified in parallel, one process each (the Transform is CPU-bound).",
)
@click.option(
    "--restart",
    is_flag=True,
    help="Start over instead of resuming an interrupted full verification.",
)
@click.option(
    "--shared",
    is_flag=True,
    help="Share one full verification with every other `verify --shared` of this migration "
    "(on any machine): chunks are claimed from the state store with a lease, a dead "
    "process's chunks are taken over, each process prints the whole run's result.",
)
@click.option(
    "--follow",
    is_flag=True,
    help="Keep re-verifying documents CDC touches, each "
    "after --settle seconds, until Ctrl-C; reports rows that stay different.",
)
@click.option(
    "--settle",
    type=click.FloatRange(0.1),
    default=5.0,
    show_default=True,
    help="With --follow: seconds between passes.",
)
@click.option(
    "--recheck-wait",
    type=click.FloatRange(0),
    default=RECHECK_WAIT,
    show_default=True,
    help="Seconds a re-check of a difference waits for a running CDC to apply past the rows "
    "it read (a lagging CDC is not a difference); past it the difference is reported, saying "
    "so. 0: do not wait.",
)
@click.option(
    "--junit",
    "junit_file",
    type=click.Path(dir_okay=False),
    help="Write a JUnit XML report here (one test case per collection).",
)
@click.option(
    "--report", "report_file", type=click.Path(dir_okay=False), help="Write a Markdown report here."
)
@metrics_port_option
@json_option
@handle_errors
def verify_cmd(
    mapping_path: str,
    collections: str | None,
    sample_pct: float,
    since: str | None,
    changed: bool,
    repair: bool,
    max_rows_per_sec: float,
    workers: int,
    restart: bool,
    shared: bool,
    follow: bool,
    settle: float,
    recheck_wait: float,
    junit_file: str | None,
    report_file: str | None,
    metrics_port: int | None,
    as_json: bool,
) -> None:
    """Prove, row by row, that MongoDB holds what MySQL holds (exit 0 clean, 1 differences).

    Builds the expected documents from the source rows with the mapping's Transform and compares
    them with the target by canonical hash; reports each difference with its _id, its kind
    (missing, extra, different, unconvertible) and, for `different`, the field paths and both
    values. Rows that cannot be converted are differences, never skipped.

    \b
    Examples:
      migrator verify -m shop.yaml
      migrator verify -m shop.yaml --changed --junit verify.xml
      migrator verify -m shop.yaml --repair --workers 4
      migrator verify -m shop.yaml --follow --settle 10
      migrator verify -m shop.yaml --shared --workers 2   # on each of N machines
    """
    if since and changed:
        raise ConfigError("--since and --changed are alternatives: pass one")
    if follow and shared:
        raise ConfigError("--follow and --shared are alternatives: pass one")
    mapping = load(mapping_path)
    kwargs = dict(
        collections=[c.strip() for c in collections.split(",")] if collections else None,
        sample_pct=sample_pct,
        changed=changed,
        since=parse_duration(since) if since else None,
        repair=repair,
        max_rows_per_sec=max_rows_per_sec,
        workers=workers,
        restart=restart,
        shared=shared,
        recheck_wait=recheck_wait,
    )
    metrics = process_metrics(mapping, "verify", metrics_port)
    if follow:
        _follow(mapping, settle, as_json, recheck_wait, metrics)
        return
    checked = metrics.get("migrator_verify_documents_checked_total")
    running = metrics.get("migrator_verify_running")
    if as_json:
        counting = CountingProgress(NullProgress(), checked, running)
        result = verify(mapping, progress=counting, **kwargs)  # type: ignore[arg-type]
    else:
        with render.RichProgress(err) as progress:
            counting = CountingProgress(progress, checked, running)
            result = verify(mapping, progress=counting, **kwargs)  # type: ignore[arg-type]
    counting.done()
    if junit_file:
        Path(junit_file).write_text(junit(result))
    if report_file:
        Path(report_file).write_text(markdown(result))
    if as_json:
        print_json(result.to_dict())
    else:
        print_result(result)
    raise SystemExit(0 if result.ok else 1)


def _follow(
    mapping: Any, settle: float, as_json: bool, recheck_wait: float, metrics: ProcessMetrics
) -> None:
    import signal
    import threading

    from migrator.verify.engine import follow

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    dirty = {"n": 0}

    checked = metrics.get("migrator_verify_documents_checked_total")
    metrics.get("migrator_verify_running").labels().set(1)

    def on_pass(r: VerifyResult) -> None:
        dirty["n"] = len(r.differences)
        for c in r.collections:
            checked.labels(c.name).inc(c.checked)
        if as_json:
            click.echo(json.dumps(r.to_dict(), default=str))
        elif r.differences or any(c.checked for c in r.collections):
            print_result(r)

    follow(mapping, settle_seconds=settle, stop=stop, on_pass=on_pass, recheck_wait=recheck_wait)
    raise SystemExit(1 if dirty["n"] else 0)


def print_result(r: VerifyResult) -> None:
    rows = [
        [
            c.name,
            f"{c.checked:,}",
            c.missing,
            c.extra,
            c.different,
            c.unconvertible,
            c.rechecked,
            c.repaired,
            "[green]clean[/]" if c.clean else "[bold red]DIFFERENT[/]",
        ]
        for c in r.collections
    ]
    out.print(
        render.table(
            f"Verification ({r.mode})",
            [
                "collection",
                "checked",
                "missing",
                "extra",
                "different",
                "unconvertible",
                "rechecked",
                "repaired",
                "result",
            ],
            rows,
        )
    )
    data = r.to_dict()
    for d in data["differences"][:50]:
        out.print(f"[red]{d['kind']}[/] {d['collection']} _id={d['_id']!r}")
        if d.get("reason"):
            out.print(f"    {d['reason']}", markup=False)
        for f in d["fields"]:
            out.print(
                f"    {f['path']}: expected {f['expected']}, found {f['actual']}", markup=False
            )
    behind = sum(c.behind for c in r.collections)
    if behind:
        out.print(
            f"[yellow]{behind} of these were re-checked while CDC had not caught up within "
            "--recheck-wait[/]: run `verify --changed` once CDC has caught up to re-check them"
        )
    if len(data["differences"]) > 50:
        out.print(f"… {len(data['differences']) - 50} more (use --json or --report)")
    out.print(
        "[green]clean[/]"
        if r.ok
        else "[bold red]differences found[/]" + (f"; repaired {r.repaired}" if r.repaired else "")
    )
