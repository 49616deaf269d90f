"""Connection URLs: parsing MySQL URLs and redacting secrets before anything is printed.

Every password the tool reads (from a URL, the environment or a file) is registered here, and
`redact` removes registered values, URL passwords, secret query parameters and `password: x`
pairs from any text: error messages, log lines (text and JSON), reports and audit entries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from migrator.errors import ConfigError
from migrator.model.tls import TLSOptions, tls_from_params

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@", re.I)
_SECRET_NAME = r"(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key|access[_-]?key|signature|sig)"
_QUERY = re.compile(rf"(?P<k>[?&;]\w*{_SECRET_NAME}\w*=)(?P<v>[^&#\s'\"]+)", re.I)
_PAIR = re.compile(
    rf"(?P<k>['\"]?\w*{_SECRET_NAME}\w*['\"]?\s*[:=]\s*)(?P<q>['\"])(?P<v>.*?)(?P=q)", re.I
)
_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never print this value (and its URL- and JSON-escaped forms) anywhere."""
    if not value or len(value) < 4:
        return  # too short to tell from ordinary text; URL and key rules still apply
    _SECRETS.update({value, quote(value, safe=""), json.dumps(value)[1:-1]})


def redact(text: str) -> str:
    """`text` without secrets."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _QUERY.sub(lambda m: f"{m['k']}***", text)
    text = _PAIR.sub(lambda m: f"{m['k']}{m['q']}***{m['q']}", text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "***")
    return text


@dataclass(frozen=True)
class MySQLURL:
    host: str
    port: int
    user: str
    password: str = field(repr=False)
    database: str | None
    params: dict[str, str]
    setting: str = "source.url"
    tls: TLSOptions = field(default_factory=TLSOptions)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        db = self.database or ""
        return f"mysql://{self.user}:***@{self.host}:{self.port}/{db}"

    def with_tls(self, defaults: TLSOptions | None) -> MySQLURL:
        """This URL with TLS options it does not set taken from `defaults`."""
        return replace(self, tls=self.tls.merged(defaults))

    def with_password(self, password: str) -> MySQLURL:
        register_secret(password)
        return replace(self, password=password)


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
    register_secret(unquote(parts.password or ""))
    tls, params = tls_from_params(dict(parse_qsl(parts.query)), setting)
    return MySQLURL(
        host=parts.hostname,
        port=port,
        user=unquote(parts.username or "root"),
        password=unquote(parts.password or ""),
        database=db,
        params=params,
        setting=setting,
        tls=tls,
    )


def register_url_password(url: str) -> None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    register_secret(unquote(password or ""))


def mongo_database_from_url(url: str) -> str | None:
    path = urlsplit(url).path.lstrip("/")
    return unquote(path) or None
