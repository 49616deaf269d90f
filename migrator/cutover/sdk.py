"""The dual-write SDK: applications write rows through it and it routes by phase.

    from migrator.cutover.sdk import DualWriter
    w = DualWriter.from_file("shop.yaml")
    w.insert("orders", {"id": 7, "order_no": "SO-7", ...})
    w.update("orders", {"id": 7}, {"status": "paid"})
    w.delete("order_items", {"order_id": 7, "line_no": 1})
    doc = w.get("orders", 7)

Applications keep speaking rows; the SDK writes MySQL with SQL and MongoDB with the same
Transform and applier CDC uses, so both stores get the same document. The order follows the
control document's `writes_to`: MySQL then MongoDB until the write switch; after it MongoDB
only, the row derived from MongoDB's document, and reverse sync (`cdc --follow`) carries the
change to MySQL in MongoDB's commit order, so no SDK write can be reordered against another
writer's. A failed secondary write (before the switch) does not fail the request: it is
recorded in `sdk_failures` for repair (`verify --repair`). While
`freeze` is set, writes wait (bounded) and then raise `WritesFrozen`, a retryable error.

One instance may be shared by threads: writes run one at a time under a lock, MySQL reads under
another. Each instance registers as a writer and acknowledges freezes (the fence, `fence.py`);
`close()` unregisters it.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from migrator.cdc.applier import Applier, parent_id
from migrator.cdc.lookup import SourceLookup
from migrator.cutover.control import Control
from migrator.cutover.fence import Registration
from migrator.errors import MigratorError
from migrator.model.events import ChangeEvent, Position, Transaction
from migrator.model.settings import Mapping, load_mapping
from migrator.model.transform import CollectionPlan, EmbedPlan, Row
from migrator.runtime import Migration
from migrator.sink.mongo import with_retry
from migrator.source.connection import connect as mysql_connect
from migrator.source.connection import quote_ident
from migrator.source.defaults import Default
from migrator.source.defaults import column_defaults as read_defaults
from migrator.source.position import is_mariadb
from migrator.source.reader import ChunkReader
from migrator.state.store import now
from migrator.verify.canonical import doc_hash

CONTROL_POLL = 0.1  # seconds between the beat thread's reads of the control document
FROZEN_POLL = 0.05  # seconds between a held write's reads of it (every writer polls)


class WritesFrozen(MigratorError):
    """Writes are paused for the write switch longer than the SDK waits: retry shortly."""

    retryable = True


class DualWriter:
    def __init__(
        self,
        migration: Migration | Mapping,
        *,
        control_ttl: float = 1.0,
        freeze_wait: float = 5.0,
        shadow_reads: bool = True,
        beat_seconds: float = 0.25,
    ) -> None:
        # a migration given is the caller's to close; one opened from settings is this one's
        self._owns = not isinstance(migration, Migration)
        self.migration = migration if isinstance(migration, Migration) else Migration(migration)
        self.mapping = mapping = self.migration.settings
        src = self.migration.source_url
        self.sql = mysql_connect(src)  # converting: for writes
        self.raw = mysql_connect(src, raw=True)  # SELECT-shaped rows for the Transform
        self.sql.autocommit(False)
        self.raw.autocommit(True)
        self.schema = self.migration.schema
        self.transform = self.migration.transform
        self.client = self.migration.client
        self.state = self.migration.state
        self.control = Control(self.state.control)
        self.failures = self.state.sdk_failures
        self.lookup = _TruthLookup(src, self)
        self._inverses: dict[str, Any] = {}
        self.applier = Applier(
            self.transform, self.client[mapping.target_database], self.state, self.lookup
        )
        self.control_ttl = control_ttl
        self.freeze_wait = freeze_wait
        self.shadow_reads = shadow_reads
        self.shadow_mismatches = 0
        self.shadow_reads_done = 0
        self.secondary_failures = 0
        # Prometheus counters an application can expose (prometheus_client.generate_latest)
        self.registry = CollectorRegistry()
        self._m_shadow = Counter(
            "migrator_sdk_shadow_reads_total",
            "Shadow reads of MongoDB in dual_write",
            ["result"],
            registry=self.registry,
        )
        self._m_failures = Counter(
            "migrator_sdk_secondary_failures_total",
            "Secondary writes recorded for repair",
            ["store"],
            registry=self.registry,
        )
        self._m_frozen = Counter(
            "migrator_sdk_frozen_waits_total",
            "Writes that waited for the write switch's freeze",
            registry=self.registry,
        )
        self._doc: dict[str, Any] | None = None
        self._fetched = 0.0
        # one write at a time per instance (threads share it safely); reads of MySQL have
        # their own connection lock
        self._lock = threading.Lock()
        self._raw_lock = threading.Lock()
        self._column_defaults: dict[str, dict[str, Default]] = {}
        # the write fence (cutover/fence.py): register, beat, acknowledge freezes
        self._freeze_seen: tuple[Any, float] | None = None
        self._acked: str | None = None
        self.registration = Registration(self.state.writers)
        self._stop = threading.Event()
        self.registration.beat()
        self._beater = threading.Thread(
            target=self._beat_loop, args=(beat_seconds,), name="migrator-sdk-beat", daemon=True
        )
        self._beater.start()

    @classmethod
    def from_file(cls, path: str, **kw: Any) -> DualWriter:
        return cls(load_mapping(path), **kw)

    def close(self) -> None:
        self._stop.set()
        self._beater.join(timeout=5)
        self.registration.leave()
        self.sql.close()
        self.raw.close()
        if self._owns:
            self.migration.close()

    # -- the control document and the fence ---------------------------------------------------
    def control_doc(self, fresh: bool = False) -> dict[str, Any]:
        if fresh or self._doc is None or time.monotonic() - self._fetched > self.control_ttl:
            self._doc = self.control.get()
            self._fetched = time.monotonic()
        return self._doc

    def _frozen(self, doc: dict[str, Any]) -> bool:
        """Whether `doc`'s freeze holds writes: a freeze seen for `freeze_timeout` seconds of
        this writer's own clock is over (the switch that set it is gone: see fence.py)."""
        if not doc.get("freeze"):
            return False
        fid = doc.get("freeze_id")
        if self._freeze_seen is None or self._freeze_seen[0] != fid:
            self._freeze_seen = (fid, time.monotonic())
        timeout = float(doc.get("freeze_timeout") or 10.0)
        return time.monotonic() - self._freeze_seen[1] < timeout

    def _ack(self, doc: dict[str, Any]) -> None:
        """Called under the write lock: no write of this instance is in flight."""
        fid = doc.get("freeze_id")
        if fid and self._acked != fid:
            self._acked = fid
            with contextlib.suppress(Exception):  # the beat thread repeats it
                self.registration.beat(acknowledge=fid)

    def _beat_loop(self, every: float) -> None:
        # the control document is read more often than the beat is written: how soon a
        # freeze is acknowledged is most of the fence's share of the write pause
        look = min(every, CONTROL_POLL)
        last_beat = time.monotonic()
        while not self._stop.wait(look):
            try:
                doc = self.control.get()
                if doc.get("freeze") and doc.get("freeze_id") != self._acked:
                    # the next write sees the freeze at once (and acknowledges it itself),
                    # not when its cached copy expires
                    self._doc, self._fetched = doc, time.monotonic()
                    # a write in flight holds the lock: keep beating meanwhile (alive, not
                    # acknowledged), or a write stuck in MySQL for longer than the switch's
                    # writer timeout would make this writer look gone while it can still
                    # finish under the old order
                    while not self._lock.acquire(timeout=every):
                        self.registration.beat()
                        if self._stop.is_set():
                            return
                    try:
                        self._doc, self._fetched = doc, time.monotonic()
                        self._ack(doc)
                    finally:
                        self._lock.release()
                    last_beat = time.monotonic()
                elif time.monotonic() - last_beat >= every:
                    self.registration.beat()
                    last_beat = time.monotonic()
            except Exception:  # MongoDB away: the switch will see no beats
                continue

    def _writable(self) -> dict[str, Any]:
        doc = self.control_doc()
        if not self._frozen(doc):
            if doc.get("freeze"):  # an expired freeze: act on the order in force now
                doc = self.control_doc(fresh=True)
            return doc
        self._m_frozen.inc()
        deadline = time.monotonic() + self.freeze_wait
        while True:
            self._ack(doc)
            if time.monotonic() >= deadline:
                raise WritesFrozen(
                    f"writes are frozen for the write switch (phase {doc['phase']}) "
                    f"longer than {self.freeze_wait:g} s",
                    hint="retry the write",
                )
            time.sleep(FROZEN_POLL)
            doc = self.control_doc(fresh=True)
            if not self._frozen(doc):
                return doc

    # -- rows --------------------------------------------------------------------------------
    def _row(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        t = self.schema.table(table)
        cols = ", ".join(quote_ident(c) for c in t.column_names)
        cond = " AND ".join(f"{quote_ident(c)} = %s" for c in t.primary_key)
        with self._raw_lock:
            cur = self.raw.cursor()
            cur.execute(
                f"SELECT {cols} FROM {quote_ident(table)} WHERE {cond}",
                tuple(key[c] for c in t.primary_key),
            )
            r = cur.fetchone()
        return dict(zip(t.column_names, r, strict=True)) if r else None

    def _sql(self, table: str, op: str, key: dict[str, Any], values: dict[str, Any]) -> None:
        q = quote_ident
        cur = self.sql.cursor()
        if op == "insert":
            cols = list(values)
            cur.execute(
                f"INSERT INTO {q(table)} ({', '.join(map(q, cols))}) VALUES "
                f"({', '.join(['%s'] * len(cols))})",
                tuple(values[c] for c in cols),
            )
        elif op == "update":
            sets = ", ".join(f"{q(c)} = %s" for c in values)
            cond = " AND ".join(f"{q(c)} = %s" for c in key)
            cur.execute(
                f"UPDATE {q(table)} SET {sets} WHERE {cond}", (*values.values(), *key.values())
            )
        else:
            cond = " AND ".join(f"{q(c)} = %s" for c in key)
            cur.execute(f"DELETE FROM {q(table)} WHERE {cond}", tuple(key.values()))
        self.sql.commit()

    def _mongo(self, ev: ChangeEvent, *, mongo_first: bool = False) -> None:
        # Children CDC stored as waiting for a root this write creates: before the switch CDC
        # releases them from the root's own binlog event; after it the document written here
        # stands (a rebuild from MySQL, which lags, lost it) and adopts their rows
        self.applier.stored_pending = "adopt" if mongo_first else "leave"
        res = self.applier.apply([Transaction([ev], Position(), now())])
        if res.dead_letters:
            raise MigratorError(f"MongoDB refused the change of {ev.table} (see dead_letters)")

    def _secondary(self, what: str, fn: Callable[[], None], table: str, key: Any) -> None:
        for attempt in range(3):
            try:
                fn()
                return
            except Exception as exc:  # recorded for repair; the request itself succeeded
                if attempt == 2:
                    self.secondary_failures += 1
                    self._m_failures.labels(what).inc()
                    record = {
                        "store": what,
                        "table": table,
                        "key": key,
                        "at": now(),
                        "error": str(exc)[:500],
                        "repaired": False,
                    }
                    with_retry(functools.partial(self.failures.insert_one, record))
                time.sleep(0.05 * (attempt + 1))

    def _write(self, table: str, op: str, key: dict[str, Any], values: dict[str, Any]) -> None:
        with self._lock:
            doc = self._writable()
            order = doc.get("writes_to") or ["mysql"]
            if order[0] == "mysql":
                before = None if op == "insert" else self._row(table, key)
                self._sql(table, op, key, values)
                if "mongo" in order:
                    after = None if op == "delete" else self._row(table, key)
                    if before is None and after is None:
                        return  # no such row: MySQL changed nothing, and neither does MongoDB
                    ev = ChangeEvent(table, op, before, after)  # type: ignore[arg-type]
                    self._secondary("mongo", lambda: self._mongo(ev), table, key)
            elif table not in self._mapped:
                self._sql(table, op, key, values)  # not migrated: MySQL stays its home
            else:
                # MongoDB is the source of truth: the row is derived from its document, and
                # MySQL follows through reverse sync (`cdc --follow`), in MongoDB's commit
                # order, so a write here can never be reordered against another writer's
                self._refuse_source_reads(table, op, values)
                before = self._mongo_row(table, key)
                if op == "insert" and before is not None:
                    raise MigratorError(
                        f"{table} {key!r} exists already (its document is in MongoDB)",
                        hint="update it instead (as MySQL's duplicate key would say)",
                    )
                if op != "insert" and before is None:
                    self._refuse_mysql_only(table, op, key)
                    return  # as MySQL's UPDATE/DELETE of no row: nothing to change
                after = None if op == "delete" else self._predict(table, before, key, values)
                for image in (before, after):
                    if image is not None:
                        self._refuse_orphan(table, image)
                self.lookup.mongo_first = True  # N:1 sub-documents from MongoDB too
                try:
                    # an update sets only its own columns: the rest of the image was read from
                    # the document and may be older than another writer's change since
                    only = frozenset(values) if op == "update" else None
                    self._mongo(
                        ChangeEvent(table, op, before, after, only=only),  # type: ignore[arg-type]
                        mongo_first=True,
                    )
                finally:
                    self.lookup.mongo_first = False

    def _mongo_row(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The row as MongoDB holds it now (the source of truth after the switch): from the
        document of its own collection, or from the array element that holds it."""

        db = self.client[self.mapping.target_database]
        t = self.schema.table(table)
        raw = {c: _raw(key[c]) for c in t.primary_key}
        for plan in self.transform.collections:
            if plan.table.name == table:
                doc_id = plan.doc_id(tuple(raw.get(c) for c in plan.root.columns))
                found = db[plan.name].find_one({"_id": doc_id})
                if found is not None:
                    return _raw_row(self._inverse(plan).rows(found).root.values)
        for plan in self.transform.collections:
            for e in plan.embeds:
                if e.view.table.name != table or not e.many:
                    continue
                match, flt = {}, {}
                for c in t.primary_key:
                    f = e.view.field_for(c)
                    if f is not None:
                        match[f.name] = f.convert(raw[c])
                for cc, rc in zip(e.child_columns, e.parent_columns, strict=True):
                    if cc in raw and rc in plan.pk:  # the parent document's own key
                        i = plan.pk.index(rc)
                        path = "_id" if len(plan.pk) == 1 else f"_id.{rc}"
                        flt[path] = plan.id_converters[i](raw[cc])
                flt[e.name] = {"$elemMatch": match}
                found = db[plan.name].find_one(flt)
                if found is None:
                    continue
                rows = self._inverse(plan).rows(found).children[e.name]
                for r in rows:
                    if all(_same(r.values.get(c), key[c]) for c in t.primary_key):
                        return _raw_row(r.values)
        return None

    def _inverse(self, plan: CollectionPlan) -> Any:
        from migrator.reverse.inverse import DocumentInverse

        inv = self._inverses.get(plan.name)
        if inv is None:
            # the source's time zone, as reverse sync and the Transform use it
            inv = DocumentInverse(plan, self.mapping.source.timezone)
            self._inverses[plan.name] = inv
        return inv

    def _n1_from_mongo(self, plan: CollectionPlan, e: EmbedPlan, root_row: Row) -> Any:
        """The N:1 sub-document for a root row, from the parent's own document (MongoDB is the
        truth after the switch; MySQL's row may lag behind reverse sync). _NOT_HELD when no
        unfiltered collection of the parent table holds every column the sub-document needs
        (MySQL stays the home of such columns: reverse sync never writes them)."""

        parent = e.view.table.name
        values = plan.root.values(root_row, e.parent_columns)
        if any(v is None for v in values):
            return None
        db = self.client[self.mapping.target_database]
        for owner in self.transform.collections:
            if owner.table.name != parent or owner.spec.filter:
                continue
            flt: dict[str, Any] = {}
            for cc, v in zip(e.child_columns, values, strict=True):
                if cc in owner.pk:
                    i = owner.pk.index(cc)
                    flt["_id" if len(owner.pk) == 1 else f"_id.{cc}"] = owner.id_converters[i](v)
                elif (f := owner.root.field_for(cc)) is not None:
                    flt[f.name] = f.convert(v)
                else:
                    break
            else:
                found = db[owner.name].find_one(flt)
                if found is None:
                    return None  # no such parent in the source of truth
                row = _raw_row(self._inverse(owner).rows(found).root.values)
                # a column the owner holds through a type override may not come back as the
                # row MySQL keeps (6.5 for DECIMAL 6.50): only default conversions are exact
                exact = {f.column for f in owner.root.fields if f.type_name == "auto"}
                exact |= set(owner.pk)
                if all(c in row and c in exact for c in e.view.columns):
                    return e.view.build(tuple(row[c] for c in e.view.columns))
        return _NOT_HELD

    def _refuse_source_reads(self, table: str, op: str, values: dict[str, Any]) -> None:
        """Changes the applier can only make by reading MySQL again (a new primary key, a
        changed join column, a filtered collection) would bring MySQL's possibly older rows
        into the source of truth: refused after the switch, with the reason."""
        t = self.schema.table(table)
        why = ""
        unheld = set(values) - self._held_columns(table)
        if unheld:
            # reverse sync writes MySQL from the documents: a value no document holds would
            # never reach it (MySQL-first routing wrote it to MySQL)
            why = f"it writes {', '.join(sorted(unheld))}, which no document holds"
        if op != "update":
            values = {}
        if set(values) & set(t.primary_key):
            why = "it changes the primary key"
        for plan in self.transform.collections:
            copies = [n for n in plan.nodes() if not n.simple and n.view.table.name == table]
            if copies:
                where = ", ".join(f"{plan.name}.{'.'.join(n.path) or n.name}" for n in copies)
                why = why or (
                    f"{table} rows are nested in {where} (read-only copies, or arrays "
                    "inside arrays), which the SDK would rebuild from MySQL"
                )
            if plan.table.name == table:
                if plan.spec.filter:
                    why = why or f"collection {plan.name!r} has a filter"
                joins = {c for e in plan.embeds if e.many or not e.simple for c in e.parent_columns}
                if set(values) & joins:
                    why = why or f"it changes a column {plan.name!r} embeds rows by"
                if op == "insert" and any(not e.simple for e in plan.embeds):
                    why = why or f"a new {plan.name!r} document nests rows read from MySQL"
            for e in plan.embeds:
                if e.view.table.name != table or not e.many:
                    continue
                if set(values) & set(e.child_columns):
                    why = why or f"it moves the row to another {plan.name!r} document"
                if sorted(e.parent_columns) != sorted(plan.pk):
                    why = why or (
                        f"{plan.name!r} embeds {table} by a column that is not its key, "
                        "so the documents are rebuilt from MySQL"
                    )
        if why:
            raise MigratorError(
                f"this change of {table} is not supported through the SDK after the write "
                f"switch: {why}, and MongoDB is the source of truth now",
                hint="write the documents in MongoDB directly (reverse sync brings MySQL along)",
            )

    def _held_columns(self, table: str) -> set[str]:
        """The columns of `table` that some document holds (keys and join columns too)."""
        held: set[str] = set()
        for plan in self.transform.collections:
            if plan.table.name == table:
                held |= {f.column for f in plan.root.fields} | set(plan.pk)
            for e in plan.embeds:
                if e.view.table.name == table and e.many:
                    held |= {f.column for f in e.view.fields} | set(e.child_columns)
        return held

    def _refuse_mysql_only(self, table: str, op: str, key: dict[str, Any]) -> None:
        """A row MySQL holds and no MongoDB document does (a child of a parent outside a
        filter, a row waiting for its parent): this writer cannot change it through MongoDB,
        and must not be told it did."""
        if self._row(table, key) is not None:
            raise MigratorError(
                f"this {op} of {table} {key!r} is not supported through the SDK after the "
                "write switch: the row is in MySQL but in no MongoDB document (outside a "
                "collection's filter, or waiting for its parent)",
                hint="write it in MySQL directly: no document holds it, so reverse sync "
                "leaves it alone",
            )

    def _refuse_orphan(self, table: str, image: dict[str, Any]) -> None:
        """An array element whose parent document does not exist (a row's image before or
        after the change) waits for it: writing it would land by a rebuild of the parent from
        MySQL, which lags, and changing a waiting row would be undone when the parent adopts
        it. Refused, as MySQL's foreign key would refuse it (write the parent first)."""
        db = self.client[self.mapping.target_database]
        roles = self.applier.roles.get(table)
        for cr in roles.children if roles else ():
            if not cr.parent_is_pk:
                continue  # refused before (_refuse_source_reads)
            doc_id = parent_id(cr, image)
            if (
                doc_id is not None
                and db[cr.plan.name].count_documents({"_id": doc_id}, limit=1) == 0
            ):
                raise MigratorError(
                    f"this change of {table} is not supported through the SDK after "
                    f"the write switch: its parent document {cr.plan.name} {doc_id!r} "
                    "does not exist in MongoDB",
                    hint="write the parent first (as MySQL's foreign key requires)",
                )

    @property
    def _mapped(self) -> set[str]:
        """Tables whose rows documents hold (after the switch their truth is MongoDB's): roots,
        one-level embeds, and arrays of rows at any depth. A table only copied (a nested
        sub-document, merged fields, an array of values) keeps its truth in MySQL."""
        out = set()
        for p in self.transform.collections:
            out.add(p.table.name)
            out |= {e.view.table.name for e in p.embeds if e.simple}
            out |= {
                n.view.table.name
                for n in p.nodes()
                if n.many and not n.merge and n.values_path is None
            }
        return out

    def _predict(
        self,
        table: str,
        before: dict[str, Any] | None,
        key: dict[str, Any],
        values: dict[str, Any],
    ) -> dict[str, Any]:
        """The row after the change, without MySQL having run it (MongoDB writes first); a
        column an insert leaves out gets MySQL's default, as MySQL-first routing would."""
        base = dict(before) if before is not None else self._defaults(table, {**key, **values})
        for c, v in {**key, **values}.items():
            base[c] = v if isinstance(v, bytes | str) or v is None else str(v).encode()
        return base

    def _defaults(self, table: str, given: dict[str, Any]) -> dict[str, Any]:
        """MySQL's values for the columns an insert leaves out (refused where MySQL computes
        one per row or would refuse the insert: nothing is written then)."""
        t = self.schema.table(table)
        with self._raw_lock:
            if table not in self._column_defaults:
                self._column_defaults[table] = read_defaults(
                    self.raw, self.schema.database, table, maria=is_mariadb(self.raw)
                )
        known = self._column_defaults[table]
        row: dict[str, Any] = {}
        for c in t.column_names:
            d = known.get(c, Default())
            if c in given or t.column(c).generated:
                row[c] = None  # given, or MySQL's to compute (never written)
            elif d.computed or d.missing:
                why = (
                    f"whose default MySQL computes per row ({d.computed}): MongoDB is written "
                    "first and cannot know it"
                    if d.computed
                    else "which is NOT NULL without a default: MySQL would refuse it"
                )
                raise MigratorError(
                    f"the insert into {table} leaves out {c}, {why}",
                    hint=f"give {c} a value in the insert",
                )
            else:
                row[c] = d.value
        return row

    def insert(self, table: str, row: dict[str, Any]) -> None:
        t = self.schema.table(table)
        key = {c: row[c] for c in t.primary_key}
        self._write(table, "insert", key, row)

    def update(self, table: str, key: dict[str, Any], changes: dict[str, Any]) -> None:
        self._write(table, "update", key, changes)

    def delete(self, table: str, key: dict[str, Any]) -> None:
        self._write(table, "delete", key, {})

    # -- reads -------------------------------------------------------------------------------
    def _from_mysql(self, collection: str, doc_id: Any) -> dict[str, Any] | None:
        from migrator.verify.checker import id_to_key

        plan = self.transform.collection(collection)
        with self._raw_lock:
            reader = ChunkReader(self.raw, plan)
            rows = reader.read_by_keys([id_to_key(plan, doc_id)])
            docs = plan.documents(rows, reader.read_embeds(rows)) if rows else []
        return docs[0] if docs else None

    def get(self, collection: str, doc_id: Any) -> dict[str, Any] | None:
        doc = self.control_doc()
        if doc.get("reads_from") == "mongo":
            return self.client[self.mapping.target_database][collection].find_one({"_id": doc_id})
        primary = self._from_mysql(collection, doc_id)
        if self.shadow_reads and doc.get("phase") == "dual_write":
            shadow = self.client[self.mapping.target_database][collection].find_one({"_id": doc_id})
            self.shadow_reads_done += 1
            if (shadow is None) != (primary is None) or (
                shadow is not None and doc_hash(shadow) != doc_hash(primary)
            ):
                self.shadow_mismatches += 1
                self._m_shadow.labels("mismatch").inc()
            else:
                self._m_shadow.labels("match").inc()
        return primary


_NOT_HELD = object()


class _TruthLookup(SourceLookup):
    """The SDK's applier reads N:1 parents from MongoDB when MongoDB is the source of truth,
    and from MySQL (as CDC does) before the switch."""

    def __init__(self, url: Any, writer: DualWriter) -> None:
        super().__init__(url)
        self.writer = writer
        self.mongo_first = False

    def embedded(self, plan: CollectionPlan, e: EmbedPlan, root_row: Row) -> Any:
        if self.mongo_first and not e.many:
            found = self.writer._n1_from_mongo(plan, e, root_row)
            if found is not _NOT_HELD:
                return found
        return super().embedded(plan, e, root_row)


def _raw(v: Any) -> Any:
    """An application's value in the form a SELECT returns (what the Transform converts)."""
    return v if isinstance(v, bytes | str) or v is None else str(v).encode()


def _raw_row(values: dict[str, Any]) -> dict[str, Any]:
    return {c: _raw(v) for c, v in values.items()}


def _same(a: Any, b: Any) -> bool:
    return a == b or str(a) == str(b)
