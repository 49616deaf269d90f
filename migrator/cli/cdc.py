"""`migrator cdc` and `migrator sync`: keep MongoDB in sync with the source."""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable
from typing import Any, Literal, cast

import click

from migrator.backfill.copy import backfill
from migrator.cdc.kafka import KafkaSource, run_debezium, security_settings
from migrator.cdc.runner import CdcSummary, LiveStats, OnDDL, run_cdc
from migrator.cli import render
from migrator.cli.backfill import print_summary
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
from migrator.metrics import CdcMetrics, CountingProgress, ProcessMetrics
from migrator.progress import NullProgress


def _stop_on_signals() -> threading.Event:
    """SIGINT/SIGTERM finish the batch in flight, checkpoint, and exit 0."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


cdc_options = [
    click.option(
        "--source",
        "source_kind",
        type=click.Choice(["binlog", "debezium"]),
        default="binlog",
        show_default=True,
        help="Where changes come from.",
    ),
    click.option(
        "--follow/--until-caught-up",
        default=True,
        show_default=True,
        help="Run until SIGINT/SIGTERM, or stop once every event up to the source's "
        "position at start is applied.",
    ),
    click.option(
        "--kafka-bootstrap",
        help="Kafka host:port for --source debezium (default: debezium.bootstrap in the mapping).",
    ),
    click.option(
        "--topic-prefix",
        help="The Debezium connector's topic.prefix (default: debezium.topic_prefix).",
    ),
    click.option(
        "--group",
        help="Consumer group; processes sharing it share the partitions "
        "(default: debezium.group, else migrator-<target database>).",
    ),
    click.option(
        "--kafka-security-protocol",
        type=click.Choice(["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
        help="Kafka security.protocol (default: debezium.security.protocol, else PLAINTEXT).",
    ),
    click.option(
        "--kafka-sasl-mechanism",
        type=click.Choice(["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
        help="SASL mechanism for SASL_SSL / SASL_PLAINTEXT.",
    ),
    click.option("--kafka-sasl-username", help="SASL user name."),
    click.option(
        "--kafka-sasl-password-file",
        type=click.Path(dir_okay=False),
        help="File holding the SASL password (read once, never printed).",
    ),
    click.option(
        "--kafka-ssl-cafile",
        type=click.Path(dir_okay=False),
        help="PEM file of the CA that signed the brokers' certificates.",
    ),
    click.option(
        "--kafka-ssl-certfile",
        type=click.Path(dir_okay=False),
        help="PEM client certificate, for brokers that want mutual TLS (with --kafka-ssl-keyfile).",
    ),
    click.option(
        "--kafka-ssl-keyfile",
        type=click.Path(dir_okay=False),
        help="PEM key of --kafka-ssl-certfile.",
    ),
    click.option(
        "--on-ddl",
        type=click.Choice(["stop", "ignore", "extend"]),
        default="stop",
        show_default=True,
        help="What a schema change on a mapped table does: stop "
        "with the statement shown, skip it, or accept added nullable columns.",
    ),
    click.option(
        "--pending-timeout",
        type=click.FloatRange(0),
        default=600.0,
        show_default=True,
        help="Seconds an embedded row may wait for its parent document before it goes to the "
        "dead-letter collection.",
    ),
    click.option(
        "--max-events-in-memory",
        type=click.IntRange(100),
        default=10_000,
        show_default=True,
        help="Row events held at once (binlog source): a bigger transaction is applied in "
        "pieces, its checkpoint still at the commit.",
    ),
    click.option(
        "--decoders",
        type=click.IntRange(0, 32),
        help="Processes decoding binlog rows in parallel, in binlog order (binlog source; "
        "default: one per core beyond the applying one, up to 4; 0 decodes in the CDC process).",
    ),
]


def _with(options: list[Any]) -> Any:
    def deco(fn: Any) -> Any:
        for o in reversed(options):
            fn = o(fn)
        return fn

    return deco


def _run(
    mapping: Any,
    *,
    source_kind: str,
    follow: bool,
    on_ddl: str,
    as_json: bool,
    kafka_bootstrap: str | None,
    topic_prefix: str | None,
    group: str | None,
    kafka_security_protocol: str | None = None,
    kafka_sasl_mechanism: str | None = None,
    kafka_sasl_username: str | None = None,
    kafka_sasl_password_file: str | None = None,
    kafka_ssl_cafile: str | None = None,
    kafka_ssl_certfile: str | None = None,
    kafka_ssl_keyfile: str | None = None,
    dry_run: bool = False,
    metrics_port: int | None = None,
    metrics: ProcessMetrics | None = None,
    pending_timeout: float = 600.0,
    max_events_in_memory: int = 10_000,
    decoders: int | None = None,
) -> CdcSummary:
    stop = _stop_on_signals()
    mode: Literal["follow", "until-caught-up"] = "follow" if follow else "until-caught-up"
    run: Callable[..., CdcSummary]
    if source_kind == "debezium":
        security = security_settings(
            mapping,
            {
                "protocol": kafka_security_protocol,
                "sasl_mechanism": kafka_sasl_mechanism,
                "sasl_username": kafka_sasl_username,
                "sasl_password_file": kafka_sasl_password_file,
                "ssl_cafile": kafka_ssl_cafile,
                "ssl_certfile": kafka_ssl_certfile,
                "ssl_keyfile": kafka_ssl_keyfile,
            },
        )
        source = KafkaSource.of(
            mapping,
            bootstrap=kafka_bootstrap,
            prefix=topic_prefix,
            group=group,
            security=security,
        )
        run = functools.partial(
            run_debezium,
            mapping,
            source=source,
            mode=mode,
            stop=stop,
            pending_timeout=pending_timeout,
            dry_run=dry_run,
        )
    else:
        run = functools.partial(
            run_cdc,
            mapping,
            mode=mode,
            on_ddl=cast(OnDDL, on_ddl),
            stop=stop,
            dry_run=dry_run,
            pending_timeout=pending_timeout,
            max_events_in_memory=max_events_in_memory,
            decoders=decoders,
        )
    cdc_metrics = CdcMetrics(metrics or process_metrics(mapping, "cdc", metrics_port))
    if as_json:
        return run(on_batch=cdc_metrics.update)
    with render.CdcView(err) as view:

        def both(stats: LiveStats) -> None:
            view.update(stats)
            cdc_metrics.update(stats)

        return run(on_batch=both)


def print_cdc(s: CdcSummary) -> None:
    rows = [[k.split(" ")[0], k.split(" ")[1], f"{v:,}"] for k, v in sorted(s.applied.items())]
    out.print(render.table("CDC", ["table", "op", "events"], rows))
    out.print(
        f"{s.transactions:,} transactions, {s.events:,} events in {s.seconds:.1f} s "
        f"({s.events_per_sec:,.0f} events/s); lag {s.lag_seconds:.1f} s; {s.stopped}"
    )
    out.print(f"position {s.end.get('file')}:{s.end.get('pos')} GTID {s.end.get('gtid') or '-'}")
    for d in s.ddl:
        out.print(f"DDL ({d['action']}): {d['statement'][:120]}")
    if s.dead_letters:
        out.print(f"[bold red]{s.dead_letters} event(s) went to the dead-letter collection[/]")
    if s.pending:
        out.print(f"[yellow]{s.pending} embedded change(s) wait for their parent document[/]")


@click.command("cdc")
@mapping_option
@_with(cdc_options)
@metrics_port_option
@click.option(
    "--dry-run",
    is_flag=True,
    help="Decode, transform and build every operation "
    "but write nothing and keep no checkpoint: measures the pipeline's events/s.",
)
@json_option
@handle_errors
def cdc_cmd(mapping_path: str, as_json: bool, **opts: Any) -> None:
    """Apply source changes to MongoDB, from the checkpoint or the backfill's position.

    Checkpoints after every batch MongoDB acknowledged; kill it at any moment and run it
    again. Exit 1 if events went to the dead-letter collection or a DDL stopped it.

    \b
    Examples:
      migrator cdc -m shop.yaml                      # follow until Ctrl-C / SIGTERM
      migrator cdc -m shop.yaml --until-caught-up --json
      migrator cdc -m shop.yaml --source debezium --kafka-bootstrap kafka:9092 \\
                   --topic-prefix mig --group shop-cdc
    """
    summary = _run(load(mapping_path), as_json=as_json, **opts)
    if as_json:
        print_json(summary.to_dict())
    else:
        print_cdc(summary)
    raise SystemExit(1 if summary.dead_letters else 0)


@click.command("sync")
@mapping_option
@_with(cdc_options)
@click.option("--workers", type=click.IntRange(1, 64), help="Backfill workers.")
@metrics_port_option
@json_option
@handle_errors
def sync_cmd(
    mapping_path: str,
    workers: int | None,
    metrics_port: int | None,
    as_json: bool,
    **opts: Any,
) -> None:
    """Backfill (resuming if started), then CDC from the position the backfill recorded.

    \b
    Example:
      migrator sync -m shop.yaml --until-caught-up
    """
    mapping = load(mapping_path)
    metrics = process_metrics(mapping, "sync", metrics_port)
    rows = metrics.get("migrator_backfill_rows_total")
    if as_json:
        b = backfill(mapping, workers=workers, progress=CountingProgress(NullProgress(), rows))
    else:
        with render.RichProgress(err) as progress:
            b = backfill(mapping, workers=workers, progress=CountingProgress(progress, rows))
        print_summary(b)
    summary = _run(mapping, as_json=as_json, metrics=metrics, **opts)
    if as_json:
        print_json({"backfill": b.to_dict(), "cdc": summary.to_dict()})
    else:
        print_cdc(summary)
    raise SystemExit(1 if (summary.dead_letters or b.dead_letters) else 0)


__all__ = ["LiveStats", "cdc_cmd", "sync_cmd"]
