"""The live view's screen: one snapshot drawn as sections, the next command at the bottom."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from migrator.monitor.advice import advise, verify_stopped
from migrator.monitor.snapshot import Snapshot, utcnow


def ago(t: datetime | None) -> str:
    if not isinstance(t, datetime):
        return "-"
    return f"{duration((utcnow() - t.replace(tzinfo=None)).total_seconds())} ago"


def duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f}s" if s >= 10 else f"{s:.1f}s"
    if s < 7200:
        return f"{s // 60:.0f}m{s % 60:02.0f}s"
    return f"{s // 3600:.0f}h{s % 3600 // 60:02.0f}m"


def screen(
    snap: Snapshot, migration: str, mapping_path: str, playbook: str | None = None
) -> RenderableType:
    parts: list[RenderableType] = [_header(snap, migration), *_servers(snap)]
    st = snap.status
    if st is None:
        parts.append(Text("no status read yet", style="yellow"))
    else:
        parts += [
            *_switch(st),
            _gates(st),
            _cdc(st),
            *_backfill(st),
            *_verification(st),
            _dead_letters(st),
            *_reverse(st),
            _next(st, snap, mapping_path, playbook),
            _audit(st),
        ]
    parts.append(Text("Ctrl-C to leave (nothing stops)", style="dim"))
    return Group(*parts)


def _header(snap: Snapshot, migration: str) -> Text:
    st = snap.status or {}
    t = Text.assemble(("migrator ", "bold"), (migration, "cyan"), "  ")
    if st:
        t.append_text(Text.assemble(("phase ", "bold"), (st["phase"], "bold magenta")))
        t.append(
            f"  v{st['version']} by {st.get('updated_by') or '-'} {ago(st.get('updated_at'))}"
            + (f" ({st['reason']})" if st.get("reason") else "")
        )
        if st.get("freeze"):
            t.append("  WRITES FROZEN", style="bold red")
    t.append(f"   read {ago(snap.read_at)}", style="dim")
    return t


def _servers(snap: Snapshot) -> list[Text]:
    if not snap.outages:
        return [Text("servers: MySQL and MongoDB answer", style="green")]
    return [
        Text(
            f"DOWN {o.name} since {o.since:%H:%M:%S} UTC ({ago(o.since)}): {o.error}",
            style="bold red",
        )
        for o in snap.outages.values()
    ]


def _switch(st: dict[str, Any]) -> list[Text]:
    sw = st.get("switch")
    if not sw:
        return []
    if sw.get("running"):
        return [Text(f"{sw.get('kind')} to {sw.get('to')} running: stage {sw.get('stage')}")]
    return [
        Text(
            f"INTERRUPTED {sw.get('kind')} to {sw.get('to')} at stage {sw.get('stage')} "
            f"(started {sw.get('started_at')}); it left {sw.get('left')}",
            style="bold yellow",
        )
    ]


def _gates(st: dict[str, Any]) -> RenderableType:
    if not st.get("next_phase"):
        return Text("last phase reached: nothing further to gate")
    t = Table(title=f"gates for {st['phase']} -> {st['next_phase']}", title_justify="left")
    for c in ("", "gate", "measured", "needs"):
        t.add_column(c)
    for g in st.get("gates", []):
        ok = Text("pass", style="green") if g["ok"] else Text("FAIL", style="bold red")
        t.add_row(ok, g["name"], str(g["measured"]), str(g["threshold"]))
    return t


def _cdc(st: dict[str, Any]) -> Text:
    c = st["cdc"]
    lag = c.get("lag_seconds")
    style = "green" if lag is not None and lag < 2 else "yellow" if lag is not None else "dim"
    t = Text.assemble(("CDC ", "bold"))
    t.append("running" if c.get("alive") else "not running", "green" if c.get("alive") else "red")
    t.append(f" ({c.get('source') or '-'})  lag ")
    t.append("unknown" if lag is None else f"{lag:.1f}s", style)
    eps = c.get("events_per_sec")
    t.append(f"  {eps:,.0f} events/s" if eps is not None else "  - events/s")
    t.append(f"  events {c.get('events') or 0:,}")
    t.append(f"  checkpoint {duration(c.get('checkpoint_age_seconds'))} old")
    if c.get("waiting_for"):
        t.append(f"  waiting for {c['waiting_for']}", "yellow")
    return t


def _backfill(st: dict[str, Any]) -> list[RenderableType]:
    if not st.get("backfill"):
        return [Text("backfill: not started", style="dim")]
    t = Table(title="backfill", title_justify="left")
    for c in ("collection", "status", "chunks", "rows", "rows/s", "eta"):
        t.add_column(c, justify="left" if c in ("collection", "status") else "right")
    for name, b in st["backfill"].items():
        t.add_row(
            name,
            str(b.get("status")),
            f"{b.get('chunks_done', 0)}/{b.get('chunks_total', 0)}",
            f"{b.get('rows_done', 0):,}",
            f"{b.get('rows_per_sec') or 0:,.0f}",
            duration(b.get("eta_seconds")),
        )
    return [t]


def _verification(st: dict[str, Any]) -> list[Text]:
    v, out = st.get("verification"), []
    if v is None:
        out.append(Text("verification: never run", style="yellow"))
    else:
        diffs = {
            k: n for k, n in (v.get("open_differences") or v.get("differences") or {}).items() if n
        }
        t = Text("verification: ")
        t.append("clean" if v["ok"] else "DIFFERENCES", "green" if v["ok"] else "bold red")
        t.append(f" ({v.get('mode')}, {duration(v.get('age_seconds'))} ago)")
        if diffs:
            t.append(
                "  open differences " + ", ".join(f"{k}: {n}" for k, n in diffs.items()), "red"
            )
        out.append(t)
    run = st.get("verify_in_progress")
    if run:
        what = "verify STOPPED" if verify_stopped(run) else "verify in progress"
        out.append(
            Text(
                f"{what}: {run['checked']:,} checked, "
                f"{run['collections_done']}/{run['collections']} collections, "
                f"last checkpoint {ago(run.get('updated_at'))}",
                style="yellow" if verify_stopped(run) else "cyan",
            )
        )
    return out


def _dead_letters(st: dict[str, Any]) -> Text:
    n = st.get("dead_letters", 0)
    t = Text.assemble(("dead letters ", "bold"), (str(n), "red" if n else "green"))
    newest = st.get("newest_dead_letter")
    if n and newest:
        t.append(
            f"  newest {ago(newest.get('at'))} ({newest.get('source')}, "
            f"{newest.get('collection')}): {str(newest.get('reason'))[:120]}"
        )
    t.append(f"   pending children {st.get('pending', 0)}")
    failed = st.get("sdk_failures", 0)
    if failed:
        t.append(f"   SDK writes to the second store failed: {failed}", "red")
    return t


def _reverse(st: dict[str, Any]) -> list[Text]:
    out = []
    rs = st.get("reverse_sync") or {}
    if rs.get("running"):
        lag = rs.get("lag_seconds")
        out.append(
            Text(
                f"reverse sync lag {'unknown' if lag is None else f'{lag:.1f}s'} "
                "(a rollback waits for 0)"
            )
        )
    pause = st.get("last_write_pause")
    if pause and pause.get("ms") is not None:
        out.append(
            Text(f"last write pause {pause['ms']:.0f} ms ({pause['step']}, {ago(pause['at'])})")
        )
    return out


def _next(
    st: dict[str, Any], snap: Snapshot, mapping_path: str, playbook: str | None
) -> RenderableType:
    advice = advise(st, mapping_path, [o.name for o in snap.outages.values()], playbook)
    style = {"repair": "yellow", "rollback": "magenta", "wait": "cyan", "next": "green"}
    lines = [Text("next", style="bold")]
    for a in advice:
        lines.append(Text(f"  {a.why}", style=style[a.kind]))
        if a.command:  # on a line of its own: copied whole
            lines.append(Text(f"    $ {a.command}", style="bold"))
    if not advice and st.get("phase") == "done":
        lines.append(Text("  nothing to do: the migration is done", style="green"))
    return Group(*lines)


def _audit(st: dict[str, Any]) -> RenderableType:
    t = Table(title="audit (latest first)", title_justify="left")
    for c in ("at", "actor", "kind", "outcome", "step", "reason"):
        t.add_column(c)
    for a in st.get("audit", [])[:5]:
        at = a.get("at")
        t.add_row(
            f"{at:%H:%M:%S}" if isinstance(at, datetime) else str(at),
            str(a.get("actor")),
            str(a.get("kind")),
            str(a.get("outcome")),
            f"{a.get('from_phase')} -> {a.get('to_phase')}",
            str(a.get("reason") or ""),
        )
    return t
