"""TLS for MySQL/MariaDB connections, in the options users already write for the mysql client.

`?ssl-mode=REQUIRED|VERIFY_CA|VERIFY_IDENTITY&ssl-ca=...&ssl-cert=...&ssl-key=...` on the URL
(or `source.tls` in the mapping) applies to every connection the tool opens: mysqlclient for
reads, writes and introspection, PyMySQL for the binlog stream. The modes mean what they mean
to the mysql client: REQUIRED encrypts without checking the certificate, VERIFY_CA checks it
against the CA, VERIFY_IDENTITY also checks the host name. With MariaDB's client library
(mysqlclient built on libmariadb) VERIFY_CA checks the host name too.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from migrator.errors import ConfigError, ConnectError

MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
_VERIFYING = ("VERIFY_CA", "VERIFY_IDENTITY")

# URL parameter -> TLSOptions field; spellings of mysql, JDBC and Go drivers are accepted.
_PARAMS = {
    "sslmode": "mode",
    "ssl-mode": "mode",
    "ssl_mode": "mode",
    "sslca": "ca",
    "ssl-ca": "ca",
    "ssl_ca": "ca",
    "sslcert": "cert",
    "ssl-cert": "cert",
    "ssl_cert": "cert",
    "sslkey": "key",
    "ssl-key": "key",
    "ssl_key": "key",
}


@dataclass(frozen=True)
class TLSOptions:
    mode: str | None = None  # None: not asked for (VERIFY_CA with a CA, else the driver default)
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    @property
    def effective_mode(self) -> str | None:
        """The mode in force; as the mysql client, a CA without a mode means VERIFY_CA."""
        if self.mode:
            return self.mode
        if self.ca:
            return "VERIFY_CA"
        if self.cert or self.key:
            return "REQUIRED"
        return None

    @property
    def required(self) -> bool:
        return self.effective_mode in ("REQUIRED", *_VERIFYING)

    def merged(self, defaults: TLSOptions | None) -> TLSOptions:
        """These options, with unset ones taken from `defaults` (the mapping's `source.tls`)."""
        if defaults is None:
            return self
        return replace(
            self,
            mode=self.mode or defaults.mode,
            ca=self.ca or defaults.ca,
            cert=self.cert or defaults.cert,
            key=self.key or defaults.key,
        )

    def describe(self) -> str:
        """`ssl-mode=VERIFY_CA, ssl-ca=/path` for messages (paths are not secrets)."""
        parts = [f"ssl-mode={self.effective_mode or 'default'}"]
        parts += [f"ssl-{k}={v}" for k, v in self.files().items()]
        return ", ".join(parts)

    def files(self) -> dict[str, str]:
        return {k: v for k, v in (("ca", self.ca), ("cert", self.cert), ("key", self.key)) if v}

    # -- what each driver is given --------------------------------------------------------
    def check_files(self, setting: str) -> None:
        for name, path in (("ssl-ca", self.ca), ("ssl-cert", self.cert), ("ssl-key", self.key)):
            if path and not Path(path).is_file():
                raise ConnectError(
                    f"{setting} {name}: no such file {path}",
                    hint="give the path of a PEM file readable by this process",
                )
        if bool(self.cert) != bool(self.key):
            raise ConnectError(
                f"{setting}: ssl-cert and ssl-key go together (a client certificate needs its key)"
            )

    def mysqlclient_kwargs(self) -> dict[str, Any]:
        mode = self.effective_mode
        if mode is None:
            return {}
        out: dict[str, Any] = {"ssl_mode": mode}
        files = self.files()
        if mode != "DISABLED" and files:
            out["ssl"] = files
        return out

    def pymysql_kwargs(self) -> dict[str, Any]:
        """Settings for PyMySQL (the binlog stream). Without options PyMySQL prefers TLS."""
        mode = self.effective_mode
        if mode == "DISABLED":
            return {"ssl_disabled": True}
        if mode is None or mode == "PREFERRED":
            return {}
        return {"ssl": self.ssl_context()}

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        mode = self.effective_mode
        ctx.check_hostname = mode == "VERIFY_IDENTITY"
        if mode in _VERIFYING:
            ctx.verify_mode = ssl.CERT_REQUIRED
            if self.ca:
                ctx.load_verify_locations(cafile=self.ca)
            else:
                ctx.load_default_certs()
        else:
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def tls_from_params(params: dict[str, str], setting: str) -> tuple[TLSOptions, dict[str, str]]:
    """The TLS options in URL query parameters, and the parameters that are not TLS options."""
    found: dict[str, str] = {}
    rest: dict[str, str] = {}
    for name, value in params.items():
        field = _PARAMS.get(name.lower())
        if name.lower() in _SWITCHES:
            found["mode"] = _switch(name, value, f"{setting} {name}")
            continue
        if field is None:
            if name.lower().startswith(("ssl", "tls")):
                raise ConfigError(
                    f"{setting}: unknown TLS parameter {name!r}",
                    hint="use ssl-mode, ssl-ca, ssl-cert and ssl-key",
                )
            rest[name] = value
            continue
        found[field] = value
    if "mode" in found:
        found["mode"] = check_mode(found["mode"], f"{setting} ssl-mode")
    return TLSOptions(**found), rest


# `?ssl=true` (mysql --ssl), JDBC's useSSL/requireSSL, Go's tls=true|skip-verify|preferred:
# a mode by another name. Go's tls=true checks the certificate and the host, so it does here.
_SWITCHES = ("ssl", "tls", "usessl", "requiressl")


def _switch(name: str, value: str, where: str) -> str:
    v = value.strip().lower()
    if name.lower() == "tls" and v in ("1", "true"):
        return "VERIFY_IDENTITY"
    if v in ("1", "true", "yes", "on", "required", "skip-verify"):
        return "REQUIRED"
    if v in ("0", "false", "no", "off", "disabled"):
        return "DISABLED"
    if v == "preferred":
        return "PREFERRED"
    return check_mode(value, where)


def check_mode(mode: str, where: str) -> str:
    norm = mode.strip().upper().replace("-", "_")
    if norm not in MODES:
        raise ConfigError(f"{where}: {mode!r} is not a TLS mode", hint="one of " + ", ".join(MODES))
    return norm
