"""One migration, opened once from its settings: the source URL resolved (its password file
read once), the source schema introspected once and the Transform compiled once (both when
first needed), the MongoDB client and the state store. Backfill, CDC, verify, the cutover
machine and the SDK take it instead of each building their own, so they configure everything
the same way; `close()` (or `with`) releases the client."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cached_property
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database

from migrator.model.schema import Schema
from migrator.model.settings import Mapping
from migrator.model.transform import Transform, compile_transform
from migrator.model.urls import MySQLURL
from migrator.sink.mongo import connect as mongo_connect
from migrator.source.connection import connect as mysql_connect
from migrator.source.position import is_mariadb
from migrator.source.schema import introspect
from migrator.state.store import StateStore


class Migration:
    """`claim_state`: check (and on first use record) that the state database is this
    migration's; off for dry runs, which write nothing. `schema`: one read already (a worker
    process is handed its parent's)."""

    def __init__(
        self, settings: Mapping, *, claim_state: bool = True, schema: Schema | None = None
    ) -> None:
        self.settings = settings
        self.source_url: MySQLURL = settings.source_url
        self.source_database = settings.source_database
        self.target_database = settings.target_database
        if schema is not None:
            self.__dict__["schema"] = schema
        self.client: MongoClient[Any] = mongo_connect(settings.target.url)
        try:
            self.state = (
                StateStore.open(self.client, settings)
                if claim_state
                else StateStore(self.client, settings.state.database)
            )
        except BaseException:
            self.client.close()
            raise
        self.target: Database[Any] = self.client[self.target_database]

    # -- the source ----------------------------------------------------------------------
    def connect_source(self, *, raw: bool = False) -> Any:
        """A new MySQL connection (raw: values as the server sends them, for the Transform)."""
        return mysql_connect(self.source_url, raw=raw)

    @cached_property
    def schema(self) -> Schema:
        self._read_source()
        return self.__dict__["schema"]

    @cached_property
    def mariadb(self) -> bool:
        self._read_source()
        return bool(self.__dict__["mariadb"])

    def _read_source(self) -> None:
        conn = self.connect_source()
        try:
            self.__dict__.setdefault("schema", introspect(conn, self.source_database))
            self.__dict__["mariadb"] = is_mariadb(conn)
        finally:
            conn.close()

    @cached_property
    def transform(self) -> Transform:
        return compile_transform(self.settings, self.schema)

    def use_schema(self, schema: Schema) -> Transform:
        """The schema changed (a DDL, read again by the caller): compile the Transform anew."""
        self.__dict__["schema"] = schema
        self.__dict__.pop("transform", None)
        return self.transform

    # -- lifetime --------------------------------------------------------------------------
    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Migration:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def opened(what: Mapping | Migration, *, claim_state: bool = True) -> Iterator[Migration]:
    """The migration `what` is, or one opened from the settings `what` are (and closed after)."""
    if isinstance(what, Migration):
        yield what
        return
    with Migration(what, claim_state=claim_state) as migration:
        yield migration
