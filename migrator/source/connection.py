"""MySQL connections with errors that name the host and the setting, never the password."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import MySQLdb
from MySQLdb.converters import conversions

from migrator.errors import ConnectError, remember_server
from migrator.model.urls import MySQLURL

# MySQL client/server error codes worth a specific message.
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DB = 1049
_TLS_ERROR = 2026  # CR_SSL_CONNECTION_ERROR
_INSECURE_REFUSED = 3159  # MySQL's ER_SECURE_TRANSPORT_REQUIRED


def connect(
    url: MySQLURL,
    *,
    raw: bool = False,
    database: bool = True,
    where: str | None = None,
    timeout: int = 10,
) -> Any:
    """Open a connection; `raw` returns values as the server sends them (see typerules).

    Sessions run in UTC so TIMESTAMP values read the same whatever the server's zone.
    """
    setting = where or url.setting
    kwargs: dict[str, Any] = dict(
        host=url.host,
        port=url.port,
        user=url.user,
        passwd=url.password,
        charset="utf8mb4",
        connect_timeout=timeout,
        autocommit=True,
        init_command="SET time_zone = '+00:00'",
    )
    if database and url.database:
        kwargs["db"] = url.database
    if raw:
        # values come back as the server sends them; parameters are still encoded (None is
        # NULL, not the text 'None')
        kwargs["conv"] = {k: v for k, v in conversions.items() if not isinstance(k, int)}
    remember_server("mysql", url.address, setting)
    tls = url.tls
    tls.check_files(setting)
    mode = tls.effective_mode
    try:
        if mode == "PREFERRED":
            # MariaDB's client library never tries TLS in PREFERRED: ask for it, and fall back
            # to plain only when the server has no TLS at all
            try:
                return MySQLdb.connect(
                    **kwargs, **replace(tls, mode="REQUIRED").mysqlclient_kwargs()
                )
            except MySQLdb.OperationalError as exc:
                if not exc.args or exc.args[0] != _TLS_ERROR:
                    raise
                return MySQLdb.connect(**kwargs, ssl_mode="DISABLED")
        conn = MySQLdb.connect(**kwargs, **tls.mysqlclient_kwargs())
    except MySQLdb.OperationalError as exc:
        raise _connect_error(exc, url, setting) from None
    if tls.required and not session_cipher(conn):
        # MariaDB's client library goes on without TLS when the server offers none
        conn.close()
        raise _no_tls(url, setting)
    return conn


def _no_tls(url: MySQLURL, setting: str) -> ConnectError:
    return ConnectError(
        f"MySQL at {url.address} ({setting}) does not offer TLS, and "
        f"ssl-mode={url.tls.effective_mode} requires it",
        hint="enable TLS on the server (ssl-cert, ssl-key), or lower ssl-mode",
    )


def session_cipher(conn: Any) -> str:
    """The TLS cipher of this connection ('' when it is not encrypted)."""
    rows = query(conn, "SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    return as_text(rows[0][1]) if rows and rows[0][1] else ""


def _connect_error(exc: Exception, url: MySQLURL, setting: str) -> ConnectError:
    code = exc.args[0] if exc.args else 0
    detail = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
    detail = detail.replace(url.password, "***") if url.password else detail
    tls = url.tls
    if code == _TLS_ERROR or (code in _UNREACHABLE and "SSL" in detail):
        if "doesn't support" in detail or "not support" in detail:
            return _no_tls(url, setting)
        if "Validation of SSL server certificate failed" in detail or "mismatch" in detail:
            # MariaDB's library says this when the chain is fine but the name is not
            return ConnectError(
                f"the certificate of MySQL at {url.address} does not match the host name "
                f"{url.host!r} ({setting} {tls.describe()}): connect by a name the certificate "
                "holds, or use ssl-mode=VERIFY_CA with MySQL's client library (MariaDB's checks "
                "the name too)"
            )
        if "certificate" in detail or "verify" in detail.lower():
            # one line: the setting, the file and what to do
            reason = detail.removeprefix("TLS/SSL error: ")
            return ConnectError(
                f"cannot verify the certificate of MySQL at {url.address} ({setting} "
                f"{tls.describe()}): {reason}; ssl-ca must be the CA that signed the server's "
                "certificate"
            )
        return ConnectError(
            f"TLS with MySQL at {url.address} failed ({setting} {tls.describe()}): {detail}"
        )
    if code == _INSECURE_REFUSED:
        return ConnectError(
            f"MySQL at {url.address} refuses connections without TLS ({setting}): "
            "add ?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/to/ca.pem to the URL (or set source.tls)",
            hint="ssl-mode=REQUIRED encrypts without checking the server's certificate",
        )
    if code in _ACCESS_DENIED and not tls.required:
        # MariaDB with require_secure_transport answers a plain login this way too; the tool
        # does not try the password over an unchecked TLS connection to find out
        return ConnectError(
            f"MySQL at {url.address} refused user {url.user!r} ({setting}): access denied, "
            "on a connection without TLS: if the server requires TLS (require_secure_transport), "
            "add ?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/to/ca.pem to the URL",
            hint="else check the user and password (the password is not shown)",
        )
    if code in _UNREACHABLE:
        return ConnectError(
            f"cannot reach MySQL at {url.address} ({setting}): {detail}",
            hint="check the host and port, and that the server is running",
        )
    if code in _ACCESS_DENIED:
        return ConnectError(
            f"MySQL at {url.address} refused user {url.user!r} ({setting}): access denied",
            hint="check the user and password (the password is not shown)",
        )
    if code == _UNKNOWN_DB:
        return ConnectError(f"MySQL at {url.address} has no database {url.database!r} ({setting})")
    return ConnectError(f"MySQL at {url.address} ({setting}): {detail}")


def query(conn: Any, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, args or None)
        return list(cur.fetchall())
    finally:
        cur.close()


def variables(conn: Any, *names: str) -> dict[str, str]:
    """Global variables by name (missing ones are absent from the result)."""
    out: dict[str, str] = {}
    marks = ",".join(["%s"] * len(names))
    for name, value in query(
        conn, f"SHOW GLOBAL VARIABLES WHERE Variable_name IN ({marks})", names
    ):
        out[as_text(name).lower()] = as_text(value)
    return out


def as_text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes | bytearray) else str(v)


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
