"""The mapping file: YAML, `${ENV}` interpolation, pydantic validation, errors with file:line.

Field rules in a nutshell (the README has the full format):
- `fields` renames or overrides columns (`docField: column` or `docField: {column, type}`);
  every other column is kept under its own name unless `exclude` lists it or `all_columns`
  is false. A dotted field name (`address.city`) builds a sub-document.
- `embed` puts rows of another table inside each document: `on` maps the embedded table's
  columns to the enclosing table's columns; `many: true` makes an array (1:N), `many: false` a
  sub-document (N:1). An embed may hold `embed`, to any depth; `merge: true` puts a one-row
  embed's fields into the enclosing document; `values: field` makes an array of one field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from migrator.errors import ConfigError
from migrator.model.secrets import SOURCE_PASSWORD_FILE_ENV, file_password_to_use, read_secret_file
from migrator.model.tls import TLSOptions, check_mode
from migrator.model.urls import (
    MySQLURL,
    mongo_database_from_url,
    parse_mysql_url,
    register_secret,
    register_url_password,
)

FieldType = Literal[
    "auto", "string", "int", "double", "decimal", "bool", "datetime", "date", "binary", "json"
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FieldSpec(_Model):
    column: str
    type: FieldType = "auto"


FieldValue = str | FieldSpec


class Projection(_Model):
    fields: dict[str, FieldValue] = Field(default_factory=dict)
    exclude: list[str] = Field(default_factory=list)
    all_columns: bool = True

    @field_validator("fields")
    @classmethod
    def _field_names(cls, v: dict[str, FieldValue]) -> dict[str, FieldValue]:
        for name in v:
            if not name or name.startswith("$") or ".." in name or name.endswith("."):
                raise ValueError(f"field name {name!r} is not a valid document path")
            if name == "_id":
                raise ValueError("_id is the primary key; it cannot be mapped from a column")
        return v

    def field_items(self) -> Iterator[tuple[str, FieldSpec]]:
        for name, spec in self.fields.items():
            yield name, spec if isinstance(spec, FieldSpec) else FieldSpec(column=spec)


class EmbedSpec(Projection):
    """Rows of another table inside the enclosing document or element, to any depth."""

    as_: str | None = Field(
        None, alias="as", description="the field the embedded rows go in (not with merge)"
    )
    from_: str = Field(alias="from")
    on: dict[str, str] = Field(description="embedded table column -> enclosing table column")
    many: bool = True
    order_by: list[str] = Field(default_factory=list)
    merge: bool = Field(
        False, description="many: false only: the row's fields go into the enclosing document"
    )
    values: str | None = Field(
        None, description="many: true only: the array holds this field of each element"
    )
    embed: list[EmbedSpec] = Field(default_factory=list)

    @field_validator("on")
    @classmethod
    def _on_not_empty(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("`on` needs at least one pair {embedded_column: enclosing_column}")
        return v

    @field_validator("order_by")
    @classmethod
    def _order_by_needs_many(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if v and info.data.get("many") is False:
            raise ValueError("order_by applies only to many: true embeds")
        return v

    @field_validator("merge")
    @classmethod
    def _merge_is_one_row(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("many") is not False:
            raise ValueError(
                "merge: true needs many: false (one row's fields go into the enclosing "
                "document; an array cannot be merged)"
            )
        if v and info.data.get("as_") is not None:
            raise ValueError(
                "merge: true takes no `as` (the fields go into the enclosing document, not "
                "under a name): remove `as` or merge"
            )
        return v

    @field_validator("values")
    @classmethod
    def _values_of_an_array(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and info.data.get("many") is False:
            raise ValueError("values needs many: true (it makes an array of one field)")
        if v is not None and (not v or v.startswith(("$", ".")) or ".." in v or v.endswith(".")):
            raise ValueError(f"values {v!r} is not a field path")
        return v

    @field_validator("embed")
    @classmethod
    def _unique_embeds(cls, v: list[EmbedSpec]) -> list[EmbedSpec]:
        return unique_embed_names(v)

    @model_validator(mode="after")
    def _named(self) -> EmbedSpec:
        if self.as_ is None and not self.merge:
            raise ValueError("`as` is required: the field the embedded rows go in")
        return self

    @property
    def label(self) -> str:
        """How messages name this embed: its field, or the merged table."""
        return self.as_ if self.as_ is not None else f"(merged {self.from_})"


def unique_embed_names(embeds: list[EmbedSpec]) -> list[EmbedSpec]:
    seen: set[str] = set()
    for e in embeds:
        if e.as_ is None:
            continue
        if e.as_ in seen:
            raise ValueError(f"two embeds are named {e.as_!r}")
        seen.add(e.as_)
    return embeds


class CollectionSpec(Projection):
    name: str
    from_: str = Field(alias="from")
    filter: str | None = None
    nulls: Literal["keep", "omit"] = "keep"
    embed: list[EmbedSpec] = Field(default_factory=list)

    @field_validator("embed")
    @classmethod
    def _unique_embeds(cls, v: list[EmbedSpec]) -> list[EmbedSpec]:
        return unique_embed_names(v)


class TLSSpec(_Model):
    """TLS for every MySQL connection; the URL's ssl-* parameters win over these."""

    mode: str | None = Field(
        None, description="DISABLED, PREFERRED, REQUIRED, VERIFY_CA or VERIFY_IDENTITY"
    )
    ca: str | None = Field(None, description="PEM file of the CA that signed the server")
    cert: str | None = Field(None, description="PEM client certificate (with key)")
    key: str | None = Field(None, description="PEM key of the client certificate")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return check_mode(v, "mode")
        except ConfigError as exc:
            raise ValueError(f"{v!r} is not a TLS mode ({exc.hint})") from None

    def options(self) -> TLSOptions:
        return TLSOptions(mode=self.mode, ca=self.ca, cert=self.cert, key=self.key)


