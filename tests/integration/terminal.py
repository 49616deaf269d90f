"""A command run in a real pseudo-terminal, its screen read as a user sees it (pyte emulates
the terminal: cursor moves, the alternate screen and redraws end as characters on a grid)."""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any

import pyte

from .conftest import REPO


class Terminal:
    def __init__(self, *args: str, columns: int = 160, lines: int = 70) -> None:
        self.screen = pyte.Screen(columns, lines)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm-256color"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "migrator.cli.main", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env=env,
            start_new_session=True,
            # the pty becomes its controlling terminal: Ctrl-C reaches it as SIGINT
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the other side closed
                return
            if not data:
                return
            with self.lock:
                self.raw += data
                self.stream.feed(data)

    def text(self) -> str:
        with self.lock:
            return "\n".join(line.rstrip() for line in self.screen.display)

    def wait_for(self, *texts: str, timeout: float = 60) -> str:
        """The screen once it shows every one of `texts`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            screen = self.text()
            if all(t in screen for t in texts):
                return screen
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{screen}"
            time.sleep(0.2)
        raise AssertionError(f"the screen never showed {texts}:\n{self.text()}")

    def ctrl_c(self, timeout: float = 15) -> int:
        """Ctrl-C as a terminal sends it (the interrupt character to the foreground group)."""
        os.write(self.master, b"\x03")
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        os.close(self.master)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
