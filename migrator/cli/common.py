"""What every command shares: consoles, error handling, JSON output, options."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, NoReturn, TypeVar

import click
from bson import json_util
from rich.console import Console
from rich.markup import escape

from migrator import logs
from migrator.errors import ConfigError, MigratorError, describe_server, server_kind
from migrator.metrics import ProcessMetrics
from migrator.model.settings import Mapping, load_mapping
from migrator.model.urls import redact
from migrator.state.store import StateStore

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("migrator.cli")

# Results go to stdout (pipe-able); progress, notes and errors to stderr.
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def handle_errors(fn: F) -> F:
    """MigratorError -> a red message on stderr and its exit code (2 usage/connection, 1 check).
    Every end is logged: `command finished` with the exit code, or `command failed` with the
    error, its hint, exit code and type (an unexpected error's traceback at debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        logs.bind(command=_command_path())
        t0 = time.monotonic()
        try:
            result = fn(*args, **kwargs)
        except SystemExit as exc:  # the command's own exit code (1: a check failed)
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            log.info("command finished", extra={"exit_code": code, "seconds": _since(t0)})
            raise
        except MigratorError as exc:  # a user's error: its message says it all, no traceback
            _fail(exc.message, exc.hint, exc.exit_code, exc, t0)
        except KeyboardInterrupt:
            log.warning(
                "interrupted", extra={"exit_code": 130, "seconds": _since(t0), **logs.ECHOED}
            )
            err.print("[yellow]interrupted[/]")
            sys.exit(130)
        except Exception as exc:  # a driver error in the middle of a run: one line, exit 2
            kind = server_kind(exc)
            log.debug("command failed: traceback", exc_info=True)
            if kind is None:
                _fail(
                    f"internal error: {type(exc).__name__}: {_first_line(exc)}",
                    "rerun with --log-level debug for the traceback, and report it",
                    2,
                    exc,
                    t0,
                )
            _fail(
                f"{describe_server(kind)}: {_first_line(exc)}",
                "the checkpoints are safe: rerun the command once the server is back",
                2,
                exc,
                t0,
            )
        log.info("command finished", extra={"exit_code": 0, "seconds": _since(t0)})
        return result

    return wrapper  # type: ignore[return-value]


def _command_path() -> str | None:
    """The command's path below the program, e.g. `cutover`, `state dump` (however the
    program was started)."""
    ctx, names = click.get_current_context(silent=True), []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names)) or None


def _since(t0: float) -> float:
    return round(time.monotonic() - t0, 3)


def _fail(message: str, hint: str | None, code: int, exc: BaseException, t0: float) -> NoReturn:
    # logged first (JSON logs get it; text logs leave it to the red message below)
    log.error(
        "command failed",
        extra={
            "error": message,
            "hint": hint,
            "exit_code": code,
            "error_type": type(exc).__name__,
            "seconds": _since(t0),
            **logs.ECHOED,
        },
    )
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
    """The mapping; from here on every log record carries the migration's identity."""
    mapping = load_mapping(mapping_path)
    logs.bind(**identity(mapping))
    return mapping


def identity(mapping: Mapping) -> dict[str, str | None]:
    """Which migration a log line is about: source -> target database, where the source is
    (host:port/db, never a password), the target and state databases."""
    try:
        name, source = mapping.migration_name, StateStore.identity_of(mapping)["source"]
    except MigratorError:  # the command itself says what is wrong with the URL
        return {"state_db": mapping.state.database}
    return {
        "migration": name,
        "source": source,
        "target": mapping.target_database,
        "state_db": mapping.state.database,
    }


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
        try:
            metrics.serve(port)  # first: a port in use stops the command before it starts
        except OSError as exc:
            raise ConfigError(
                f"--metrics-port {port}: cannot serve metrics there ({exc.strerror or exc})",
                hint="pick a free port (each process needs its own)",
            ) from None
        metrics.add_state(StateCollector(settings, load_playbook(None)))
        log.info("serving metrics", extra={"port": port})
    return metrics
