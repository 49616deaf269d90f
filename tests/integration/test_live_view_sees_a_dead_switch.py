"""`status --watch` left running while a write switch's process dies: the view must not go on
saying "running: wait" (writes stay frozen for every writer that starts); like any command it
finds the switch dead, clears the freeze and says what was interrupted, with the retry."""

from __future__ import annotations

from .helpers import cli_process, to_read_mongo
from .terminal import Terminal


def test_the_live_view_notices_the_switch_it_showed_running_has_died(env, tmp_path):
    path, _ = to_read_mongo(env, tmp_path)
    short = tmp_path / "short-freeze.yaml"
    short.write_text("version: 1\ndefaults: {freeze_timeout_seconds: 2}\n")
    with Terminal("status", "-m", str(path), "--watch", "--interval", "0.5", columns=300) as term:
        term.wait_for("phase read_mongo")
        sw = cli_process(
            "cutover", "-m", str(path), "--to", "write_mongo", "--force", "--reason", "t",
            "--yes", "--json", "--playbook", str(short), pause="fence:60", pipe=True,
        )  # fmt: skip
        with sw as proc:
            term.wait_for("write switch to write_mongo running", "WRITES FROZEN")
            proc.kill9()
        # its process is gone (a pid on this host): any command now clears the freeze
        screen = term.wait_for("INTERRUPTED write switch", timeout=60)
        assert "WRITES FROZEN" not in screen
        assert term.ctrl_c() == 0
