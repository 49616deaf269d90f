"""`migrator status`, `migrator cutover`, `migrator rollback`: the on-call engineer's commands."""

from __future__ import annotations

import sys
from typing import Any

import click

from migrator.cli import render
from migrator.cli.common import handle_errors, json_option, load, mapping_option, out, print_json
from migrator.cutover.machine import Machine, StepResult
from migrator.cutover.playbook import load_playbook
from migrator.errors import ConfigError

actor_option = click.option("--actor", help="Who is acting, for the audit (default user@host).")
playbook_option = click.option(
    "--playbook",
    "playbook_path",
    type=click.Path(dir_okay=False),
    help="Playbook file (default: the built-in standard gates).",
)


def _gates_table(res: StepResult | None, gates: list[dict[str, Any]]) -> Any:
    rows = [
        [
            "[green]pass[/]" if g["ok"] else "[bold red]FAIL[/]",
            g["name"],
            g["measured"],
            g["threshold"],
        ]
        for g in gates
    ]
    title = f"Gates for {res.from_phase} -> {res.to_phase}" if res else "Gates for the next step"
    return render.table(title, ["", "gate", "measured", "needs"], rows)


@click.command("status")
@mapping_option
@playbook_option
@click.option(
    "--watch",
    is_flag=True,
    help="A live view redrawn every second until Ctrl-C: gates, lag, rates, ETA, "
    "verification, dead letters, servers down, and the next command to type.",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.2, 60),
    default=1.0,
    show_default=True,
    help="Seconds between redraws with --watch.",
)
@json_option
@handle_errors
def status_cmd(
    mapping_path: str, playbook_path: str | None, watch: bool, interval: float, as_json: bool
) -> None:
    """Where the migration is: phase, CDC lag, backfill, last verification, DLQ, gates, audit.

    \b
    Examples:
      migrator status -m shop.yaml --json
      migrator status -m shop.yaml --watch      # live, for on-call; Ctrl-C leaves
    """
    if watch:
        if as_json:
            raise ConfigError("--watch draws a live view; --json prints once: pass one")
        from migrator.monitor.watch import watch as live

        live(
            load(mapping_path),
            load_playbook(playbook_path),
            mapping_path,
            out,
            interval=interval,
            playbook_path=playbook_path,
        )
        return
    m = Machine(load(mapping_path), load_playbook(playbook_path))
    try:
        st = m.status()
    finally:
        m.close()
    if as_json:
        print_json(st)
        return
    _print_status(st)


def _print_status(st: dict[str, Any]) -> None:
    """`status` for a person: one line per part, the next step's gates, the audit."""
    out.print(
        f"[bold]phase[/] {st['phase']}   (v{st['version']}, by {st['updated_by']} at "
        f"{st['updated_at']}{', reason: ' + st['reason'] if st['reason'] else ''})"
    )
    out.print(
        f"reads from {st['reads_from']}, writes to {', '.join(st['writes_to'] or [])}, "
        f"source of truth {st['source_of_truth']}"
        + ("  [bold red]WRITES FROZEN[/]" if st["freeze"] else "")
    )
    sw = st.get("switch")
    if sw and sw.get("running"):
        out.print(f"a {sw['kind']} to {sw['to']} is running: stage {sw['stage']}, {sw['holder']}")
    elif sw and sw.get("interrupted"):
        out.print(
            f"[yellow]a {sw['kind']} to {sw['to']} was interrupted at stage {sw['stage']}[/] "
            f"({sw['holder']}, started {sw['started_at']}); it left {sw['left']}"
        )
    cdc = st["cdc"]
    lag = "not running yet" if cdc["lag_seconds"] is None else f"{cdc['lag_seconds']:.1f} s"
    age = cdc["checkpoint_age_seconds"]
    out.print(f"CDC lag {lag}; checkpoint age {'-' if age is None else f'{age:.0f} s'}")
    rs = st["reverse_sync"]
    if rs["running"]:  # from the write switch on: MongoDB's changes back to MySQL
        rlag = "unknown" if rs["lag_seconds"] is None else f"{rs['lag_seconds']:.1f} s"
        out.print(
            f"reverse sync lag {rlag} (a rollback waits for 0); applied through "
            f"{rs['applied_through'] or '-'}"
        )
    for name, b in st["backfill"].items():
        out.print(f"backfill {name}: {b['status']} ({b['chunks_done']}/{b['chunks_total']} chunks)")
    v = st["verification"]
    out.print(
        "verification: never run"
        if v is None
        else f"verification: {'clean' if v['ok'] else 'DIFFERENCES'} ({v['mode']}), "
        f"{v['age_seconds'] / 60:.1f} min ago"
    )
    out.print(f"dead letters {st['dead_letters']}, pending children {st['pending']}")
    if st["next_phase"]:
        out.print(_gates_table(None, st["gates"]))
    rows = [
        [
            str(a.get("at")),
            a.get("actor"),
            a.get("kind"),
            a.get("outcome"),
            f"{a.get('from_phase')} -> {a.get('to_phase')}",
            a.get("reason") or "",
            "forced" if a.get("forced") else "",
        ]
        for a in st["audit"]
    ]
    out.print(
        render.table(
            "Audit (latest first)", ["at", "actor", "kind", "outcome", "step", "reason", ""], rows
        )
    )


