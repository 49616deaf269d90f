"""Bad inputs give clear errors (file:line key, host and setting) and exit 2; no secrets shown."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from migrator.backfill.copy import backfill
from migrator.devtools.sandbox import free_port
from migrator.model.settings import load_mapping
from migrator.model.urls import parse_mysql_url

from .conftest import migrator_cmd
from .helpers import cli_process, wait_until


def test_unknown_table_names_file_line_and_key(env):
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    path = env.mapping("  - name: t\n    from: t\n  - name: x\n    from: nosuch\n")
    p = migrator_cmd("backfill", "-m", str(path), check=2)
    assert f"{path}:9 collections[1].from: table 'nosuch' does not exist" in p.stderr
    assert "tables: t" in p.stderr


def test_unknown_column_names_file_line_and_key(env):
    env.sql("CREATE TABLE t (id INT PRIMARY KEY, a INT)")
    path = env.mapping("  - name: t\n    from: t\n    fields:\n      b: nope\n")
    p = migrator_cmd("backfill", "-m", str(path), check=2)
    assert f"{path}:9 collections[0].fields.b: table 't' has no column 'nope'" in p.stderr
    assert "columns: id, a" in p.stderr


def test_table_without_primary_key(env):
    env.sql("CREATE TABLE t (a INT)")
    path = env.mapping("  - name: t\n    from: t\n")
    p = migrator_cmd("backfill", "-m", str(path), check=2)
    assert "table 't' has no primary key" in p.stderr and "ADD PRIMARY KEY" in p.stderr
    p = migrator_cmd("plan", "-m", str(path), "--json", check=1)
    assert "table 't' has no primary key" in p.stdout


def test_unreachable_mysql_names_host_and_setting(env, tmp_path):
    port = free_port()
    path = tmp_path / "m.yaml"
    path.write_text(
        env.mapping("  - {name: t, from: t}\n")
        .read_text()
        .replace(env.url, f"mysql://u:topsecret@127.0.0.1:{port}/db")
    )
    p = migrator_cmd("plan", "-m", str(path), check=2)
    assert f"cannot reach MySQL at 127.0.0.1:{port} (source.url)" in p.stderr
    assert "topsecret" not in p.stderr + p.stdout


def test_wrong_password_says_access_denied_without_the_password(env, tmp_path):
    user_url = "mysql://migrator:WRONGpw@" + env.url.split("@", 1)[1]
    path = tmp_path / "m.yaml"
    path.write_text(env.mapping("  - {name: t, from: t}\n").read_text().replace(env.url, user_url))
    p = migrator_cmd("backfill", "-m", str(path), check=2)
    assert "refused user 'migrator' (source.url): access denied" in p.stderr
    assert "WRONGpw" not in p.stderr + p.stdout


def test_unreachable_mongo_names_host_and_setting(env, tmp_path):
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "m.yaml"
    path.write_text(
        env.mapping("  - {name: t, from: t}\n")
        .read_text()
        .replace(
            env.stack.mongo_url,
            f"mongodb://admin:hush@127.0.0.1:{port}/?serverSelectionTimeoutMS=500",
        )
    )
    p = migrator_cmd("backfill", "-m", str(path), check=2)
    assert f"cannot reach MongoDB at 127.0.0.1:{port} (target.url)" in p.stderr
    assert "hush" not in p.stderr + p.stdout


def test_invalid_mapping_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "version: 1\nsource: {url: mysql://h/db}\ntarget: {url: mongodb://m}\n"
        "collections:\n  - {name: a, from: b, embed: [{as: x, from: y}]}\n"
    )
    p = migrator_cmd("plan", "-m", str(path), check=2)
    assert f"{path}:5 collections[0].embed[0].on: is required but missing" in p.stderr


def test_missing_mapping_file(tmp_path):
    p = migrator_cmd("backfill", "-m", str(tmp_path / "nope.yaml"), check=2)
    assert "cannot read mapping file" in p.stderr


def test_usage_error_exits_2():
    p = migrator_cmd("backfill", "--workers", "0", "-m", "x.yaml", check=2)
    assert "--workers" in p.stderr


@pytest.mark.parametrize("server", ["mongodb", "mysql"])
def test_a_server_lost_mid_run_is_one_line_naming_it_exit_2(own_env, server):
    """A driver error in the middle of a run: one line naming the server and the setting,
    exit 2, no traceback, no password."""
    env = own_env
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))",
        "INSERT INTO t SELECT seq, 'x' FROM seq_1_to_1000",
    )
    path = env.mapping("  - {name: t, from: t}\n", backfill="{chunk_size: 50}")
    # a short server selection: the test waits for the driver to give up
    text = path.read_text().replace(
        "directConnection=true", "directConnection=true&serverSelectionTimeoutMS=300"
    )
    path.write_text(text)
    backfill(load_mapping(path), workers=1)
    with cli_process("verify", "-m", str(path), "--max-rows-per-sec", "200", pipe=True) as proc:
        # the server goes while verify is in the middle of the table
        wait_until(
            lambda: (
                (env.state.meta.find_one({"_id": "verify_progress"}) or {}).get("collections")
                or proc.poll() is not None
            ),
            "verify to start checking",
        )
        assert proc.poll() is None, proc.communicate()
        names = ("secantusdb", "mongod") if server == "mongodb" else ("mariadb", "mysql")
        victim = next(p for p in env.stack.procs if p.name in names)
        os.kill(victim.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, (out, err)
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, err
    setting = "target.url" if server == "mongodb" else "source.url"
    assert ("MongoDB at" if server == "mongodb" else "MySQL at") in lines[0]
    assert setting in lines[0], lines[0]
    password = parse_mysql_url(env.stack.mysql_url).password
    assert password not in err and password not in out


def test_a_metrics_port_in_use_is_one_line_naming_it_before_any_work(env):
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)", "INSERT INTO t VALUES (1)")
    path = env.mapping("  - {name: t, from: t}\n")
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        p = migrator_cmd("backfill", "-m", str(path), "--metrics-port", port, check=2)
    assert f"--metrics-port {port}" in p.stderr and "Traceback" not in p.stderr
    assert env.target.t.count_documents({}) == 0  # it stopped before it started
