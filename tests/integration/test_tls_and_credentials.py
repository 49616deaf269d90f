"""Production connections: TLS to MariaDB and MongoDB, passwords from files, least privilege,
a certificate for another host refused with a message naming the host.

A MariaDB of its own serves TLS with a certificate made at test time and refuses plain TCP
(require_secure_transport=ON, as managed MySQL services do); a SecantusDB of its own accepts
TLS only and requires SCRAM authentication. The migration runs through the real CLI with both
passwords in files, and afterwards no output, report or stored document holds either password.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pymysql
import pytest
from bson import json_util
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pymongo import MongoClient

from migrator.cdc.binlog import BinlogSource
from migrator.devtools import sandbox
from migrator.devtools.shop import create_shop, shop_mapping
from migrator.errors import ConnectError
from migrator.model.events import Position
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect
from migrator.source.position import current_position
from migrator.source.schema import introspect

from .certs import Certs, _ca, _leaf, _write_key, make_certs
from .conftest import migrator_cmd

# Characters a URL must escape, so the password files exercise the quoting too.
MYSQL_PASSWORD = "Sw0rd@fish/Secret:1%x"
MONGO_PASSWORD = "M0ngo@Pass/word:9?z"


@dataclass
class TLSStack:
    certs: Certs
    mysql_host: str
    mysql_port: int
    mongo_port: int
    tmp: Path
    admin: Any  # a TLS connection as the sandbox's all-privileged user

    def source_url(self, db: str, query: str, user: str = "app", password: str = "") -> str:
        auth = f"{user}:{password}@" if password else f"{user}@"
        return f"mysql://{auth}{self.mysql_host}:{self.mysql_port}/{db}{query}"

    def verified(self) -> str:
        c = self.certs
        return (
            f"?ssl-mode=VERIFY_IDENTITY&ssl-ca={c.ca}"
            f"&ssl-cert={c.client_cert}&ssl-key={c.client_key}"
        )

    def mongo_url(self, ca: Path | None = None, user: str = "admin") -> str:
        return (
            f"mongodb://{user}@127.0.0.1:{self.mongo_port}/?directConnection=true"
            f"&tls=true&tlsCAFile={ca or self.certs.ca}&authSource=admin"
        )


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TLSStack]:
    tmp = tmp_path_factory.mktemp("tls")
    certs = make_certs(tmp / "certs")
    url, mysql = sandbox.start_mysql(
        tmp / "mysql", tls={"ca": certs.ca, "cert": certs.server_cert, "key": certs.server_key}
    )
    procs = [mysql]
    try:
        mongo_url, _, mongo = sandbox.start_secantus(
            tmp / "mongo",
            tls={"pem": certs.server_pem, "ca": certs.ca},
            user=("admin", MONGO_PASSWORD),
        )
        procs.append(mongo)
        u = parse_mysql_url(url + f"?ssl-mode=VERIFY_IDENTITY&ssl-ca={certs.ca}")
        admin = connect(u, database=False)
        # the application's migration user, with exactly the README's least-privilege grants
        cur = admin.cursor()
        cur.execute("CREATE DATABASE shop CHARACTER SET utf8mb4")
        cur.execute("CREATE USER 'app'@'%%' IDENTIFIED BY %s", (MYSQL_PASSWORD,))
        cur.execute("GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'app'@'%'")
        cur.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON `shop`.* TO 'app'@'%'")
        cur.execute("CREATE USER 'reader'@'%%' IDENTIFIED BY %s", (MYSQL_PASSWORD,))
        cur.execute("GRANT SELECT ON `shop`.* TO 'reader'@'%'")
        create_shop(admin, "shop", customers=20, products=8, orders=150)
        mongo_port = int(mongo_url.split(":")[2].split("/")[0])
        yield TLSStack(certs, u.host, u.port, mongo_port, tmp, admin)
        admin.close()
    finally:
        for p in procs:
            p.stop()


def _secret_files(stack: TLSStack) -> dict[str, str]:
    (stack.tmp / "mysql-password").write_text(MYSQL_PASSWORD + "\n")
    (stack.tmp / "mongo-password").write_text(MONGO_PASSWORD + "\n")
    return {
        "MIGRATOR_SOURCE_PASSWORD_FILE": str(stack.tmp / "mysql-password"),
        "MIGRATOR_TARGET_PASSWORD_FILE": str(stack.tmp / "mongo-password"),
        "MIGRATOR_LOG_LEVEL": "DEBUG",
    }


def _write_mapping(stack: TLSStack, name: str, source_url: str, mongo_url: str) -> Path:
    path = stack.tmp / name
    path.write_text(shop_mapping(source_url, mongo_url, target_db="shop", state_db="_migrator_tls"))
    return path


def test_backfill_cdc_and_verify_run_over_tls_with_passwords_from_files(tls_stack):
    s = tls_stack
    env = _secret_files(s)
    mapping = _write_mapping(s, "tls.yaml", s.source_url("shop", s.verified()), s.mongo_url())
    # a throttle replica (the same server here) whose URL sets no TLS: it takes the source's
    replica = f"mysql://app:${{file:{s.tmp / 'mysql-password'}}}@{s.mysql_host}:{s.mysql_port}/"
    mapping.write_text(mapping.read_text() + f'throttle:\n  replicas: ["{replica}"]\n')
    outputs: list[str] = []

    def run(*args: str, check: int = 0) -> Any:
        p = migrator_cmd(*args, env=env, check=check)
        outputs.append(p.stdout + p.stderr)
        return p

    plan = json.loads(run("plan", "-m", str(mapping), "--json").stdout)
    assert plan["ok"], plan["blocking"]
    assert plan["connections"]["source"]["encrypted"] is True
    assert plan["connections"]["source"]["ssl_mode"] == "VERIFY_IDENTITY"
    assert plan["connections"]["target"]["encrypted"] is True
    assert plan["connections"]["throttle.replicas[0]"]["encrypted"] is True
    assert plan["privileges"] and all(p["ok"] for p in plan["privileges"].values()), plan

    run("backfill", "-m", str(mapping), "--json")
    # changes after the copy reach MongoDB through the binlog stream, over TLS too
    cur = s.admin.cursor()
    cur.execute("UPDATE shop.orders SET status = 'cancelled', total = 123.45 WHERE id <= 20")
    cur.execute("DELETE FROM shop.order_items WHERE order_id = 21")
    cur.execute("UPDATE shop.customers SET name = 'Renamed over TLS' WHERE id = 3")
    run("cdc", "-m", str(mapping), "--until-caught-up", "--json")
    junit = s.tmp / "verify.xml"
    report = s.tmp / "verify.md"
    v = json.loads(
        run(
            "verify", "-m", str(mapping), "--json", "--junit", str(junit), "--report", str(report)
        ).stdout
    )
    assert v["ok"] is True and v["differences"] == [], v
    with MongoClient(s.mongo_url(), password=MONGO_PASSWORD) as client:
        first = list(client.shop.orders.find({"_id": {"$lte": 20}}))
        assert len(first) == 20 and {d["status"] for d in first} == {"cancelled"}
        assert client.shop.orders.find_one({"_id": 21})["items"] == []
        # nothing the tool stored holds a password: state, audit, documents
        stored = "".join(
            json_util.dumps(list(client[db][c].find()))
            for db in ("_migrator_tls", "shop")
            for c in client[db].list_collection_names()
        )
    written = junit.read_text() + report.read_text()
    everything = "".join(outputs) + stored + written
    for secret in (MYSQL_PASSWORD, MONGO_PASSWORD):
        for form in (secret, secret.replace("@", "%40").replace("/", "%2F")):
            assert form not in everything


def test_a_plain_connection_is_refused_with_a_clear_message(tls_stack):
    s = tls_stack
    env = _secret_files(s)
    mapping = _write_mapping(s, "plain.yaml", s.source_url("shop", ""), s.mongo_url())
    p = migrator_cmd("plan", "-m", str(mapping), env=env, check=2)
    assert "(source.url): access denied, on a connection without TLS" in p.stderr
    assert "require_secure_transport" in p.stderr
    assert "ssl-mode=" in p.stderr  # says what to add
    assert MYSQL_PASSWORD not in p.stdout + p.stderr


def test_a_wrong_ca_fails_with_one_line_naming_the_setting(tls_stack):
    s = tls_stack
    env = _secret_files(s)
    wrong = f"?ssl-mode=VERIFY_CA&ssl-ca={s.certs.wrong_ca}"
    mapping = _write_mapping(s, "wrong-ca.yaml", s.source_url("shop", wrong), s.mongo_url())
    p = migrator_cmd("backfill", "-m", str(mapping), env=env, check=2)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "source.url" in lines[0] and f"ssl-ca={s.certs.wrong_ca}" in lines[0]

    # the same for MongoDB: the setting and the CA file, on one line
    mapping = _write_mapping(
        s, "wrong-mongo-ca.yaml", s.source_url("shop", s.verified()), s.mongo_url(s.certs.wrong_ca)
    )
    p = migrator_cmd("plan", "-m", str(mapping), env=env, check=2)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stderr
    assert "target.url" in lines[0] and f"tlsCAFile={s.certs.wrong_ca}" in lines[0]


def test_tls_options_in_the_mapping_source_block(tls_stack):
    """`source.tls` instead of URL parameters; the SDK's connections use it too."""
    from migrator.cutover.sdk import DualWriter
    from migrator.model.settings import load_mapping

    s = tls_stack
    c = s.certs
    (s.tmp / "mysql-password").write_text(MYSQL_PASSWORD)
    text = shop_mapping(
        s.source_url("shop", "", password="${file:%s}" % (s.tmp / "mysql-password")),
        s.mongo_url().replace("admin@", "admin:${file:%s}@" % (s.tmp / "mongo-password")),
        target_db="shop",
        state_db="_migrator_tls",
    ).replace(
        "source:\n",
        f"source:\n  tls: {{mode: VERIFY_IDENTITY, ca: {c.ca}, cert: {c.client_cert}, "
        f"key: {c.client_key}}}\n",
    )
    (s.tmp / "mongo-password").write_text(MONGO_PASSWORD)
    path = s.tmp / "block.yaml"
    path.write_text(text)
    mapping = load_mapping(path)
    assert mapping.source_url.tls.effective_mode == "VERIFY_IDENTITY"
    assert mapping.source_url.password == MYSQL_PASSWORD  # ${file:} read, %-escaped in the URL
    writer = DualWriter(mapping)
    try:
        cur = writer.sql.cursor()
        cur.execute("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
        assert cur.fetchone()[1]  # the SDK's MySQL connection is encrypted
    finally:
        writer.close()


def test_least_privilege_is_checked_per_phase(tls_stack):
    s = tls_stack
    (s.tmp / "reader-password").write_text(MYSQL_PASSWORD)
    env = {
        "MIGRATOR_SOURCE_PASSWORD_FILE": str(s.tmp / "reader-password"),
        "MIGRATOR_TARGET_PASSWORD_FILE": str(s.tmp / "mongo-password"),
    }
    (s.tmp / "mongo-password").write_text(MONGO_PASSWORD)
    mapping = _write_mapping(
        s, "reader.yaml", s.source_url("shop", s.verified(), user="reader"), s.mongo_url()
    )
    p = migrator_cmd("plan", "-m", str(mapping), "--json", env=env, check=1)
    report = json.loads(p.stdout)
    privileges = report["privileges"]
    assert privileges["verify"]["ok"] is True  # SELECT is all verify needs
    assert any("REPLICATION SLAVE" in m for m in privileges["cdc"]["missing"])
    assert any("REPLICATION CLIENT" in m for m in privileges["backfill"]["missing"])
    assert any(m.startswith("INSERT ON shop.*") for m in privileges["reverse sync"]["missing"])
    levels = {c["name"]: c["level"] for c in report["checks"]}
    assert levels["privileges cdc"] == "block"
    assert levels["privileges reverse sync"] == "warn"  # needed only from dual_write on


def test_init_writes_a_mapping_that_reads_passwords_from_files(tls_stack):
    s = tls_stack
    _secret_files(s)
    out = s.tmp / "init.yaml"
    p = migrator_cmd(
        "init",
        "--source",
        s.source_url("shop", s.verified()),
        "--source-password-file",
        str(s.tmp / "mysql-password"),
        "--target",
        s.mongo_url(),
        "--target-password-file",
        str(s.tmp / "mongo-password"),
        "-o",
        str(out),
        check=0,
    )
    text = out.read_text()
    assert f"${{file:{s.tmp / 'mysql-password'}}}" in text
    assert f"${{file:{s.tmp / 'mongo-password'}}}" in text
    assert MYSQL_PASSWORD not in text + p.stdout + p.stderr
    assert MONGO_PASSWORD not in text + p.stdout + p.stderr
    plan = migrator_cmd("plan", "-m", str(out), "--json", check=None)
    report = json.loads(plan.stdout)
    assert report["connections"]["source"]["encrypted"] is True, report


def test_the_binlog_stream_checks_the_certificate_too(tls_stack):
    """The binlog stream is PyMySQL, not mysqlclient: it gets the same TLS options. With a
    wrong CA it refuses the server; with the right one its socket is TLS."""
    s = tls_stack
    good = parse_mysql_url(s.source_url("shop", s.verified())).with_password(MYSQL_PASSWORD)
    conn = connect(good)
    schema = introspect(conn, "shop")
    start = Position(gtid=current_position(conn)["gtid"])
    conn.close()
    wrong = parse_mysql_url(
        s.source_url("shop", f"?ssl-mode=VERIFY_CA&ssl-ca={s.certs.wrong_ca}")
    ).with_password(MYSQL_PASSWORD)
    for url, ok in ((wrong, False), (good, True)):
        stream = BinlogSource(url, schema, {"orders"}, start)._open()
        try:
            if not ok:
                with pytest.raises(pymysql.err.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
                    stream._BinLogStreamReader__connect_to_stream()
                continue
            stream._BinLogStreamReader__connect_to_stream()
            sock = stream._stream_connection._sock
            assert isinstance(sock, ssl.SSLSocket)
            assert sock.context.verify_mode == ssl.CERT_REQUIRED and sock.context.check_hostname
        finally:
            stream.close()


def test_required_tls_against_a_server_without_tls_is_refused(env):
    """MariaDB's client library would go on in plain text: the tool checks the cipher."""
    env.sql("CREATE TABLE t (id INT PRIMARY KEY)")
    path = env.mapping("  - {name: t, from: t}\n")
    text = path.read_text()
    path.write_text(text.replace(f"/{env.db}", f"/{env.db}?ssl-mode=REQUIRED", 1))
    p = migrator_cmd("backfill", "-m", str(path), check=2)
    assert "does not offer TLS, and ssl-mode=REQUIRED requires it" in p.stderr
    assert "source.url" in p.stderr
    # PREFERRED falls back to plain text on such a server, as the mysql client does
    path.write_text(text.replace(f"/{env.db}", f"/{env.db}?ssl-mode=PREFERRED", 1))
    plan = json.loads(migrator_cmd("plan", "-m", str(path), "--json", check=0).stdout)
    assert plan["connections"]["source"]["encrypted"] is False
    levels = {c["name"]: c["level"] for c in plan["checks"]}
    assert levels["tls source"] == levels["tls target"] == "warn"  # plan warns when plain


# A password is a password, not URL text: '%41' must reach the server as '%41' (not 'A'),
# and nothing in it may end the user part, start the query, or be read as `${...}` again.
ODD_PASSWORD = "ab%41:/@cd #?+&=;${HOME}%zz'\"\\~"


@pytest.fixture(scope="module")
def auth_mongo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A SecantusDB of its own that requires SCRAM: user mig@corp, password ODD_PASSWORD."""
    url, _, proc = sandbox.start_secantus(
        tmp_path_factory.mktemp("auth-mongo"), user=("mig@corp", ODD_PASSWORD)
    )
    try:
        yield int(url.split(":")[2].split("/")[0])
    finally:
        proc.stop()


def test_a_password_from_a_file_or_a_variable_reaches_both_servers_unchanged(env, auth_mongo):
    env.sql(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))",
        "INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    )
    user = f"odd@{env.db[2:]}"  # user@server, as Azure spells its users
    url_user = quote(user, safe="")
    cur = env.admin.cursor()
    cur.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (ODD_PASSWORD,))
    cur.execute(f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%'")
    cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{env.db}`.* TO '{user}'@'%'")
    src = parse_mysql_url(env.url)
    hostport = f"{src.host}:{src.port}"
    mongo_hostport = f"127.0.0.1:{auth_mongo}"
    query = "?directConnection=true&authSource=admin"
    pw_file = env.tmp / "odd-password"
    pw_file.write_text(ODD_PASSWORD + "\n")
    outputs: list[str] = []

    def run(*args: str, extra: dict[str, str] | None = None, check: int = 0) -> Any:
        p = migrator_cmd(*args, env={"MIGRATOR_LOG_LEVEL": "DEBUG", **(extra or {})}, check=check)
        outputs.append(p.stdout + p.stderr)
        return p

    def plan_ok(mapping: Path, extra: dict[str, str] | None = None) -> dict[str, Any]:
        report = json.loads(run("plan", "-m", str(mapping), "--json", extra=extra).stdout)
        assert report["ok"], report["blocking"]
        return report

    try:
        # 1. what `init` writes with password files: ${file:...} in both URLs
        init_yaml = env.tmp / "init.yaml"
        run(
            "init",
            "--source",
            f"mysql://{url_user}@{hostport}/{env.db}",
            "--source-password-file",
            str(pw_file),
            "--target",
            f"mongodb://mig%40corp@{mongo_hostport}/{env.db}{query}",
            "--target-password-file",
            str(pw_file),
            "-o",
            str(init_yaml),
        )
        init_yaml.write_text(init_yaml.read_text().replace(f"_migrator_{env.db}", env.state_db))
        plan_ok(init_yaml)
        run("backfill", "-m", str(init_yaml), "--json")
        with MongoClient(
            f"mongodb://mig%40corp@{mongo_hostport}/{query}", password=ODD_PASSWORD
        ) as client:
            assert sorted(d["v"] for d in client[env.db].t.find()) == ["a", "b", "c"]

        def mapping(name: str, source_auth: str, target_auth: str, extra: str = "") -> Path:
            p = env.tmp / name
            p.write_text(
                "version: 1\n"
                f'source: {{url: "mysql://{source_auth}@{hostport}/{env.db}"}}\n'
                f'target: {{url: "mongodb://{target_auth}@{mongo_hostport}/{query}", '
                f"database: {env.db}}}\n"
                f"state: {{database: {env.state_db}}}\n"
                f"{extra}collections:\n  - {{name: t, from: t}}\n"
            )
            return p

        # 2. ${VAR} in the URLs' passwords, the variables holding the password itself
        plan_ok(
            mapping("vars.yaml", f"{url_user}:${{SRC_PW}}", "mig%40corp:${TGT_PW}"),
            {"SRC_PW": ODD_PASSWORD, "TGT_PW": ODD_PASSWORD},
        )
        # 3. what `init` writes without files, the variables read from $NAME_FILE
        plan_ok(
            mapping(
                "name-file.yaml",
                f"{url_user}:${{MIGRATOR_SOURCE_PASSWORD}}",
                "mig%40corp:${MIGRATOR_TARGET_PASSWORD}",
            ),
            {
                "MIGRATOR_SOURCE_PASSWORD_FILE": str(pw_file),
                "MIGRATOR_TARGET_PASSWORD_FILE": str(pw_file),
            },
        )
        # 4. URLs with a user and no password, the passwords from MIGRATOR_*_PASSWORD_FILE; a
        # throttle replica with its own ${file:...} password
        replica = f"mysql://{url_user}:${{file:{pw_file}}}@{hostport}/"
        report = plan_ok(
            mapping(
                "env-files.yaml", url_user, "mig%40corp", f'throttle: {{replicas: ["{replica}"]}}\n'
            ),
            {
                "MIGRATOR_SOURCE_PASSWORD_FILE": str(pw_file),
                "MIGRATOR_TARGET_PASSWORD_FILE": str(pw_file),
            },
        )
        assert "throttle.replicas[0]" in report["connections"]
    finally:
        cur.execute(f"DROP USER '{user}'@'%'")
        with MongoClient(
            f"mongodb://mig%40corp@{mongo_hostport}/{query}", password=ODD_PASSWORD
        ) as client:
            client.drop_database(env.db)
            client.drop_database(env.state_db)
    everything = "".join(outputs) + init_yaml.read_text()
    for form in (ODD_PASSWORD, quote(ODD_PASSWORD, safe=""), "ab%41:/@cd"):
        assert form not in everything


def _other_host_certs(d: Path) -> dict[str, Path]:
    """A CA and a server certificate it signed for db.example (the tests connect by IP)."""
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("other-host CA")
    leaf, key = _leaf("db.example", ca, ca_key, server=True, names=[x509.DNSName("db.example")])
    pem = serialization.Encoding.PEM
    out = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(pem))
    out["cert"].write_bytes(leaf.public_bytes(pem))
    _write_key(key, out["key"])
    return out


@pytest.fixture(scope="module")
def other_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    """A MariaDB of its own serving TLS with a certificate for another host (db.example)."""
    tmp = tmp_path_factory.mktemp("other-host")
    certs = _other_host_certs(tmp / "certs")
    url, proc = sandbox.start_mysql(tmp / "mysql", tls=certs)
    try:
        admin = connect(parse_mysql_url(url + "?ssl-mode=REQUIRED"), database=False)
        cur = admin.cursor()
        cur.execute("CREATE DATABASE shop")
        cur.execute("CREATE TABLE shop.t (id INT PRIMARY KEY)")
        admin.close()
        yield url, certs
    finally:
        proc.stop()


def test_verify_identity_refuses_a_certificate_for_another_host(other_host):
    """VERIFY_IDENTITY against a server whose certificate is signed by the right CA but names
    another host: mysqlclient and the binlog stream (PyMySQL) both refuse it, for the name
    (and without ssl-ca, for a CA the system does not trust); REQUIRED connects."""
    url, certs = other_host
    required = parse_mysql_url(url + "shop?ssl-mode=REQUIRED")
    conn = connect(required)
    schema = introspect(conn, "shop")
    start = Position(gtid=current_position(conn)["gtid"])
    conn.close()
    strict = parse_mysql_url(url + f"shop?ssl-mode=VERIFY_IDENTITY&ssl-ca={certs['ca']}")
    with pytest.raises(ConnectError, match=r"certificate of MySQL at .* does not match the host"):
        connect(strict)
    stream = BinlogSource(strict, schema, {"t"}, start)._open()
    try:
        with pytest.raises(pymysql.err.OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
            stream._BinLogStreamReader__connect_to_stream()
    finally:
        stream.close()
    # no ssl-ca: the system CAs, which do not hold this test CA
    with pytest.raises(ConnectError, match="certificate of MySQL at"):
        connect(parse_mysql_url(url + "shop?ssl-mode=VERIFY_IDENTITY"))


def test_a_host_name_mismatch_names_the_host_not_the_ca_file(other_host):
    """The CA is right; the certificate names db.example and the URL 127.0.0.1: the message
    says the host name does not match, and does not send the user to replace a correct CA
    file ("ssl-ca must be the CA that signed the server's certificate")."""
    url, certs = other_host
    strict = parse_mysql_url(url + f"shop?ssl-mode=VERIFY_IDENTITY&ssl-ca={certs['ca']}")
    with pytest.raises(ConnectError) as exc:
        connect(strict)
    message = str(exc.value)
    assert "ssl-ca must be the CA" not in message, message
    assert "db.example" in message or "host name" in message or "hostname" in message, message
