"""MongoDB connections and idempotent bulk writes, through one retry wrapper."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from bson.decimal128 import Decimal128
from pymongo import MongoClient, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    NetworkTimeout,
    OperationFailure,
    PyMongoError,
)
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from migrator.errors import ConnectError, remember_server
from migrator.model.placement import target_indexes
from migrator.model.secrets import TARGET_PASSWORD_FILE_ENV, file_password_to_use
from migrator.model.transform import CollectionPlan
from migrator.model.urls import redact, register_url_password

T = TypeVar("T")
log = logging.getLogger("migrator.mongo")


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning(
        "MongoDB call failed; retrying",
        extra={
            "attempt": state.attempt_number,
            "cause": f"{type(exc).__name__}: {exc}"[:300],
            "wait_seconds": round(state.next_action.sleep, 2) if state.next_action else None,
        },
    )


# Transient: a primary stepping down, a dropped socket. Writes here are idempotent, so retrying
# a bulk that may have partly applied converges to the same documents.
_retry = retry(
    retry=retry_if_exception_type((AutoReconnect, NetworkTimeout)),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_attempt(8),
    before_sleep=_log_retry,
    reraise=True,
)


def with_retry(fn: Callable[[], T]) -> T:
    return _retry(fn)()


def host_of(url: str) -> str:
    try:
        return urlsplit(url).netloc.rsplit("@", 1)[-1] or url
    except ValueError:
        return redact(url)


def connect(url: str, setting: str = "target.url", timeout_ms: int = 10_000) -> MongoClient[Any]:
    """A client that has answered a ping, or a ConnectError naming the host and the setting."""
    register_url_password(url)
    remember_server("mongodb", host_of(url), setting)
    # A timeout written in the URL wins over ours.
    opts: dict[str, Any] = {"tz_aware": False, "appname": "migrator"}
    if "serverselectiontimeoutms" not in url.lower():
        opts["serverSelectionTimeoutMS"] = timeout_ms
    parts = urlsplit(url)
    password = file_password_to_use(
        TARGET_PASSWORD_FILE_ENV, unquote(parts.password or ""), setting
    )
    if password is not None:
        if not parts.username:
            raise ConnectError(
                f"{TARGET_PASSWORD_FILE_ENV} is set but {setting} names no user",
                hint="write the user in the URL: mongodb://user@host/?authSource=admin",
            )
        opts["password"] = password
    try:
        client: MongoClient[Any] = MongoClient(url, **opts)
        client.admin.command("ping")
        return client
    except ConfigurationError as exc:
        raise ConnectError(f"{setting}: invalid MongoDB URL {redact(url)}: {exc}") from None
    except OperationFailure as exc:
        if exc.code in (18, 13):
            raise ConnectError(
                f"MongoDB at {host_of(url)} refused the credentials ({setting})",
                hint="check the user and password (the password is not shown)",
            ) from None
        raise ConnectError(f"MongoDB at {host_of(url)} ({setting}): {exc}") from None
    except ConnectionFailure as exc:
        raise _unreachable(url, setting, str(exc)) from None
    except PyMongoError as exc:
        raise ConnectError(f"MongoDB at {host_of(url)} ({setting}): {redact(str(exc))}") from None


def _unreachable(url: str, setting: str, detail: str) -> ConnectError:
    host = host_of(url)
    query = urlsplit(url).query.lower()
    uses_tls = "tls=true" in query or "ssl=true" in query or url.startswith("mongodb+srv://")
    if "CERTIFICATE_VERIFY_FAILED" in detail or "certificate verify failed" in detail:
        reason = detail.split("certificate verify failed:", 1)[-1].split("(")[0].strip()
        return ConnectError(
            f"cannot verify the certificate of MongoDB at {host} ({setting} tlsCAFile="
            f"{tls_ca_file(url) or 'system CAs'}): {reason}; tlsCAFile must be the CA that "
            "signed the server's certificate"
        )
    if "SSL" in detail or "TLS" in detail:
        return ConnectError(f"TLS with MongoDB at {host} failed ({setting}): {redact(detail)}")
    if not uses_tls and ("reset by peer" in detail or "closed" in detail):
        return ConnectError(
            f"MongoDB at {host} closed the connection ({setting}); it may accept TLS only",
            hint="add tls=true&tlsCAFile=/path/to/ca.pem to the URL",
        )
    return ConnectError(
        f"cannot reach MongoDB at {host} ({setting})",
        hint="check the host and port, and that the server is running",
    )


def find_by_ids(
    coll: Collection[Any], ids: Sequence[Any], projection: dict[str, Any] | None = None
) -> list[Any]:
    """The documents with these `_id`s: `$in` in batches of 1,000, which every server answers
    from the `_id` index. (A range scan filtered here is not: SecantusDB 0.7 scans the whole
    collection for an `_id` range, 4 s on 300,000 documents against 0.06 s for an `$in` of
    333; a walk over the whole collection reads it in one sorted scan instead, `stream.py`.)"""
    out: list[Any] = []
    for i in range(0, len(ids), 1000):
        out += list(coll.find({"_id": {"$in": list(ids[i : i + 1000])}}, projection))
    return out


def ensure_indexes(db: Database[Any], plans: Sequence[CollectionPlan]) -> None:
    """The indexes CDC finds documents by (`target_indexes`); a no-op where they exist."""
    for p in plans:
        for keys in target_indexes(p):
            with_retry(partial(db[p.name].create_index, [(x, 1) for x in keys]))


def has_unique_index(coll: Collection[Any]) -> bool:
    """Whether a unique index other than `_id`'s holds the collection's documents (a user's:
    the tool makes none), under which writes to different documents do not commute."""
    return any(
        spec.get("unique") for name, spec in coll.index_information().items() if name != "_id_"
    )


def integer_id(v: Any) -> bool:
    """An integer `_id` (int or bson Int64, as the type rules give BIGINT keys), not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def number_id(v: Any) -> Any:
    """A numeric `_id` as a hashable Python number equal to the int it matches (as `$in`
    matches 5, 5.0 and Decimal128("5") alike); None for anything else (bools included)."""
    if isinstance(v, bool):
        return None
    if isinstance(v, Decimal128):
        return v.to_decimal()
    return v if isinstance(v, int | float) else None


