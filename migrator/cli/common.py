"""What every command shares: consoles, error handling, JSON output, options."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import click
from bson import json_util
from rich.console import Console

from ..config import Mapping, load_mapping
from ..errors import MigratorError
from ..urls import redact

F = TypeVar("F", bound=Callable[..., Any])

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
            err.print(f"[bold red]error:[/] {redact(exc.message)}", markup=True, highlight=False)
            if exc.hint:
                err.print(f"  [dim]hint:[/] {exc.hint}")
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


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
