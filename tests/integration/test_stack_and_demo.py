"""`migrator stack up|status|down` and `migrator demo`, run as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import MySQLdb
from pymongo import MongoClient

from migrator.model.urls import parse_mysql_url

from .conftest import migrator_cmd
from .helpers import wait_until


def _no_given_servers() -> dict[str, str]:
    # The stack command must start its own servers here, even when the suite was given URLs.
    return {
        k: ""
        for k in (
            "MIGRATOR_TEST_MYSQL_URL",
            "MIGRATOR_TEST_MONGO_URL",
            "MIGRATOR_STACK_MYSQL_URL",
            "MIGRATOR_STACK_MONGO_URL",
        )
    }


def _docker() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def test_stack_up_status_down(tmp_path):
    d = str(tmp_path / "stack")
    env = _no_given_servers()
    p = migrator_cmd("stack", "up", "--dir", d, "--json", env=env, check=0)
    urls = json.loads(p.stdout)
    try:
        assert set(urls) == {"mysql_url", "mongo_url", "kafka_bootstrap", "mongo_kind"}
        # no mongod and no Docker engine here: the sandbox's own server runs
        if not shutil.which("mongod") and not _docker():
            assert urls["mongo_kind"] == "secantusdb"
        u = parse_mysql_url(urls["mysql_url"])
        conn = MySQLdb.connect(host=u.host, port=u.port, user=u.user, passwd=u.password)
        cur = conn.cursor()
        cur.execute("SELECT @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        assert cur.fetchone() == ("ROW", "FULL", "FULL")
        conn.close()
        with MongoClient(urls["mongo_url"], serverSelectionTimeoutMS=5000) as c:
            assert c.admin.command("ping")["ok"] == 1
        # a second `up` reports the running stack instead of starting another
        again = json.loads(
            migrator_cmd("stack", "up", "--dir", d, "--json", env=env, check=0).stdout
        )
        assert again == urls
        st = json.loads(migrator_cmd("stack", "status", "--dir", d, "--json", check=0).stdout)
        assert st["up"] is True and len(st["processes"]) >= 2
        assert all(p["alive"] for p in st["processes"])
        pids = [p["pid"] for p in st["processes"]]
    finally:
        migrator_cmd("stack", "down", "--dir", d, check=0)
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        assert not alive, f"pid {pid} still running after stack down"
    st = migrator_cmd("stack", "status", "--dir", d, "--json", check=1)
    assert json.loads(st.stdout) == {"up": False}


def _stack_json(d: str) -> dict:
    return json.loads((Path(d) / "stack.json").read_text())


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed server nobody reaped yet is dead)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not _running(pid), f"pid {pid} to die of kill -9", timeout=10)


def _bind_when_free(sock: socket.socket, port: int) -> None:
    # a killed server's threads may hold its port for a moment after it became a zombie
    def bound() -> bool:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False

    wait_until(bound, f"port {port} to be free", timeout=10)


def test_stack_up_restarts_killed_servers_on_their_data_and_urls(tmp_path):
    d = str(tmp_path / "stack")
    env = _no_given_servers()
    urls = json.loads(
        migrator_cmd("stack", "up", "--dir", d, "--with-kafka", "--json", env=env, check=0).stdout
    )
    try:
        u = parse_mysql_url(urls["mysql_url"])
        conn = MySQLdb.connect(host=u.host, port=u.port, user=u.user, passwd=u.password)
        cur = conn.cursor()
        cur.execute("CREATE DATABASE keep")
        cur.execute("CREATE TABLE keep.t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO keep.t VALUES (42, 'kept')")
        conn.commit()
        conn.close()
        with MongoClient(urls["mongo_url"], serverSelectionTimeoutMS=5000) as c:
            c.keep.docs.insert_one({"_id": 7, "v": "kept"})
            c.admin.command("fsync")  # durable before the kill -9
        before = {p["name"]: p["pid"] for p in _stack_json(d)["procs"]}
        assert {"tansu"} < set(before) and len(before) == 3
        for pid in before.values():
            _kill9(pid)
        st = migrator_cmd("stack", "status", "--dir", d, "--json", check=1)
        assert json.loads(st.stdout)["up"] is False

        p = migrator_cmd("stack", "up", "--dir", d, "--json", env=env, check=0)
        again = json.loads(p.stdout)
        assert {k: again[k] for k in urls} == urls  # the same servers, ports and password
        assert sorted(again["restarted"]) == sorted(before)
        for name in before:
            assert f"restarted {name}" in p.stderr, p.stderr
        assert "Kafka broker keeps its data in memory" in p.stderr, p.stderr

        conn = MySQLdb.connect(host=u.host, port=u.port, user=u.user, passwd=u.password)
        cur = conn.cursor()
        cur.execute("SELECT v FROM keep.t WHERE id = 42")
        assert cur.fetchone() == ("kept",)
        conn.close()
        with MongoClient(urls["mongo_url"], serverSelectionTimeoutMS=5000) as c:
            assert c.keep.docs.find_one({"_id": 7}) == {"_id": 7, "v": "kept"}
        after = {p["name"]: p["pid"] for p in _stack_json(d)["procs"]}
        assert set(after) == set(before)
        for name, pid in after.items():
            assert pid != before[name] and _running(pid), name
        st = json.loads(migrator_cmd("stack", "status", "--dir", d, "--json", check=0).stdout)
        assert st["up"] is True
    finally:
        migrator_cmd("stack", "down", "--dir", d, check=0)
    for pid in after.values():
        assert not _running(pid), f"pid {pid} still running after stack down"


def test_stack_up_refuses_a_server_it_cannot_restart_and_down_stops_the_rest(tmp_path):
    d = str(tmp_path / "stack")
    env = _no_given_servers()
    urls = json.loads(migrator_cmd("stack", "up", "--dir", d, "--json", env=env, check=0).stdout)
    procs = _stack_json(d)["procs"]
    try:
        mysql = next(p for p in procs if p["name"] in ("mariadb", "mysql"))
        others = {p["pid"] for p in procs if p is not mysql}
        assert others, procs
        _kill9(mysql["pid"])
        port = parse_mysql_url(urls["mysql_url"]).port
        with socket.socket() as squatter:  # another program took the dead server's port
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            _bind_when_free(squatter, port)
            squatter.listen()
            p = migrator_cmd("stack", "up", "--dir", d, "--json", env=env, check=2)
        assert mysql["name"] in p.stderr.lower() and f"port {port}" in p.stderr, p.stderr
        assert f"migrator stack down --dir {d}" in p.stderr, p.stderr
        assert p.stdout == ""
        # stack.json names exactly what runs: the survivors, not the dead server
        state = _stack_json(d)
        assert {p["pid"] for p in state["procs"] if _running(p["pid"])} == others
        assert all(_running(pid) for pid in others)

        # its data gone: no fresh empty server behind the same URL
        shutil.rmtree(Path(mysql["log"]).parent / "data")
        p = migrator_cmd("stack", "up", "--dir", d, env=env, check=2)
        assert "data" in p.stderr and "gone" in p.stderr, p.stderr
        assert f"migrator stack down --dir {d}" in p.stderr, p.stderr
        assert all(_running(pid) for pid in others)
    finally:
        migrator_cmd("stack", "down", "--dir", d, check=0)
    for pid in others:
        assert not _running(pid), f"pid {pid} still running after stack down"
    assert not (Path(d) / "servers").exists()


def test_stack_never_signals_a_process_that_reused_a_dead_servers_pid(tmp_path):
    d = str(tmp_path / "stack")
    env = _no_given_servers()
    migrator_cmd("stack", "up", "--dir", d, "--json", env=env, check=0)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        state = _stack_json(d)
        mysql = next(p for p in state["procs"] if p["name"] in ("mariadb", "mysql"))
        _kill9(mysql["pid"])
        mysql["pid"] = sleeper.pid  # the PID now belongs to an unrelated program
        (Path(d) / "stack.json").write_text(json.dumps(state))
        st = json.loads(migrator_cmd("stack", "status", "--dir", d, "--json", check=1).stdout)
        assert [p["alive"] for p in st["processes"] if p["pid"] == sleeper.pid] == [False]

        p = migrator_cmd("stack", "up", "--dir", d, "--json", env=env, check=0)
        assert json.loads(p.stdout)["restarted"] == [mysql["name"]]
        assert sleeper.poll() is None
        state = _stack_json(d)
        pids = [p["pid"] for p in state["procs"]]
        assert len(pids) >= 2 and sleeper.pid not in pids and all(_running(pid) for pid in pids)

        # the same for `down`: a stale PID is skipped, the real servers are stopped
        mongo = next(p for p in state["procs"] if p["name"] not in ("mariadb", "mysql"))
        _kill9(mongo["pid"])
        mongo["pid"] = sleeper.pid
        (Path(d) / "stack.json").write_text(json.dumps(state))
        migrator_cmd("stack", "down", "--dir", d, check=0)
        assert sleeper.poll() is None
        assert not any(_running(pid) for pid in pids)
        assert not (Path(d) / "servers").exists()
    finally:
        migrator_cmd("stack", "down", "--dir", d, check=0)
        sleeper.kill()
        sleeper.wait()


def test_demo_walks_every_phase_with_a_live_application_and_ends_clean():
    p = migrator_cmd("demo", "--orders", "60", env=_no_given_servers(), check=0)
    out = p.stdout
    steps = re.findall(r"│ (\w+) -> (\w+)\s+│", out)
    assert steps == [
        ("planned", "backfill"),
        ("backfill", "sync"),
        ("sync", "dual_write"),
        ("dual_write", "read_mongo"),
        ("read_mongo", "write_mongo"),
        ("read_mongo", "write_mongo"),
        ("write_mongo", "done"),
    ]
    assert "rollback write_mongo -> read_mongo:" in out
    m = re.search(r"application writes through the SDK: ([\d,]+)", out)
    assert m and int(m.group(1).replace(",", "")) > 0
    assert "differences found by the final verification: 0 (clean)" in out
    assert re.search(r"write pause \(freeze set -> cleared\): [1-9]\d* ms", out)
    counts = re.findall(r"│ (orders|customers|products)\s+│\s+([\d,]+) │\s+([\d,]+) │", out)
    assert {c[0] for c in counts} == {"orders", "customers", "products"}
    assert all(rows == docs for _, rows, docs in counts), counts
    assert '"items": [' in out and "demo finished" in out
    # the catalog: nested and many-to-many, edited in MySQL while CDC ran (shared rows renamed,
    # rows moved to other parents, links added and removed), and still clean at the end
    assert '"categories": [' in out and '"department": {' in out and '"category_names": [' in out
    edits = dict(
        re.findall(
            r"(renamed|moved|linked|unlinked|relinked) (\d+)",
            out.split("catalog edits in MySQL while CDC ran:", 1)[1].splitlines()[0],
        )
    )
    assert all(int(edits[k]) > 0 for k in ("renamed", "moved", "linked", "unlinked")), edits
    assert re.search(r"MongoDB mongodb://\S+ \((secantusdb|mongod|testcontainers)\)", p.stderr)


def test_a_secantusdb_left_half_way_through_creating_a_table_restarts_with_its_data(tmp_path):
    """SecantusDB 0.7.0b3 creates document shards lazily; a kill -9 in the middle of one
    leaves a table WiredTiger will not open, and the server would not start again. The
    sandbox's restart drops that empty table; the data stays. A SecantusDB of the test's own
    runs here whatever MongoDB server the suite uses (a real mongod has no such quirk)."""
    import wiredtiger

    from migrator.devtools.sandbox import Stack, restart_mongo, start_secantus

    url, kind, server = start_secantus(tmp_path / "secantus", sync_on_commit=True)
    stack = Stack(mysql_url="", mongo_url=url, base_dir=str(tmp_path), mongo_kind=kind)
    stack.procs.append(server)
    try:
        assert stack.mongo_kind == "secantusdb"
        with MongoClient(stack.mongo_url) as c:
            c.keep.docs.insert_many([{"_id": i} for i in range(50)])
        proc = next(p for p in stack.procs if p.name == "secantusdb")
        proc.stop()
        home = proc.argv[proc.argv.index("--storage-path") + 1]
        conn = wiredtiger.wiredtiger_open(home, "log=(enabled=true)")
        session = conn.open_session()
        taken = {k for k, _v in session.open_cursor("metadata:", None, None)}
        free = next(f"table:secantus_documents_sh{i}" for i in range(16)
                    if f"table:secantus_documents_sh{i}" not in taken)  # fmt: skip
        # a table whose column group was never created, as a kill in the middle leaves it
        session.create(free, "key_format=SSq,value_format=u,columns=(a,b,c,v),colgroups=(g)")
        conn.close()
        restart_mongo(stack, kill=False)
        with MongoClient(stack.mongo_url) as c:
            assert c.keep.docs.count_documents({}) == 50
    finally:
        stack.stop()
