"""Connection URLs: parsing MySQL URLs and redacting secrets before anything is printed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@", re.I)


def redact(text: str) -> str:
    """Replace the password of every URL in `text` with ***."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)


@dataclass(frozen=True)
class MySQLURL:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str | None
    params: dict[str, str]
    setting: str = "source.url"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        db = self.database or ""
        return f"mysql://{self.user}:***@{self.host}:{self.port}/{db}"


def parse_mysql_url(url: str, setting: str = "source.url") -> MySQLURL:
    parts = urlsplit(url)
    if parts.scheme not in ("mysql", "mariadb"):
        raise ConfigError(
            f"{setting}: expected a mysql:// URL, got scheme {parts.scheme or '(none)'!r}",
            hint="write it as mysql://user:password@host:3306/database",
        )
    if not parts.hostname:
        raise ConfigError(f"{setting}: the URL has no host", hint="mysql://user:pw@host:3306/db")
    try:
        port = parts.port or 3306
    except ValueError as exc:
        raise ConfigError(f"{setting}: bad port in URL: {exc}") from None
    db = unquote(parts.path.lstrip("/")) or None
    return MySQLURL(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=db,
        params=dict(parse_qsl(parts.query)),
        setting=setting,
    )


def mongo_database_from_url(url: str) -> str | None:
    path = urlsplit(url).path.lstrip("/")
    return unquote(path) or None
