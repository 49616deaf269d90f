"""`migrator stack up|down|status`: throwaway local servers that outlive the command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import MigratorError
from ..sandbox import Stack, start_stack
from .common import handle_errors, out, print_json


def _dir(d: str | None) -> Path:
    return Path(d or os.environ.get("MIGRATOR_STACK_DIR") or ".migrator-stack").resolve()


dir_option = click.option(
    "--dir",
    "stack_dir",
    type=click.Path(file_okay=False),
    help="Where the servers' data and stack.json live "
    "(default $MIGRATOR_STACK_DIR or ./.migrator-stack).",
)


@click.group("stack")
def stack_group() -> None:
    """Throwaway MySQL, MongoDB and Kafka servers for trying migrator out.

    \b
    Example:
      migrator stack up --json > urls.json
      migrator stack status
      migrator stack down
    """


@stack_group.command("up")
@dir_option
@click.option("--with-kafka", is_flag=True, help="Also start a Kafka-protocol broker (Tansu).")
@click.option("--json", "as_json", is_flag=True, help="Print the URLs as JSON.")
@handle_errors
def up(stack_dir: str | None, with_kafka: bool, as_json: bool) -> None:
    """Start the servers (on free ports, in temp dirs) and print their URLs.

    Example: migrator stack up --json
    """
    d = _dir(stack_dir)
    state = d / "stack.json"
    if state.exists():
        existing = Stack.load(state)
        if all(p.alive() for p in existing.procs):
            if as_json:
                print_json(existing.urls())
            else:
                out.print(f"already up (stack dir {d}); `migrator stack down` stops it")
                _print_urls(existing)
            return
        existing.stop()
        state.unlink()
    stack = start_stack(with_kafka=with_kafka, base_dir=str(d / "servers"))
    stack.save(state)
    if as_json:
        print_json(stack.urls())
    else:
        out.print(f"[green]up[/] (MongoDB: {stack.mongo_kind}); stop with `migrator stack down`")
        _print_urls(stack)


def _print_urls(stack: Stack) -> None:
    for k, v in stack.urls().items():
        if v:
            out.print(f"  {k:16} {v}")


@stack_group.command("down")
@dir_option
@handle_errors
def down(stack_dir: str | None) -> None:
    """Stop the servers by PID and delete their data.

    Example: migrator stack down
    """
    state = _dir(stack_dir) / "stack.json"
    if not state.exists():
        out.print("no stack is up here")
        return
    Stack.load(state).stop()
    state.unlink(missing_ok=True)
    out.print("[green]down[/]")


@stack_group.command("status")
@dir_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@handle_errors
def status(stack_dir: str | None, as_json: bool) -> None:
    """Show the servers, their URLs and whether each process is alive (exit 1 if one is down).

    Example: migrator stack status --json
    """
    state = _dir(stack_dir) / "stack.json"
    if not state.exists():
        if as_json:
            print_json({"up": False})
        else:
            out.print("no stack is up here")
        raise SystemExit(1)
    stack = Stack.load(state)
    st = stack.status()
    st["up"] = all(p["alive"] for p in st["processes"])
    if as_json:
        print_json(st)
    else:
        _print_urls(stack)
        for p in st["processes"]:
            out.print(
                f"  {p['name']:16} pid {p['pid']:<8} {'alive' if p['alive'] else '[red]dead[/]'}"
            )
    if not st["up"]:
        raise MigratorError("a server of the stack is not running") from None
