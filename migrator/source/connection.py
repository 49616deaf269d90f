"""MySQL connections with errors that name the host and the setting, never the password."""

from __future__ import annotations

from typing import Any

import MySQLdb
from MySQLdb.converters import conversions

from ..errors import ConnectError, remember_server
from ..urls import MySQLURL

# MySQL client/server error codes worth a specific message.
_UNREACHABLE = {2002, 2003, 2005, 2006, 2013}
_ACCESS_DENIED = {1044, 1045, 1698}
_UNKNOWN_DB = 1049


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
    try:
        return MySQLdb.connect(**kwargs)
    except MySQLdb.OperationalError as exc:
        code = exc.args[0] if exc.args else 0
        detail = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        detail = detail.replace(url.password, "***") if url.password else detail
        if code in _UNREACHABLE:
            raise ConnectError(
                f"cannot reach MySQL at {url.address} ({setting}): {detail}",
                hint="check the host and port, and that the server is running",
            ) from None
        if code in _ACCESS_DENIED:
            raise ConnectError(
                f"MySQL at {url.address} refused user {url.user!r} ({setting}): access denied",
                hint="check the user and password (the password is not shown)",
            ) from None
        if code == _UNKNOWN_DB:
            raise ConnectError(
                f"MySQL at {url.address} has no database {url.database!r} ({setting})"
            ) from None
        raise ConnectError(f"MySQL at {url.address} ({setting}): {detail}") from None


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
        out[_s(name).lower()] = _s(value)
    return out


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes | bytearray) else str(v)


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"
