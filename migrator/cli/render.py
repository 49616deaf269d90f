"""Rich renderings: progress bars, summary tables, documents."""

from __future__ import annotations

from typing import Any

from bson import json_util
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text


class RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="cyan")


class RichProgress:
    """Per-collection bars: rows done / estimate, rows/s, elapsed, ETA."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bars = Progress(
            TextColumn("[bold]{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bars.stop()

    def start(self, collection: str, total_rows: int, done_rows: int = 0) -> None:
        self.tasks[collection] = self.bars.add_task(
            collection, total=max(total_rows, 1), completed=done_rows
        )

    def advance(self, collection: str, rows: int) -> None:
        task = self.tasks[collection]
        self.bars.advance(task, rows)
        t = self.bars.tasks[task]
        if t.total is not None and t.completed > t.total:
            self.bars.update(task, total=t.completed)

    def finish(self, collection: str, rows: int) -> None:
        task = self.tasks[collection]
        t = self.bars.tasks[task]
        self.bars.update(task, total=max(t.completed, 1), completed=t.completed)

    def note(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/]")


def document(doc: Any, title: str | None = None) -> Syntax:
    text = json_util.dumps(
        doc, indent=2, ensure_ascii=False, json_options=json_util.RELAXED_JSON_OPTIONS
    )
    return Syntax(text, "json", theme="ansi_dark", word_wrap=True)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(
            c,
            justify="right"
            if c.lower()
            in {"rows", "documents", "rows/s", "chunks", "dead letters", "mib", "skipped"}
            else "left",
        )
    for r in rows:
        t.add_row(*[str(v) for v in r])
    return t


class CdcView:
    """A live line for CDC: events/s, lag, queue depth, dead letters, position."""

    def __init__(self, console: Console) -> None:
        from rich.live import Live

        self.console = console
        self.live = Live(
            Text("starting CDC…"), console=console, refresh_per_second=4, transient=True
        )

    def __enter__(self) -> CdcView:
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()

    def update(self, s: Any) -> None:
        lag_style = "green" if s.lag_seconds < 2 else "yellow" if s.lag_seconds < 30 else "red"
        self.live.update(
            Text.assemble(
                ("CDC ", "bold"),
                f"{s.events:,} events  {s.events_per_sec:,.0f}/s  ",
                ("lag ", "bold"),
                (f"{s.lag_seconds:.1f}s", lag_style),
                f"  queue {s.queue_depth}  ",
                ("DLQ ", "bold"),
                (str(s.dead_letters), "red" if s.dead_letters else "green"),
                f"  pending {s.pending}  at {s.position}",
            )
        )
