"""TLS options (in the forms users write), password files (with the mappings `init` writes),
Kafka security and grants (as SHOW GRANTS prints them): the pure logic behind production
connections (the integration tests run them against real TLS servers)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from migrator.errors import ConfigError, ConnectError
from migrator.model.settings import KafkaSecuritySpec, parse_mapping
from migrator.model.tls import TLSOptions
from migrator.model.urls import parse_mysql_url, redact
from migrator.sink.mongo import connect
from migrator.source.privileges import check_phases, parse_grants


@pytest.mark.parametrize(
    ("query", "mode"),
    [
        ("?ssl-mode=REQUIRED", "REQUIRED"),
        ("?ssl_mode=verify_identity&ssl-ca=/ca.pem", "VERIFY_IDENTITY"),
        ("?sslMode=verify-ca&sslca=/ca.pem", "VERIFY_CA"),
        ("?ssl-ca=/ca.pem", "VERIFY_CA"),  # a CA alone means: check it (mysql client rule)
        ("?ssl=1", "REQUIRED"),
        ("?tls=skip-verify", "REQUIRED"),
        ("?tls=true", "VERIFY_IDENTITY"),  # Go's driver: verify
        ("?requireSSL=true", "REQUIRED"),  # JDBC
        ("?useSSL=false", "DISABLED"),
        ("?charset=utf8mb4", None),
    ],
)
def test_url_tls_options_in_the_forms_users_write(query, mode):
    u = parse_mysql_url(f"mysql://u:pw@h:3306/db{query}")
    assert u.tls.effective_mode == mode
    assert "ssl" not in " ".join(u.params).lower()  # TLS options are not left as unknowns


def test_a_misspelt_tls_option_or_mode_is_an_error_naming_the_setting():
    with pytest.raises(ConfigError, match=r"source.url: unknown TLS parameter 'ssl-cafile'"):
        parse_mysql_url("mysql://u@h/db?ssl-cafile=/x")
    with pytest.raises(ConfigError, match=r"source.url ssl-mode: 'VERIFY' is not a TLS mode"):
        parse_mysql_url("mysql://u@h/db?ssl-mode=VERIFY")


def test_driver_settings_for_each_mode(tmp_path: Path):
    assert TLSOptions().mysqlclient_kwargs() == {}
    assert TLSOptions().pymysql_kwargs() == {}  # PyMySQL prefers TLS by itself
    assert TLSOptions(mode="DISABLED").pymysql_kwargs() == {"ssl_disabled": True}
    req = TLSOptions(mode="REQUIRED")
    assert req.mysqlclient_kwargs() == {"ssl_mode": "REQUIRED"}
    ctx = req.pymysql_kwargs()["ssl"]
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    ca = Path(ssl.get_default_verify_paths().openssl_cafile or "")
    if not ca.is_file():  # any PEM CA will do; make one from the system store
        ca = tmp_path / "ca.pem"
        ca.write_text(ssl.DER_cert_to_PEM_cert(ssl.create_default_context().get_ca_certs(True)[0]))
    ident = TLSOptions(mode="VERIFY_IDENTITY", ca=str(ca))
    assert ident.mysqlclient_kwargs() == {"ssl_mode": "VERIFY_IDENTITY", "ssl": {"ca": str(ca)}}
    ctx = ident.pymysql_kwargs()["ssl"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    ctx = TLSOptions(mode="VERIFY_CA", ca=str(ca)).ssl_context()
    assert ctx.verify_mode == ssl.CERT_REQUIRED and not ctx.check_hostname


def test_the_url_wins_over_the_mapping_block_and_the_block_fills_the_rest():
    u = parse_mysql_url("mysql://u@h/db?ssl-mode=REQUIRED")
    merged = u.with_tls(TLSOptions(mode="VERIFY_IDENTITY", ca="/ca.pem"))
    assert (merged.tls.mode, merged.tls.ca) == ("REQUIRED", "/ca.pem")


def _mapping(url: str, target: str = "mongodb://m:27017") -> str:
    return (
        f"version: 1\nsource: {{url: '{url}'}}\ntarget: {{url: '{target}'}}\n"
        "collections:\n  - {name: c, from: t}\n"
    )


def test_file_secrets_are_read_escaped_in_urls_and_never_shown(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("p@ss/w:rd-Unit-7\n")
    m = parse_mapping(_mapping(f"mysql://app:${{file:{secret}}}@db:3306/shop"), "m.yaml")
    assert m.source_url.password == "p@ss/w:rd-Unit-7"  # newline dropped, URL still parses
    assert m.source_url.host == "db"
    assert "p@ss/w:rd-Unit-7" not in redact("login p@ss/w:rd-Unit-7 failed")

    # ${NAME} reads $NAME_FILE when NAME is unset (the official images' convention)
    monkeypatch.delenv("MIGRATOR_SOURCE_PASSWORD", raising=False)
    monkeypatch.setenv("MIGRATOR_SOURCE_PASSWORD_FILE", str(secret))
    m = parse_mapping(_mapping("mysql://app:${MIGRATOR_SOURCE_PASSWORD}@db/shop"), "m.yaml")
    assert m.source_url.password == "p@ss/w:rd-Unit-7"  # what `init` writes works with _FILE
    m = parse_mapping(_mapping("mysql://app:other-literal@db/shop"), "m.yaml")
    with pytest.raises(ConfigError, match="has a password and MIGRATOR_SOURCE_PASSWORD_FILE"):
        _ = m.source_url  # two different passwords are refused, not guessed
    m = parse_mapping(_mapping("mysql://app@db/shop"), "m.yaml")
    assert m.source_url.password == "p@ss/w:rd-Unit-7"


# Every character a URL treats specially, a %-escape that must not be decoded, and a `${`.
ODD = "ab%41:/@cd #?+&=;${HOME}%zz'\"\\~"


def test_only_a_password_part_is_escaped_and_it_arrives_as_written(monkeypatch):
    monkeypatch.setenv("CREDS_X", "app:pw")  # a whole user:password in one variable: URL text
    monkeypatch.setenv("PW_X", "pre%40encoded/and@raw")  # a password, '%40' and all
    m = parse_mapping(_mapping("mysql://${CREDS_X}@db/shop"), "m.yaml")
    assert (m.source_url.user, m.source_url.password) == ("app", "pw")
    m = parse_mapping(_mapping("mysql://app:${PW_X}@db/shop"), "m.yaml")
    assert m.source_url.password == "pre%40encoded/and@raw"


def test_a_password_from_a_file_or_a_variable_reaches_both_drivers_unchanged(tmp_path, monkeypatch):
    from pymongo.uri_parser import parse_uri

    secret = tmp_path / "pw"
    secret.write_text(ODD + "\n")
    monkeypatch.setenv("ODD_PW", ODD)
    for ref in (f"${{file:{secret}}}", "${ODD_PW}", "${UNSET_PW_X:-plain%41}"):
        m = parse_mapping(
            _mapping(f"mysql://app:{ref}@db/shop", f"mongodb://app:{ref}@m:27017/?authSource=a"),
            "m.yaml",
        )
        want = "plain%41" if ref.startswith("${UNSET") else ODD
        assert (m.source_url.password, m.source_url.host) == (want, "db")
        uri = parse_uri(m.target.url)  # what pymongo reads from the target URL
        assert (uri["password"], uri["nodelist"]) == (want, [("m", 27017)])
        assert ODD not in redact(f"login {ODD} failed for {m.target.url}")


def test_a_password_from_a_file_arrives_unchanged_when_the_user_is_from_a_file_too(tmp_path):
    """Kubernetes secrets often hold the user and the password: `${file:...}` for both."""
    from pymongo.uri_parser import parse_uri

    user, secret = tmp_path / "user", tmp_path / "pw"
    user.write_text("app\n")
    secret.write_text(ODD + "\n")
    ref = f"${{file:{user}}}:${{file:{secret}}}"
    m = parse_mapping(
        _mapping(f"mysql://{ref}@db/shop", f"mongodb://{ref}@m:27017/?authSource=a"), "m.yaml"
    )
    assert (m.source_url.user, m.source_url.password, m.source_url.host) == ("app", ODD, "db")
    uri = parse_uri(m.target.url)
    assert (uri["username"], uri["password"]) == ("app", ODD)


def test_a_kafka_password_from_a_file_is_given_as_is(tmp_path):
    secret = tmp_path / "kafka"
    secret.write_text(ODD + "\n")
    text = _mapping("mysql://app@db/shop") + (
        "debezium:\n  security: {protocol: SASL_SSL, sasl_mechanism: PLAIN, sasl_username: u,\n"
        f'             sasl_password: "${{file:{secret}}}"}}\n'
    )
    m = parse_mapping(text, "m.yaml")
    assert m.debezium.security.kafka_python()["sasl_plain_password"] == ODD


def test_a_missing_or_empty_secret_file_names_the_mapping_line(tmp_path):
    with pytest.raises(ConfigError, match=r"m.yaml:2 source.url: cannot read the secret file"):
        parse_mapping(_mapping("mysql://app:${file:/nonexistent/pw}@db/shop"), "m.yaml")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        parse_mapping(_mapping(f"mysql://app:${{file:{empty}}}@db/shop"), "m.yaml")


def test_source_tls_block_is_validated_with_the_line():
    text = _mapping("mysql://app@db/shop").replace(
        "source: {url: 'mysql://app@db/shop'}",
        "source:\n  url: mysql://app@db/shop\n  tls: {mode: VERIFY}",
    )
    with pytest.raises(ConfigError, match=r"m.yaml:4 source.tls.mode: 'VERIFY' is not a TLS"):
        parse_mapping(text, "m.yaml")


def test_kafka_security_settings():
    spec = KafkaSecuritySpec(
        protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="cdc",
        sasl_password="kafka-secret-1",
        ssl_cafile="/ca.pem",
    )
    assert spec.kafka_python() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "cdc",
        "sasl_plain_password": "kafka-secret-1",
        "ssl_check_hostname": True,
        "ssl_cafile": "/ca.pem",
    }
    assert "kafka-secret-1" not in redact("auth failed for kafka-secret-1")
    with pytest.raises(ValueError, match="needs sasl_mechanism, sasl_username, sasl_password"):
        KafkaSecuritySpec(protocol="SASL_PLAINTEXT")
    assert KafkaSecuritySpec().kafka_python() == {"security_protocol": "PLAINTEXT"}


MARIADB_GRANTS = [
    "GRANT BINLOG MONITOR, REPLICATION SLAVE ON *.* TO `app`@`%` IDENTIFIED BY PASSWORD '*AB12'",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON `shop`.* TO `app`@`%`",
]


def test_grants_cover_each_phase():
    phases = {p.phase: p for p in check_phases(parse_grants(MARIADB_GRANTS), "shop", ["orders"])}
    assert all(p.ok for p in phases.values()), phases


def test_missing_grants_are_named_per_phase_and_table():
    grants = parse_grants(
        [
            "GRANT USAGE ON *.* TO 'r'@'%'",
            "GRANT SELECT ON `shop`.`orders` TO 'r'@'%'",
            "GRANT SELECT (`id`, `name`) ON `shop`.`customers` TO 'r'@'%'",  # columns only
            "GRANT `analyst` TO 'r'@'%'",
        ]
    )
    assert grants.roles == ["`analyst`"]
    phases = {p.phase: p for p in check_phases(grants, "shop", ["customers", "orders"])}
    assert phases["verify"].missing == ["SELECT ON shop.customers (compare rows with documents)"]
    assert any(m.startswith("REPLICATION SLAVE ON *.*") for m in phases["cdc"].missing)
    assert any(m.startswith("INSERT ON shop.* ") for m in phases["sdk writes"].missing)


def test_all_privileges_wildcard_databases_and_old_names():
    everything = parse_grants(["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost`"])
    assert all(p.ok for p in check_phases(everything, "shop", ["t"]))
    pattern = parse_grants(
        [
            "GRANT REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO u",  # MySQL names
            "GRANT ALL ON `sho\\_%`.* TO u",
        ]
    )
    assert all(p.ok for p in check_phases(pattern, "sho_p", ["t"]))
    assert not all(p.ok for p in check_phases(pattern, "shop", ["t"]))  # `\\_` is literal
    # a database-level grant never stands in for a global one
    db_only = parse_grants(["GRANT ALL ON `shop`.* TO u"])
    cdc = next(p for p in check_phases(db_only, "shop", ["t"]) if p.phase == "cdc")
    assert any("REPLICATION SLAVE" in m for m in cdc.missing)


def test_missing_tls_files_and_half_a_client_certificate_are_named(tmp_path):
    from migrator.errors import ConnectError

    with pytest.raises(ConnectError, match=r"source.url ssl-ca: no such file /nope/ca.pem"):
        TLSOptions(mode="VERIFY_CA", ca="/nope/ca.pem").check_files("source.url")
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConnectError, match="ssl-cert and ssl-key go together"):
        TLSOptions(cert=str(cert)).check_files("source.url")


def test_kafka_flags_with_missing_pieces_or_files_are_config_errors(tmp_path):
    from migrator.cdc.kafka import security_settings as kafka_security_settings

    m = parse_mapping(_mapping("mysql://app@db/shop"), "m.yaml")
    with pytest.raises(ConfigError, match="needs sasl_mechanism, sasl_username, sasl_password"):
        kafka_security_settings(m, {"protocol": "SASL_SSL"})
    with pytest.raises(ConfigError, match="--kafka-sasl-password-file: cannot read the secret"):
        kafka_security_settings(m, {"sasl_password_file": str(tmp_path / "none")})
    pw = tmp_path / "kpw"
    pw.write_text("kafka-flag-secret\n")
    got = kafka_security_settings(
        m,
        {
            "protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-256",
            "sasl_username": "cdc",
            "sasl_password_file": str(pw),
            "ssl_cafile": None,  # a flag not given leaves the mapping's value
        },
    )
    assert got["sasl_plain_password"] == "kafka-flag-secret"
    assert "kafka-flag-secret" not in redact("x kafka-flag-secret y")


def test_a_target_password_in_the_url_and_in_a_file_is_refused(tmp_path, monkeypatch):
    from migrator.sink.mongo import connect

    pw = tmp_path / "mongo-pw"
    pw.write_text("from-the-file-9\n")
    monkeypatch.setenv("MIGRATOR_TARGET_PASSWORD_FILE", str(pw))
    with pytest.raises(ConfigError, match=r"target\.url has a password and MIGRATOR_TARGET_PASS"):
        connect("mongodb://app:other-pass@127.0.0.1:1/", timeout_ms=100)
    with pytest.raises(Exception, match="names no user"):
        connect("mongodb://127.0.0.1:1/", timeout_ms=100)


# -- the mappings `migrator init` writes, with password files; grants as SHOW GRANTS prints them

# What `migrator init` writes (scaffold._secretless): the passwords as ${MIGRATOR_*_PASSWORD}.
SCAFFOLDED = """\
version: 1
source:
  url: mysql://app:${MIGRATOR_SOURCE_PASSWORD}@127.0.0.1:3306/shop