def _duplicate_id(error: dict[str, Any]) -> bool:
    """A duplicate key on `_id` (not on another unique index, which a replace would not fix)."""
    if error.get("code") != 11000:
        return False
    pattern = error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["_id"]
    return " index: _id_ " in str(error.get("errmsg", ""))


def tls_ca_file(url: str) -> str | None:
    for name, value in parse_qsl(urlsplit(url).query):
        if name.lower() in ("tlscafile", "ssl_ca_certs"):
            return value
    return None


def uses_tls(client: MongoClient[Any]) -> bool:
    """Whether the client's connections are encrypted."""
    return bool(getattr(client.options.pool_options, "_ssl_context", None))


class DocumentWriter:
    """Idempotent replace-upserts by _id in bounded batches (small batches keep slow servers
    responsive and a retried batch cheap)."""

    def __init__(self, collection: Collection[Any], batch_size: int = 1000) -> None:
        self.collection = collection
        self.batch_size = batch_size

    def insert_or_replace(self, docs: Sequence[Mapping[str, Any]]) -> int:
        """Write documents that are most likely new: `insert_many` (unordered), which servers
        take several times faster than upserts, and a replace only for the documents whose
        `_id` already exists (a retried chunk, a collection that held documents). The result
        is the same as `upsert`; a batch that turns out to be mostly present switches to it."""
        written = 0
        upserting = False
        for i in range(0, len(docs), self.batch_size):
            batch = docs[i : i + self.batch_size]
            if upserting:
                written += self.upsert(batch)
                continue
            present, refused = self._insert(batch)
            if present:
                self.upsert([batch[j] for j in present])
                upserting = len(present) * 2 > len(batch)
            if refused:
                # refused by another unique index: maybe by a value the replaces above just
                # moved off an old document (the upsert order would have allowed it); a real
                # conflict fails here as it would have with upserts
                self.upsert([batch[j] for j in refused])
            written += len(batch)
        return written

    def _insert(self, batch: Sequence[Mapping[str, Any]]) -> tuple[list[int], list[int]]:
        """Insert `batch`; the positions of the documents whose `_id` was already there, and of
        those another unique index refused (to be upserted after the first)."""
        try:
            # retried as a whole on a dropped connection: what the first try wrote comes
            # back as duplicates below
            with_retry(partial(self.collection.insert_many, batch, ordered=False))
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if exc.details.get("writeConcernErrors") or any(e.get("code") != 11000 for e in errors):
                raise
            present = sorted(e["index"] for e in errors if _duplicate_id(e))
            refused = sorted(e["index"] for e in errors if not _duplicate_id(e))
            return present, refused
        return [], []

    def upsert(self, docs: Sequence[Mapping[str, Any]]) -> int:
        written = 0
        for i in range(0, len(docs), self.batch_size):
            batch = docs[i : i + self.batch_size]
            ops = [ReplaceOne({"_id": d["_id"]}, d, upsert=True) for d in batch]
            with_retry(partial(self.collection.bulk_write, ops, ordered=False))
            written += len(batch)
        return written
