"""Review of issue 11 (TLS, password files, least privilege): problems found, as failing tests,
and a few behaviours worth pinning."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.errors import ConnectError
from migrator.model.settings import parse_mapping
from migrator.model.urls import parse_mysql_url
from migrator.source.privileges import check_phases, parse_grants

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


# -- password files vs. the mappings init writes -----------------------------------------------


def test_init_mapping_with_MIGRATOR_SOURCE_PASSWORD_FILE_gives_the_password(tmp_path, monkeypatch):
    """README: "`${NAME}` reads the file `$NAME_FILE` names when NAME is unset, so the mappings
    init writes (${MIGRATOR_SOURCE_PASSWORD}) work with either". With
    MIGRATOR_SOURCE_PASSWORD_FILE set, ${MIGRATOR_SOURCE_PASSWORD} is read from that file, and
    then Mapping.source_url refuses the very same file: "source.url has a password and
    MIGRATOR_SOURCE_PASSWORD_FILE names a file". Every command fails with exit 2."""
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
    then sink.mongo.connect refuses the URL because that same variable names a file. The only
    acceptable failure here is "cannot reach" (nothing listens on port 1)."""
    from migrator.sink.mongo import connect

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


# -- grants --------------------------------------------------------------------------------------


def test_mysql8_partial_revoke_is_not_reported_as_ok():
    """MySQL 8 with partial_revokes=ON: a global grant minus a schema. SHOW GRANTS prints the
    REVOKE line; the parser ignores it and reports the write phases as ok (a wrong "ok": the
    SDK's writes then fail at dual_write)."""
    grants = [
        "GRANT SELECT, INSERT, UPDATE, DELETE, REPLICATION SLAVE, REPLICATION CLIENT ON *.* "
        "TO `app`@`%`",
        "REVOKE INSERT, UPDATE, DELETE ON `shop`.* FROM `app`@`%`",
    ]
    assert _phase(grants, "verify").ok  # SELECT is not revoked
    assert not _phase(grants, "sdk writes").ok, "INSERT/UPDATE/DELETE are revoked on shop"


def test_a_grant_on_a_database_whose_name_has_a_dot():
    """`my.shop` is a legal database name; SHOW GRANTS prints GRANT SELECT ON `my.shop`.* ...
    The level is split at the first dot (inside the quotes), so the plan reports SELECT as
    missing and blocks (exit 1) for a user who has it."""
    grants = [
        "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO `app`@`%`",
        "GRANT SELECT ON `my.shop`.* TO `app`@`%`",
    ]
    assert _phase(grants, "verify", db="my.shop").ok
    assert _phase(grants, "backfill", db="my.shop").ok


def test_a_grant_on_a_database_whose_name_has_a_space():
    grants = ["GRANT SELECT ON `my shop`.* TO `app`@`%`"]
    assert _phase(grants, "verify", db="my shop").ok


# -- TLS options in the forms users already write ------------------------------------------------


def test_jdbc_requireSSL_is_not_silently_ignored():
    """JDBC's `requireSSL=true` (a form users write) does not start with ssl/tls, so it is kept
    as an unknown parameter and ignored: the connection is plain text with no error. It should
    either mean REQUIRED or be refused as an unknown TLS parameter."""
    from migrator.errors import ConfigError

    try:
        u = parse_mysql_url("mysql://u:pw@h:3306/db?requireSSL=true")
    except ConfigError:
        return
    assert u.tls.required, f"requireSSL=true left as {u.params}, TLS mode {u.tls.effective_mode}"


# -- pinned: ${file:} in user-info survives every URL-special character --------------------------


@pytest.mark.parametrize(
    "secret", ["p@ss/w:rd?#x", "100%sure", "with space", "ünïcødé€", "a&b=c;d", "tab\there"]
)
def test_file_password_in_userinfo_round_trips(tmp_path: Path, secret: str):
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