target:
  url: mongodb://app:${MIGRATOR_TARGET_PASSWORD}@127.0.0.1:1/shop?serverSelectionTimeoutMS=300
collections:
  - {name: t, from: t}
"""


def _phase(text: list[str], phase: str, db: str = "shop", tables: tuple[str, ...] = ("t",)):
    return {p.phase: p for p in check_phases(parse_grants(text), db, list(tables))}[phase]


def test_init_mapping_with_MIGRATOR_SOURCE_PASSWORD_FILE_gives_the_password(tmp_path, monkeypatch):
    """README: "`${NAME}` reads the file `$NAME_FILE` names when NAME is unset, so the mappings
    init writes (${MIGRATOR_SOURCE_PASSWORD}) work with either": with
    MIGRATOR_SOURCE_PASSWORD_FILE set, ${MIGRATOR_SOURCE_PASSWORD} is read from that file and
    is the source's password (the URL's password and the file are the same one, not two)."""
    pw = tmp_path / "src-pw"
    pw.write_text("S3cret@src/1\n")
    monkeypatch.delenv("MIGRATOR_SOURCE_PASSWORD", raising=False)
    monkeypatch.delenv("MIGRATOR_TARGET_PASSWORD", raising=False)
    monkeypatch.setenv("MIGRATOR_SOURCE_PASSWORD_FILE", str(pw))
    monkeypatch.setenv("MIGRATOR_TARGET_PASSWORD", "unused-target-pw")
    mapping = parse_mapping(SCAFFOLDED, "m.yaml")
    assert mapping.source_url.password == "S3cret@src/1"


def test_init_mapping_with_MIGRATOR_TARGET_PASSWORD_FILE_connects(tmp_path, monkeypatch):
    """Same for the target: ${MIGRATOR_TARGET_PASSWORD} comes from MIGRATOR_TARGET_PASSWORD_FILE,
    and connecting does not refuse the URL for it ("give the password once"): the only
    failure is "cannot reach" (nothing listens on port 1)."""
    pw = tmp_path / "tgt-pw"
    pw.write_text("M0ngo@tgt/2\n")
    monkeypatch.delenv("MIGRATOR_TARGET_PASSWORD", raising=False)
    monkeypatch.delenv("MIGRATOR_SOURCE_PASSWORD_FILE", raising=False)
    monkeypatch.setenv("MIGRATOR_SOURCE_PASSWORD", "unused-source-pw")
    monkeypatch.setenv("MIGRATOR_TARGET_PASSWORD_FILE", str(pw))
    mapping = parse_mapping(SCAFFOLDED, "m.yaml")
    with pytest.raises(ConnectError) as exc:
        connect(mapping.target.url, timeout_ms=300)
    assert "give the password once" not in str(exc.value)
    assert "cannot reach" in str(exc.value)


@pytest.mark.parametrize(
    "secret", ["p@ss/w:rd?#x", "100%sure", "with space", "ünïcødé€", "a&b=c;d", "tab\there"]
)
def test_file_password_in_userinfo_round_trips(tmp_path: Path, secret: str):
    """${file:} in a URL's user-info survives every URL-special character."""
    f = tmp_path / "pw"
    f.write_text(secret + "\r\n")
    text = SCAFFOLDED.replace("${MIGRATOR_SOURCE_PASSWORD}", f"${{file:{f}}}").replace(
        "${MIGRATOR_TARGET_PASSWORD}", "x"
    )
    mapping = parse_mapping(text, "m.yaml")
    u = mapping.source_url
    assert (u.password, u.user, u.host, u.port, u.database) == (
        secret,
        "app",
        "127.0.0.1",
        3306,
        "shop",
    )