def _confirm(yes: bool) -> Any:
    def ask(res: StepResult) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise ConfigError(
                "refusing to change the phase without --yes on a non-interactive terminal"
            )
        return click.confirm(f"Move {res.from_phase} -> {res.to_phase}?", default=False)

    return ask


@click.command("cutover")
@mapping_option
@click.option("--to", "to", help="The next phase (a jump over phases is refused).")
@click.option("--next", "next_", is_flag=True, help="Move to the next phase.")
@playbook_option
@click.option("--dry-run", is_flag=True, help="Evaluate the gates and say what would happen.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", help="Why (recorded in the audit; required with --force).")
@click.option("--force", is_flag=True, help="Skip failing gates (needs --reason; audited).")
@actor_option
@json_option
@handle_errors
def cutover_cmd(
    mapping_path: str,
    to: str | None,
    next_: bool,
    playbook_path: str | None,
    dry_run: bool,
    yes: bool,
    reason: str | None,
    force: bool,
    actor: str | None,
    as_json: bool,
) -> None:
    """Move the migration one phase forward, after its gates pass.

    Phases: planned, backfill, sync, dual_write, read_mongo, write_mongo, done. The step into
    write_mongo freezes writes, waits until every live SDK writer has acknowledged the freeze
    (the fence), lets CDC apply everything, re-verifies what changed since the last clean
    verification, then flips and unfreezes at once (the pause is measured); any failure
    unfreezes and stays in read_mongo. If this process dies, writers resume by themselves
    within the playbook's freeze_timeout_seconds (10 s) and `status` says what was left.

    \b
    Examples:
      migrator cutover -m shop.yaml --next --dry-run
      migrator cutover -m shop.yaml --to dual_write --reason "CHG-1234" --yes
    """
    if bool(to) == next_:
        raise ConfigError("give exactly one of --to PHASE or --next")
    m = Machine(load(mapping_path), load_playbook(playbook_path), actor=actor)
    try:
        res = m.step(to, reason=reason, force=force, dry_run=dry_run, confirm=_confirm(yes))
    finally:
        m.close()
    if as_json:
        print_json(res.to_dict())
        return
    out.print(_gates_table(res, [g.to_dict() for g in res.gates]))
    if dry_run:
        ok = all(g.ok for g in res.gates)
        out.print(
            f"dry run: {res.from_phase} -> {res.to_phase} would "
            f"{'go ahead' if ok else 'be refused'}; nothing changed"
        )
        raise SystemExit(0 if ok else 1)
    out.print(
        f"[green]{res.from_phase} -> {res.to_phase}[/] in {res.seconds:.2f} s"
        + (" [yellow](forced)[/]" if res.forced else "")
        + (f"; write pause {res.write_pause_ms:.0f} ms" if res.write_pause_ms else "")
    )


@click.command("rollback")
@mapping_option
@click.option("--to", "to", help="Any earlier phase (default: one step back).")
@click.option(
    "--playbook",
    "playbook_path",
    type=click.Path(dir_okay=False),
    help="Rollback playbook (hooks per phase rolled back to).",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--reason", help="Why (recorded in the audit; required with --force).")
@click.option(
    "--force",
    is_flag=True,
    help="Roll back to MySQL-first without waiting for reverse sync (audited; MySQL then "
    "misses MongoDB's unapplied changes).",
)
@actor_option
@json_option
@handle_errors
def rollback_cmd(
    mapping_path: str,
    to: str | None,
    playbook_path: str | None,
    yes: bool,
    reason: str | None,
    force: bool,
    actor: str | None,
    as_json: bool,
) -> None:
    """Step back: one phase by default, or to any earlier phase. No gates: it is the 3 a.m.
    command. A rollback that moves writes back to MySQL first (from write_mongo or done) is
    fenced like the write switch (freeze, every live writer acknowledges), waits until reverse
    sync has written every MongoDB change up to the freeze into MySQL (reverse lag 0; --force
    --reason skips that, audited), then flips and unfreezes at once; CDC then restarts at
    MySQL's position of that moment (what MySQL logged while MongoDB was the truth is reverse
    sync's copy of MongoDB's changes, not replayed).

    \b
    Example:
      migrator rollback -m shop.yaml --yes --reason "p99 latency"
    """
    mapping = load(mapping_path)
    rb = load_playbook(playbook_path) if playbook_path else None
    m = Machine(mapping, load_playbook(None), actor=actor)
    try:
        if not yes:
            cur = m.control.get()["phase"]
            if not sys.stdin.isatty():
                raise ConfigError(
                    "refusing to roll back without --yes on a non-interactive terminal"
                )
            if not click.confirm(f"Roll back from {cur} to {to or 'the previous phase'}?"):
                raise SystemExit(1)
        res = m.rollback(to, reason=reason, rollback_playbook=rb, force=force)
    finally:
        m.close()
    if as_json:
        print_json(res.to_dict())
    else:
        out.print(
            f"[green]rolled back {res.from_phase} -> {res.to_phase}[/] in {res.seconds:.2f} s"
        )
        if res.cdc_restart:
            p = res.cdc_restart
            out.print(
                f"CDC restarts at {p['file']}:{p['pos']}, where the rollback left MySQL "
                "(MySQL changes made directly while MongoDB was the truth are not carried: "
                "a full `migrator verify` finds them)"
            )