class SourceSpec(_Model):
    url: str
    timezone: str = Field("UTC", description="zone DATETIME values are written in")
    tls: TLSSpec | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parse_mysql_url(v)
        except ConfigError as exc:
            raise ValueError(
                exc.message.removeprefix("source.url: ").removeprefix("source.url ")
            ) from None
        return v


class TargetSpec(_Model):
    url: str
    database: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("expected a mongodb:// or mongodb+srv:// URL")
        register_url_password(v)
        return v


class StateSpec(_Model):
    database: str = "_migrator"


class ThrottleSpec(_Model):
    """Backfill pauses while the source is busier than these limits (gh-ost's --max-load)."""

    max_threads_running: int = Field(50, ge=1)
    max_replication_lag_seconds: float = Field(10.0, gt=0)
    check_interval_seconds: float = Field(1.0, gt=0)
    replicas: list[str] = Field(default_factory=list, description="mysql:// URLs to watch")


class BackfillSpec(_Model):
    chunk_size: int = Field(5000, ge=1, le=1_000_000)
    workers: int = Field(2, ge=1, le=64)


class DebeziumSpec(_Model):
    """For `cdc --source debezium`: where the topics are and how the connector encodes."""

    bootstrap: str | None = Field(None, description="Kafka bootstrap servers, host:port")
    topic_prefix: str | None = Field(None, description="the connector's topic.prefix")
    group: str | None = Field(None, description="consumer group (default migrator-<target db>)")
    time_precision_mode: Literal[
        "adaptive_time_microseconds", "adaptive", "connect", "isostring"
    ] = "adaptive_time_microseconds"
    decimal_handling_mode: Literal["precise", "string", "double"] = "precise"
    binary_handling_mode: Literal["bytes", "base64", "base64-url-safe", "hex"] = "bytes"
    security: KafkaSecuritySpec = Field(default_factory=lambda: KafkaSecuritySpec())


