"""The sandbox's SecantusDB runs through the launcher that fixes its slowdown (sandbox_secantus)."""

from __future__ import annotations

from typing import Any


def test_the_sandbox_server_runs_through_the_launcher(tmp_path: Any) -> None:
    import sys
    from pathlib import Path

    from migrator.devtools import sandbox

    binary = sandbox.secantus_binary()
    assert binary is not None and Path(binary).parent == Path(sys.executable).parent
    url, _kind, proc = sandbox.start_secantus(tmp_path)
    try:
        assert "migrator.devtools.secantus" in proc.argv
        from pymongo import MongoClient

        with MongoClient[dict[str, Any]](url) as c:
            c.db.t.insert_one({"_id": 1})
            assert c.db.t.find_one({"_id": 1}) == {"_id": 1}
            # the profiler settings it remembers follow the `profile` command
            assert c.db.command("profile", -1)["was"] == 0
            c.db.command("profile", 2)
            assert c.db.command("profile", -1)["was"] == 2
            c.db.command("profile", 0)
            assert c.db.command("profile", -1)["was"] == 0
    finally:
        proc.stop()
