"""Review of issue 11: VERIFY_IDENTITY against a server whose certificate is signed by the right
CA but names another host (db.example, not 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from migrator.devtools import sandbox
from migrator.errors import ConnectError
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

from .certs import _ca, _leaf, _write_key


def _other_host_certs(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("review CA")
    leaf, key = _leaf("db.example", ca, ca_key, server=True, names=[x509.DNSName("db.example")])
    pem = serialization.Encoding.PEM
    out = {"ca": d / "ca.pem", "cert": d / "server.pem", "key": d / "server.key"}
    out["ca"].write_bytes(ca.public_bytes(pem))
    out["cert"].write_bytes(leaf.public_bytes(pem))
    _write_key(key, out["key"])
    return out


@pytest.fixture(scope="module")
def other_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Path]]]:
    tmp = tmp_path_factory.mktemp("review11")
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
    """Pinned: mysqlclient and the binlog stream (PyMySQL) both refuse; REQUIRED connects."""
    import pymysql

    from migrator.cdc.binlog import BinlogSource
    from migrator.model.events import Position
    from migrator.source.position import current_position
    from migrator.source.schema import introspect

    url, certs = other_host
    required = parse_mysql_url(url + "shop?ssl-mode=REQUIRED")
    conn = connect(required)
    schema = introspect(conn, "shop")
    start = Position(gtid=current_position(conn)["gtid"])
    conn.close()
    strict = parse_mysql_url(url + f"shop?ssl-mode=VERIFY_IDENTITY&ssl-ca={certs['ca']}")
    with pytest.raises(ConnectError):
        connect(strict)
    stream = BinlogSource(strict, schema, {"t"}, start)._open()
    try:
        with pytest.raises(pymysql.err.OperationalError):
            stream._BinLogStreamReader__connect_to_stream()
    finally:
        stream.close()
    # no ssl-ca: the system CAs, which do not hold this test CA
    with pytest.raises(ConnectError):
        connect(parse_mysql_url(url + "shop?ssl-mode=VERIFY_IDENTITY"))


def test_a_host_name_mismatch_is_not_blamed_on_ssl_ca(other_host):
    """The CA is right; the certificate names db.example and the URL 127.0.0.1. The message says
    "Validation of SSL server certificate failed; ssl-ca must be the CA that signed the server's
    certificate", which sends the user to replace a correct CA file. It should say the host
    name does not match (or at least not assert the CA is wrong)."""
    url, certs = other_host
    strict = parse_mysql_url(url + f"shop?ssl-mode=VERIFY_IDENTITY&ssl-ca={certs['ca']}")
    with pytest.raises(ConnectError) as exc:
        connect(strict)
    message = str(exc.value)
    assert "ssl-ca must be the CA" not in message, message
    assert "db.example" in message or "host name" in message or "hostname" in message, message