class KafkaSecuritySpec(_Model):
    """How the consumer authenticates to Kafka (Kafka's own names for the settings)."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="security.protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = Field(
        None, description="write ${ENV} or ${file:/path}; never the password itself"
    )
    ssl_cafile: str | None = Field(None, description="PEM CA of the brokers' certificates")
    ssl_certfile: str | None = Field(None, description="PEM client certificate (mutual TLS)")
    ssl_keyfile: str | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecuritySpec:
        if self.protocol.startswith("SASL"):
            missing = [
                n
                for n in ("sasl_mechanism", "sasl_username", "sasl_password")
                if not getattr(self, n)
            ]
            if missing:
                raise ValueError(f"protocol {self.protocol} needs " + ", ".join(missing))
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        if self.sasl_password:
            register_secret(self.sasl_password)
        return self

    def kafka_python(self) -> dict[str, Any]:
        """KafkaConsumer keyword arguments."""
        out: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol.startswith("SASL"):
            out.update(
                sasl_mechanism=self.sasl_mechanism,
                sasl_plain_username=self.sasl_username,
                sasl_plain_password=self.sasl_password,
            )
        if self.protocol.endswith("SSL"):
            out["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name):
                    out[name] = getattr(self, name)
        return out


class Mapping(_Model):
    version: Literal[1]
    source: SourceSpec
    target: TargetSpec
    state: StateSpec = Field(default_factory=StateSpec)
    throttle: ThrottleSpec = Field(default_factory=ThrottleSpec)
    backfill: BackfillSpec = Field(default_factory=BackfillSpec)
    debezium: DebeziumSpec = Field(default_factory=DebeziumSpec)
    collections: list[CollectionSpec] = Field(min_length=1)

    # Where the mapping came from, for error messages (not part of the format).
    _path: str = PrivateAttr("<mapping>")
    _lines: dict[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    @property
    def path(self) -> str:
        return self._path

    @property
    def lines(self) -> dict[tuple[str | int, ...], int]:
        return self._lines

    @model_validator(mode="after")
    def _unique_collections(self) -> Mapping:
        seen: set[str] = set()
        for c in self.collections:
            if c.name in seen:
                raise ValueError(f"two collections are named {c.name!r}")
            seen.add(c.name)
        return self

    @property
    def source_url(self) -> MySQLURL:
        """The source URL with `source.tls` and a password from $MIGRATOR_SOURCE_PASSWORD_FILE."""
        url = parse_mysql_url(self.source.url)
        url = url.with_tls(self.source.tls.options() if self.source.tls else None)
        return with_password_file(url, SOURCE_PASSWORD_FILE_ENV)

    @property
    def source_database(self) -> str:
        db = parse_mysql_url(self.source.url).database
        if not db:
            raise ConfigError(f"{self.path}: source.url names no database (mysql://…/DBNAME)")
        return db

    @property
    def target_database(self) -> str:
        return (
            self.target.database or mongo_database_from_url(self.target.url) or self.source_database
        )

    @property
    def migration_name(self) -> str:
        """How logs, metrics and alerts name this migration: `sourcedb->targetdb`."""
        return f"{self.source_database}->{self.target_database}"

    def where(self, *key: str | int) -> str:
        """`file:line key.path` for messages about a part of the mapping."""
        line = line_for(self.lines, tuple(key))
        loc = f"{self.path}:{line}" if line else self.path
        return f"{loc} {format_key(key)}" if key else loc

    def tables(self) -> set[str]:
        """Every table the documents read: roots and embedded tables at any depth."""
        out: set[str] = set()
        stack = [e for c in self.collections for e in c.embed]
        out |= {c.from_ for c in self.collections}
        while stack:
            e = stack.pop()
            out.add(e.from_)
            stack += e.embed
        return out

    def collection(self, name: str) -> CollectionSpec:
        for c in self.collections:
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: no collection named {name!r} in the mapping")


def format_key(key: tuple[str | int, ...] | list[str | int]) -> str:
    out = ""
    for k in key:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


def with_password_file(url: MySQLURL, env: str) -> MySQLURL:
    """`url` with the password from the file `$env` names, when the URL has none."""
    password = file_password_to_use(env, url.password, url.setting)
    return url if password is None else url.with_password(password)


_ENV = re.compile(r"\$\{(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _in_password(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] sits in a URL's user or password (user:HERE@host, HERE:pw@host):
    it must be escaped. A value that is the whole `user:password` part is URL text, left as
    written. Other references (a user from a file) are masked: their values do not count."""
    masked = _ENV.sub(lambda m: "x" * len(m.group(0)), text)
    before, after = masked[:start], masked[end:]
    opened = re.search(r"://([^/@?#]*)$", before)
    if opened is None or "@" not in re.split(r"[/?#]", after)[0]:
        return False
    return not (opened.group(1) == "" and after.startswith("@"))


