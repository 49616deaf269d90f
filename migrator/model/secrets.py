"""Passwords kept in files (Kubernetes or Docker secrets, Vault agent): read once, never shown.

Three ways to use one, all of which register the value with `urls.redact`:
- `MIGRATOR_SOURCE_PASSWORD_FILE` / `MIGRATOR_TARGET_PASSWORD_FILE` give the password of a URL that
  names a user but no password;
- `${NAME}` in the mapping reads the file `$NAME_FILE` names when `NAME` itself is not set (the
  convention of the official database images), so scaffolded mappings work with either;
- `${file:/path}` in the mapping reads that file.
"""

from __future__ import annotations

import os
from pathlib import Path

from migrator.errors import ConfigError
from migrator.model.urls import register_secret

SOURCE_PASSWORD_FILE_ENV = "MIGRATOR_SOURCE_PASSWORD_FILE"
TARGET_PASSWORD_FILE_ENV = "MIGRATOR_TARGET_PASSWORD_FILE"

_CACHE: dict[str, str] = {}


def read_secret_file(path: str, where: str) -> str:
    """The file's content without its trailing newline; `where` names the setting for errors."""
    if path in _CACHE:
        return _CACHE[path]
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{where}: cannot read the secret file {path}: {exc.strerror or exc}",
            hint="mount the file, or check that this user may read it",
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: the secret file {path} is not UTF-8 text") from None
    value = text.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{where}: the secret file {path} is empty")
    register_secret(value)
    _CACHE[path] = value
    return value


def password_from_env_file(env: str) -> str | None:
    """The password in the file `$env` names, or None when the variable is not set."""
    path = os.environ.get(env)
    return read_secret_file(path, env) if path else None


def file_password_to_use(env: str, url_password: str, setting: str) -> str | None:
    """The password `$env`'s file gives a URL whose own password is `url_password`: None when
    there is nothing to add (no file, or the URL already holds that very password, as when
    `${NAME}` read `$NAME_FILE`); a URL with another password is refused, not guessed."""
    password = password_from_env_file(env)
    if password is None or url_password == password:
        return None
    if url_password:
        raise ConfigError(
            f"{setting} has a password and {env} names a file: give the password once",
            hint=f"drop the password from {setting}, or unset {env}",
        )
    return password
