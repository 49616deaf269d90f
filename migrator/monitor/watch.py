"""`status --watch`: the live view, redrawn every second while a reader thread polls the state
(a server that hangs slows the reads, never the screen or Ctrl-C)."""

from __future__ import annotations

import logging

from rich.console import Console, RenderableType
from rich.live import Live

from migrator.cutover.playbook import Playbook
from migrator.logs import TextFormatter
from migrator.model.settings import Mapping
from migrator.monitor.snapshot import Poller, StatusReader
from migrator.monitor.view import screen


def watch(
    settings: Mapping,
    playbook: Playbook,
    mapping_path: str,
    console: Console,
    *,
    interval: float = 1.0,
    playbook_path: str | None = None,
) -> None:
    """Until Ctrl-C (which returns normally: the view only reads)."""
    poller = Poller(StatusReader(settings, playbook), interval).start()
    name = settings.migration_name

    def draw() -> RenderableType:
        return screen(poller.current(), name, mapping_path, playbook_path)

    quiet = _text_handlers()  # the screen says what they would (outages), over nothing
    for h in quiet:
        h.setLevel(logging.CRITICAL + 1)
    try:
        with Live(draw(), console=console, screen=True, auto_refresh=False) as live:
            while not poller.stop.wait(interval):
                live.update(draw(), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        poller.close()
        for h in quiet:
            h.setLevel(logging.NOTSET)


def _text_handlers() -> list[logging.Handler]:
    return [
        h for h in logging.getLogger("migrator").handlers if isinstance(h.formatter, TextFormatter)
    ]