def test_a_mysql8_partial_revoke_takes_the_privileges_away():
    """MySQL 8 with partial_revokes=ON: a global grant minus a schema. SHOW GRANTS prints the
    REVOKE line, and the write phases are reported as missing INSERT/UPDATE/DELETE (not ok:
    the SDK's writes would fail at dual_write)."""
    grants = [
        "GRANT SELECT, INSERT, UPDATE, DELETE, REPLICATION SLAVE, REPLICATION CLIENT ON *.* "
        "TO `app`@`%`",
        "REVOKE INSERT, UPDATE, DELETE ON `shop`.* FROM `app`@`%`",
    ]
    assert _phase(grants, "verify").ok  # SELECT is not revoked
    assert not _phase(grants, "sdk writes").ok, "INSERT/UPDATE/DELETE are revoked on shop"


def test_a_grant_on_a_database_whose_name_has_a_dot():
    """`my.shop` is a legal database name; SHOW GRANTS prints GRANT SELECT ON `my.shop`.* ...:
    the level is split at the dot outside the quotes, and SELECT is found."""
    grants = [
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `app`@`%`",
        "GRANT SELECT ON `my.shop`.* TO `app`@`%`",
    ]
    assert _phase(grants, "verify", db="my.shop").ok
    assert _phase(grants, "backfill", db="my.shop").ok


def test_a_grant_on_a_database_whose_name_has_a_space():
    grants = ["GRANT SELECT ON `my shop`.* TO `app`@`%`"]
    assert _phase(grants, "verify", db="my shop").ok


def test_jdbc_requireSSL_true_requires_tls():
    """JDBC's `requireSSL=true` (a form users write, not starting with ssl/tls) means
    REQUIRED: it is not kept as an unknown parameter and ignored (plain text, no error)."""
    u = parse_mysql_url("mysql://u:pw@h:3306/db?requireSSL=true")
    assert u.tls.required and u.tls.effective_mode == "REQUIRED", (u.params, u.tls)
    assert "requireSSL" not in u.params
