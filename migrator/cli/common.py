"""What every command shares: consoles, error handling, JSON output, options."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import click
from bson import json_util
from rich.console import Console
from rich.markup import escape

from migrator.errors import MigratorError, describe_server, server_kind
from migrator.metrics import ProcessMetrics
from migrator.model.settings import Mapping, load_mapping
from migrator.model.urls import redact

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("migrator.cli")

# Results go to stdout (pipe-able); progress, notes and errors to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def handle_errors(fn: F) -> F:
    """MigratorError -> a red message on stderr and its exit code (2 usage/connection, 1 check)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MigratorError as exc:
            _fail(exc.message, exc.hint, exc.exit_code)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            sys.exit(130)
        except Exception as exc:  # a driver error in the middle of a run: one line, exit 2
            kind = server_kind(exc)
            log.debug("error", exc_info=True)
            if kind is None:
                _fail(
                    f"internal error: {type(exc).__name__}: {_first_line(exc)}",
                    "rerun with --log-level debug for the traceback, and report it",
                    2,
                )
            _fail(
                f"{describe_server(kind)}: {_first_line(exc)}",
                "the checkpoints are safe: rerun the command once the server is back",
                2,
            )

    return wrapper  # type: ignore[return-value]


def _fail(message: str, hint: str | None, code: int) -> NoReturn:
    # soft_wrap: a long path or URL stays on one line, as a user would copy it
    err.print(
        f"[bold red]error:[/] {escape(redact(message))}",
        markup=True,
        highlight=False,
        soft_wrap=True,
    )
    if hint:
        err.print(f"  [dim]hint:[/] {escape(redact(hint))}", soft_wrap=True)
    sys.exit(code)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _default(o: Any) -> Any:
    if isinstance(o, datetime | date):
        return o.isoformat()
    if isinstance(o, Decimal):
        return str(o)
    if isinstance(o, bytes):
        return o.hex()
    return json.loads(json_util.dumps(o))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_default))


def mapping_option(fn: F) -> F:
    return click.option(
        "-m",
        "--mapping",
        "mapping_path",
        required=True,
        type=click.Path(dir_okay=False),
        help="Mapping file (YAML).",
    )(fn)


def json_option(fn: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print a machine-readable JSON result on stdout."
    )(fn)


def load(mapping_path: str) -> Mapping:
    return load_mapping(mapping_path)


def metrics_port_option(fn: F) -> F:
    return click.option(
        "--metrics-port",
        type=click.IntRange(1, 65535),
        help="Serve Prometheus metrics on this port: this command's own counters and the "
        "migration's state (phase, gates, lag, dead letters...; docs/guide/monitoring.md).",
    )(fn)


def process_metrics(settings: Mapping, command: str, port: int | None) -> ProcessMetrics:
    """This command's metrics; served with the migration's state gauges when a port is given
    (the built-in playbook's gates)."""
    from migrator.cutover.playbook import load_playbook
    from migrator.monitor.exporter import StateCollector

    metrics = ProcessMetrics(settings.migration_name, command)
    if port:
        metrics.add_state(StateCollector(settings, load_playbook(None)))
        metrics.serve(port)
        log.info("serving metrics", extra={"port": port})
    return metrics
