"""`migrator stack up|down|status`: throwaway local servers that outlive the command."""

from __future__ import annotations

import os
from pathlib import Path

import click

from migrator.cli.common import err, handle_errors, out, print_json
from migrator.devtools.sandbox import Stack, restart_server, start_stack
from migrator.errors import CheckFailed, SandboxError


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

    On a stack dir whose servers died, start them again on their own data, ports and
    credentials (the same URLs); the Kafka broker comes back empty (it keeps data in memory).

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
        restarted = _restart_dead(existing, state, d)
        if as_json:
            print_json({**existing.urls(), "restarted": restarted})
        else:
            out.print(f"[green]up[/] (stack dir {d}); `migrator stack down` stops it")
            _print_urls(existing)
        return
    stack = start_stack(with_kafka=with_kafka, base_dir=str(d / "servers"))
    stack.save(state)
    if as_json:
        print_json(stack.urls())
    else:
        out.print(f"[green]up[/] (MongoDB: {stack.mongo_kind}); stop with `migrator stack down`")
        _print_urls(stack)


def _restart_dead(stack: Stack, state: Path, d: Path) -> list[str]:
    """Start each dead server again on its own data; stack.json then names what runs."""
    restarted: list[str] = []
    failed: list[str] = []
    for proc in [p for p in stack.procs if not p.alive()]:
        try:
            restart_server(stack, proc)
        except SandboxError as exc:
            proc.pid = 0  # not running: never signal whatever gets that PID next
            failed.append(exc.message)  # names the server
            continue
        finally:
            stack.save(state)
        new = next(p for p in stack.procs if p.name == proc.name)
        restarted.append(proc.name)
        if proc.name == "tansu":
            err.print(
                f"restarted tansu (pid {new.pid}) on the same port; note: the Kafka broker "
                "keeps its data in memory only: it is back empty (no topics, no offsets)"
            )
        else:
            err.print(f"restarted {proc.name} (pid {new.pid}) on its data, port and credentials")
    if failed:
        raise SandboxError(
            f"cannot restart the stack in {d}: " + "\n".join(failed),
            hint=f"to start fresh (deletes its data): `migrator stack down --dir {d}`, "
            f"then `migrator stack up --dir {d}`",
        )
    return restarted


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
    stack = Stack.load(state)
    stuck = stack.stop()  # deletes the data only once every process is gone
    if stuck:
        stack.save(state)
        names = ", ".join(f"{p.name} (pid {p.pid})" for p in stuck)
        raise SandboxError(
            f"{names} did not stop on SIGKILL; its data in {stack.base_dir} is kept",
            hint=f"run `migrator stack down --dir {state.parent}` again once it is gone",
        )
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
        dead = ", ".join(p["name"] for p in st["processes"] if not p["alive"])
        raise CheckFailed(
            f"not running: {dead}",
            hint=f"`migrator stack up --dir {state.parent}` starts it again on its data",
        ) from None