def _interpolate(
    value: Any, path: str, lines: dict[tuple[str | int, ...], int], key: tuple[str | int, ...] = ()
) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, path, lines, (*key, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, path, lines, (*key, i)) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        where = f"{path}:{lines.get(key)} {format_key(key)}"

        def lookup(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name.startswith("file:"):
                return read_secret_file(name.removeprefix("file:"), where)
            if name in os.environ:
                if re.search(r"PASS|SECRET|TOKEN|KEY", name, re.I):
                    register_secret(os.environ[name])
                return os.environ[name]
            if os.environ.get(f"{name}_FILE"):
                return read_secret_file(os.environ[f"{name}_FILE"], f"{where} ({name}_FILE)")
            if default is not None:
                return default
            raise ConfigError(
                f"{where}: environment variable {name} is not set",
                hint=f"export {name}=… (or {name}_FILE=/path) or write ${{{name}:-default}}",
            )

        def sub(m: re.Match[str]) -> str:
            text = lookup(m)
            # a value in a URL's password is the password itself, not URL text: every
            # character is escaped ('%41' stays '%41', '@' cannot end the user part) so the
            # server gets exactly what the file or the variable holds
            return quote(text, safe="") if _in_password(value, m.start(), m.end()) else text

        return _ENV.sub(sub, value)
    return value


def _line_map(
    node: yaml.Node,
    key: tuple[str | int, ...] = (),
    out: dict[tuple[str | int, ...], int] | None = None,
) -> dict[tuple[str | int, ...], int]:
    out = {} if out is None else out
    out[key] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            name = k.value
            out[(*key, name)] = k.start_mark.line + 1
            _line_map(v, (*key, name), out)
            out[(*key, name)] = k.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _line_map(v, (*key, i), out)
    return out


def _describe(err: Any) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        return "is required but missing"
    if kind == "extra_forbidden":
        return "is not a known key here"
    if kind == "literal_error":
        return f"{msg.lower()} (got {err.get('input')!r})"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    return f"{msg} (got {err.get('input')!r})" if kind.endswith("_type") else msg


def line_for(lines: dict[tuple[str | int, ...], int], key: tuple[str | int, ...]) -> int | None:
    """The line of `key`, or of its nearest parent that has one."""
    probe, line = key, None
    while probe and line is None:
        line = lines.get(probe)
        probe = probe[:-1]
    return line


def validation_problems(
    exc: ValidationError, lines: dict[tuple[str | int, ...], int], path: str
) -> list[str]:
    """One `file:line key: what was expected` line per pydantic error."""
    out = []
    for err in exc.errors():
        # pydantic adds union-member names ("str", "FieldSpec") to the location: drop them
        loc = tuple(
            p for p in err["loc"] if not (isinstance(p, str) and p.startswith(("str", "FieldSpec")))
        )
        out.append(
            f"{path}:{line_for(lines, loc) or '?'} {format_key(loc) or '(top level)'}: "
            f"{_describe(err)}"
        )
    return out


class YAMLLoader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 would read the key `on:` as True."""


YAMLLoader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _repeated_keys(
    loader: YAMLLoader, node: yaml.Node, path: str, key: tuple[str | int, ...] = ()
) -> list[str]:
    """One line per key given twice in a mapping: YAML would keep the last and drop the first
    without a word (two `embed:` blocks in one collection lose the first)."""
    out: list[str] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, yaml.Node] = {}
        for k, v in node.value:
            # `<<` merges are overridden by explicit keys by design, not repeated
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                # compare keys as read: `1` and `01` are the same key
                ident = loader.construct_object(k, deep=True)
                first = seen.setdefault(ident, k)
                if first is not k:
                    l1, l2 = first.start_mark.line + 1, k.start_mark.line + 1
                    lines = f"both on line {l2}" if l1 == l2 else f"lines {l1} and {l2}"
                    out.append(
                        f"{path}:{l2} {format_key((*key, k.value))}: the key {k.value!r} is "
                        f"given twice ({lines}); YAML would keep only the last"
                    )
            out += _repeated_keys(loader, v, path, (*key, k.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            out += _repeated_keys(loader, v, path, (*key, i))
    return out


def load_yaml(text: str, path: str) -> tuple[Any, dict[tuple[str | int, ...], int]]:
    """Parse YAML; return the data and a map of key path -> line number. A key given twice in
    one mapping is an error naming the file, both lines and the key."""
    loader = YAMLLoader(text)
    try:
        node = loader.get_single_node()
        repeated = _repeated_keys(loader, node, path) if node is not None else []
        if repeated:
            raise ConfigError(
                "\n  ".join(repeated), hint="write each key once (merge the two blocks into one)"
            )
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    finally:
        loader.dispose()
    return data, (_line_map(node) if node is not None else {})


def parse_mapping(text: str, path: str = "<mapping>") -> Mapping:
    """Validate mapping YAML text; every error names `path:line key` and what was expected."""
    data, lines = load_yaml(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with version, source, target, collections")
    data = _interpolate(data, path, lines)
    try:
        mapping = Mapping.model_validate(data)
    except ValidationError as exc:
        problems = validation_problems(exc, lines, path)
        raise ConfigError("invalid mapping:\n  " + "\n  ".join(problems)) from None
    mapping._path = path
    mapping._lines = lines
    return mapping


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the mapping format (mappings/mapping.schema.json is generated from it)."""
    schema = Mapping.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "migrator mapping file"
    return schema


def load_mapping(path: str | Path) -> Mapping:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read mapping file {p}: {exc.strerror}") from None
    return parse_mapping(text, str(p))
