"""`migrator plan`: preflight checks and a dry description of what the migration will do.

Each finding is a Check with a level: ok, info, warn, or block. Any block makes the plan fail
(exit 1) and names the problem.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from bson import json_util

from migrator import logs
from migrator.backfill.worker import BSON_MAX
from migrator.errors import MigratorError
from migrator.model.placement import target_indexes
from migrator.model.schema import Schema
from migrator.model.secrets import SOURCE_PASSWORD_FILE_ENV
from migrator.model.settings import Mapping, with_password_file
from migrator.model.transform import CollectionPlan, Transform
from migrator.model.typerules import loss_notes
from migrator.model.urls import MySQLURL, parse_mysql_url
from migrator.preflight import trees
from migrator.reverse.inverse import lossy
from migrator.runtime import Migration, opened
from migrator.sink.mongo import host_of, uses_tls
from migrator.source.connection import as_text, query, quote_ident, session_cipher, variables
from migrator.source.connection import connect as mysql_connect
from migrator.source.privileges import PHASES, check_phases, read_grants
from migrator.source.reader import ChunkReader

if TYPE_CHECKING:
    from migrator.cdc.cascade import Cascades

log = logging.getLogger("migrator.plan")

ASSUMED_ROWS_PER_SEC = 20_000  # conservative; bench/backfill.py measures the real figure


@dataclass
class Check:
    name: str
    level: str  # ok | info | warn | block
    message: str


@dataclass
class CollectionReport:
    name: str
    table: str
    rows_estimate: int
    embeds: list[str]
    max_document_bytes_estimate: int | None = None
    sample: Any = None
    tree: list[str] = field(default_factory=list)  # the embed tree, drawn
    nodes: list[dict[str, Any]] = field(default_factory=list)  # per node: arrays, fan-out
    indexes: list[list[str]] = field(default_factory=list)  # created by backfill for CDC
    read_only_copies: list[str] = field(default_factory=list)  # after the write switch


@dataclass
class PlanReport:
    source: str
    target: str
    server_version: str = ""
    checks: list[Check] = field(default_factory=list)
    collections: list[CollectionReport] = field(default_factory=list)
    # phase -> {"ok", "missing"}; connection -> {"encrypted", ...}
    privileges: dict[str, Any] = field(default_factory=dict)
    connections: dict[str, Any] = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return any(c.level == "block" for c in self.checks)

    def add(self, name: str, level: str, message: str) -> None:
        self.checks.append(Check(name, level, message))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = not self.blocked
        d["blocking"] = [c.message for c in self.checks if c.level == "block"]
        for c in d["collections"]:
            c["sample"] = json_util.loads(json_util.dumps(c["sample"])) if c["sample"] else None
        return d


def _version_tuple(v: str) -> tuple[int, ...]:
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", v)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def preflight(
    migration: Migration | Mapping, *, assume_rows_per_sec: float = ASSUMED_ROWS_PER_SEC
) -> PlanReport:
    """Every check `migrator plan` makes; reads the source and the target, writes nothing."""
    with opened(migration, claim_state=False) as mig:
        log.info("plan started", extra={"collections": len(mig.settings.collections)})
        report = _preflight(mig, assume_rows_per_sec)
    # the findings are the report's (text logs leave them to it)
    for c in report.checks:
        level = _LOG_LEVEL[c.level]
        log.log(
            level,
            "plan check",
            extra={"check": c.name, "finding": c.level, "detail": c.message, **logs.ECHOED},
        )
    counts = {lv: sum(c.level == lv for c in report.checks) for lv in _LOG_LEVEL}
    log.info("plan finished", extra={"blocked": report.blocked, "checks": counts})
    return report


_LOG_LEVEL = {
    "ok": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "block": logging.WARNING,
}


def _preflight(mig: Migration, assume_rows_per_sec: float) -> PlanReport:
    mapping, src = mig.settings, mig.source_url
    report = PlanReport(source=str(src), target=host_of(mapping.target.url))
    conn = mig.connect_source()
    try:
        version = as_text(query(conn, "SELECT VERSION()")[0][0])
        report.server_version = version
        maria = "mariadb" in version.lower() or bool(variables(conn, "gtid_binlog_pos"))
        report.add("server", "ok", f"{'MariaDB' if maria else 'MySQL'} {version}")
        _binlog_checks(conn, report, maria, version)
        _tls_checks(conn, src, report)
        _replica_tls_checks(mapping, src, report)
        _privilege_checks(conn, mapping, report)
        schema = mig.schema
        try:
            transform: Transform | None = mig.transform
        except MigratorError as exc:
            report.add("mapping", "block", str(exc))
            transform = None
        _pk_checks(mapping, schema, report)
        if transform:
            _collection_reports(conn, transform, report)
            _cascade_checks(transform, schema, report)
            _type_checks(conn, transform, report)
            _reverse_checks(transform, report)
            _unnamed_elements(transform, report)
            _retention_check(conn, report, assume_rows_per_sec)
    finally:
        conn.close()
    _target_checks(mig, report)
    return report


def _binlog_checks(conn: Any, report: PlanReport, maria: bool, version: str) -> None:
    v = variables(
        conn,
        "log_bin",
        "binlog_format",
        "binlog_row_image",
        "binlog_row_metadata",
        "server_id",
        "gtid_mode",
        "log_bin_compress",
        "binlog_transaction_compression",
        "binlog_row_value_options",
    )
    if v.get("log_bin", "OFF").upper() != "ON":
        report.add(
            "binlog",
            "block",
            "the binary log is off (log_bin=OFF): CDC needs it; start the server with log-bin",
        )
        return
    fmt = v.get("binlog_format", "").upper()
    report.add(
        "binlog_format",
        "ok" if fmt == "ROW" else "block",
        f"binlog_format={fmt}" + ("" if fmt == "ROW" else ": must be ROW for CDC"),
    )
    image = v.get("binlog_row_image", "").upper()
    report.add(
        "binlog_row_image",
        "ok" if image == "FULL" else "block",
        f"binlog_row_image={image}"
        + ("" if image == "FULL" else ": must be FULL so every event carries whole rows"),
    )
    meta = v.get("binlog_row_metadata")
    if meta is not None:
        report.add(
            "binlog_row_metadata",
            "ok" if meta.upper() == "FULL" else "block",
            f"binlog_row_metadata={meta.upper()}"
            + (
                ""
                if meta.upper() == "FULL"
                else ": must be FULL, or the binlog carries no column names and no ENUM/SET values"
            ),
        )
    else:
        report.add(
            "binlog_row_metadata",
            "warn",
            f"server {version} has no binlog_row_metadata: column names come from the "
            "schema at read time, so DDL during CDC is risky",
        )
    # events the binlog source cannot read: it stops before them rather than skip rows
    for name, off in (
        ("log_bin_compress", "OFF"),
        ("binlog_transaction_compression", "OFF"),
        ("binlog_row_value_options", ""),
    ):
        value = v.get(name)
        if value is not None and value.upper() not in (off, "0"):
            report.add(
                name,
                "block",
                f"{name}={value.upper()}: CDC cannot read compressed or partial row events "
                f"(it would stop at the first one); set it to '{off}'",
            )
    if not maria and v.get("gtid_mode", "OFF").upper() != "ON":
        report.add("gtid", "info", "gtid_mode is OFF: CDC uses file/position checkpoints")


def _privilege_checks(conn: Any, mapping: Mapping, report: PlanReport) -> None:
    """Each phase's source privileges against the user's grants: the copy, CDC, verify and the
    switch cannot run without theirs (block); writes back to MySQL are needed only from
    dual_write on (warn)."""
    tables = sorted(mapping.tables())
    db = mapping.source_database
    try:
        grants = read_grants(conn)
    except Exception as exc:  # a server that hides SHOW GRANTS: say so, do not guess
        report.add("privileges", "warn", f"cannot read the source user's grants: {exc}")
        return
    phases = check_phases(grants, db, tables)
    if all(n.ok for n in phases):
        report.add(
            "privileges",
            "ok",
            "the source user has what every phase needs (" + ", ".join(PHASES) + ")",
        )
    for needs in phases:
        report.privileges[needs.phase] = {"ok": needs.ok, "missing": needs.missing}
        if needs.ok:
            continue
        level = "warn" if needs.phase in ("sdk writes", "reverse sync") else "block"
        report.add(
            f"privileges {needs.phase}",
            level,
            "the source user lacks " + "; ".join(needs.missing) + " (README: Least privilege)",
        )
    if grants.unread_roles:
        report.add(
            "privileges",
            "info",
            "privileges through roles " + ", ".join(grants.unread_roles) + " were not read "
            "(the user may not read their grants): a missing privilege above may be granted "
            "by them",
        )


def _tls_checks(conn: Any, src: MySQLURL, report: PlanReport) -> None:
    cipher = session_cipher(conn)
    mode = src.tls.effective_mode or "default"
    local = src.host in ("127.0.0.1", "localhost", "::1")
    report.connections["source"] = {"encrypted": bool(cipher), "cipher": cipher, "ssl_mode": mode}
    if cipher and src.tls.effective_mode in ("VERIFY_CA", "VERIFY_IDENTITY"):
        report.add("tls source", "ok", f"MySQL connections encrypted ({cipher}, ssl-mode={mode})")
    elif cipher:
        report.add(
            "tls source",
            "warn",
            f"MySQL connections encrypted ({cipher}) but the server's certificate is not checked "
            f"(ssl-mode={mode}): use ssl-mode=VERIFY_IDENTITY&ssl-ca=...",
        )
    else:
        report.add(
            "tls source",
            "warn",
            "MySQL connections are NOT encrypted"
            + (" (loopback: traffic stays on this machine)" if local else "")
            + ": add ?ssl-mode=VERIFY_IDENTITY&ssl-ca=/path/ca.pem to source.url",
        )


def _pk_checks(mapping: Mapping, schema: Schema, report: PlanReport) -> None:
    mapped = mapping.tables()
    for name in sorted(mapped):
        t = schema.tables.get(name)
        if t is not None and not t.primary_key:
            report.add("primary_key", "block", f"table {name!r} has no primary key")
    unmapped = [t for t in schema.tables.values() if t.name not in mapped and not t.primary_key]
    for t in unmapped:
        report.add("primary_key", "info", f"table {t.name!r} (not mapped) has no primary key")


def _collection_reports(conn: Any, transform: Transform, report: PlanReport) -> None:
    raw = mysql_connect(transform.mapping.source_url, raw=True)
    try:
        for p in transform.collections:
            rep = CollectionReport(
                name=p.name,
                table=p.table.name,
                rows_estimate=p.table.rows_estimate,
                embeds=[
                    f"{e.name} <- {e.view.table.name} ({'1:N' if e.many else 'N:1'})"
                    for e in p.embeds
                ],
            )
            stats = trees.node_stats(conn, p)
            rep.tree = trees.draw(p)
            rep.nodes = [s.to_dict() for s in stats]
            rep.indexes = target_indexes(p)
            rep.read_only_copies = trees.copies(p)
            rep.max_document_bytes_estimate = trees.document_size(p, stats)
            _tree_checks(p, stats, rep, report)
            if rep.max_document_bytes_estimate and rep.max_document_bytes_estimate > BSON_MAX // 2:
                report.add(
                    "document_size",
                    "warn",
                    f"{p.name}: a document could reach ~{rep.max_document_bytes_estimate >> 20}"
                    " MiB (MongoDB's limit is 16 MiB; larger ones go to the dead-letter "
                    "collection)",
                )
            reader = ChunkReader(raw, p)
            rows = reader.sample(1)
            if rows:
                try:
                    rep.sample = p.documents(rows, reader.read_embeds(rows))[0]
                except MigratorError as exc:
                    report.add("sample", "warn", f"{p.name}: the first row does not convert: {exc}")
            report.collections.append(rep)
            report.add(
                "rows", "info", f"{p.name}: ~{p.table.rows_estimate:,} rows in {p.table.name}"
            )
    finally:
        raw.close()


def _tree_checks(
    p: CollectionPlan, stats: list[trees.NodeStats], rep: CollectionReport, report: PlanReport
) -> None:
    for s in stats:
        if (s.largest_array or 0) > trees.BIG_ARRAY:
            report.add(
                "array_size",
                "warn",
                f"{p.name}.{s.path}: up to {s.largest_array:,} elements in one array "
                f"({s.table}); each change of one rewrites part of a large document: "
                "consider a collection of its own",
            )
    if rep.indexes:
        report.add(
            "indexes",
            "info",
            f"{p.name}: backfill creates indexes on "
            + "; ".join(", ".join(k) for k in rep.indexes)
            + " (CDC finds the documents holding an embedded row by them)",
        )
    if rep.read_only_copies:
        report.add(
            "copies",
            "info",
            f"{p.name}: read-only after the write switch (their truth is their own table; "
            "reverse sync does not write them back and the SDK refuses what it cannot keep): "
            + ", ".join(rep.read_only_copies),
        )


def _cascade_checks(transform: Transform, schema: Schema, report: PlanReport) -> None:
    """Foreign-key actions the binlog does not carry: CDC follows each one whose documents it
    can find (by the mapped foreign-key fields); any other blocks, with the reason."""
    from migrator.cdc.cascade import Cascades

    cascades = Cascades(transform)
    for rules in cascades.rules.values():
        for rule in rules:
            if rule.fk.table in cascades.relevant:
                report.add(
                    "fk_cascade",
                    "info",
                    f"{rule.describe()}: the binlog does not carry the rows it changes; CDC "
                    "finds the documents holding them and rebuilds them from the source",
                )
    for problem in cascades.problems():
        report.add("fk_cascade", "block", problem)
    _unseen_cascades(cascades, schema, report)


def _unseen_cascades(cascades: Cascades, schema: Schema, report: PlanReport) -> None:
    """Cascades into the documents CDC could not follow because it cannot see them: through a
    table whose foreign keys the source user cannot read (SHOW CREATE TABLE shows a table only
    to a user with a privilege on it), or from a table of another database (CDC reads only
    this database's changes)."""
    from migrator.cdc.cascade import ACTIONS

    db = schema.database
    for name in sorted(cascades.relevant):
        if name in schema.tables and name not in schema.unreadable:
            continue
        via = [
            r.describe() for r in cascades.rules.get(name, ()) if r.fk.table in cascades.relevant
        ]
        report.add(
            "fk_cascade",
            "block",
            ("; ".join(via) + ": " if via else "")
            + f"the source user cannot read the foreign keys of {db}.{name}, so CDC cannot "
            "know which changes cascade through it into the documents: grant SELECT ON "
            f"{quote_ident(db)}.{quote_ident(name)} (or ON {quote_ident(db)}.*) to the source "
            "user (README: Least privilege)",
        )
    for name in sorted(cascades.relevant & set(schema.tables)):
        for fk in schema.tables[name].outside_foreign_keys:
            for on, action in (("DELETE", fk.on_delete), ("UPDATE", fk.on_update)):
                if action not in ACTIONS:
                    continue
                report.add(
                    "fk_cascade",
                    "block",
                    f"{name}.{fk.name} ({', '.join(fk.columns)} -> {fk.ref_database}."
                    f"{fk.ref_table}) ON {on} {action}: changes of a table in another database "
                    f"change rows of {name} that the binlog does not carry, and CDC reads only "
                    f"the changes of {db}",
                )


def _reverse_checks(transform: Transform, report: PlanReport) -> None:
    """What reverse sync (after the write switch) cannot write back as rows, said before it."""
    for p in transform.collections:
        places = [(p.root, p.name, set(p.pk))]
        places += [
            (
                e.view,
                f"{p.name}.{'.'.join(e.path)}",
                set(e.view.table.primary_key) | set(e.child_columns),
            )
            for e in p.nodes()
            if e.many and not e.merge and e.values_path is None
        ]
        for view, where, keys in places:
            held = {f.column for f in view.fields} | keys
            for col in view.table.columns:
                if col.generated and col.name in held:
                    report.add(
                        "reverse",
                        "info",
                        f"{where}: {view.table.name}.{col.name} is a generated column; reverse "
                        "sync leaves it to MySQL to compute",
                    )
                elif not (col.name in held or col.nullable or col.has_default or col.generated):
                    report.add(
                        "reverse",
                        "warn",
                        f"{where}: {view.table.name}.{col.name} is NOT NULL without a default "
                        "and not in the documents, so a document (or element) created after "
                        "the write switch cannot become a row: reverse sync dead-letters it. "
                        "Map the column, or give it a default before the switch",
                    )


def _unnamed_elements(transform: Transform, report: PlanReport) -> None:
    """Arrays whose elements do not keep their row's key (nor a copy that gives it): after the
    switch reverse sync cannot tell which row an element is (CDC, which rebuilds nested
    arrays whole, does not need it)."""
    for p in transform.collections:
        for e in p.nodes():
            if not e.many or e.merge or e.values_path is not None:
                continue
            given = {f.column for f in e.view.fields} | set(e.child_columns)
            given |= {pc for sub in e.embeds if not sub.many for pc in sub.parent_columns}
            missing = [c for c in e.view.table.primary_key if c not in given]
            if missing:
                report.add(
                    "reverse",
                    "warn",
                    f"{p.name}.{'.'.join(e.path)}: the elements do not keep "
                    f"{e.view.table.name}.{', '.join(missing)} (its key): after the write "
                    "switch reverse sync cannot tell which row an element is, and a document "
                    "changing it is a dead letter. Keep the key column in the elements",
                )


def _type_checks(conn: Any, transform: Transform, report: PlanReport) -> None:
    for p in transform.collections:
        views = [(p.root, p.name)] + [
            (e.view, f"{p.name}.{'.'.join(e.path)}" if e.path else p.name) for e in p.nodes()
        ]
        for view, where in views:
            for f in view.fields:
                col = view.table.column(f.column)
                for note in loss_notes(col):
                    report.add(
                        "types",
                        "warn",
                        f"{where}.{f.name} ({view.table.name}.{col.name} "
                        f"{col.column_type}): {note}",
                    )
                inverse = lossy(col, f.type_name)
                if inverse:
                    # said before the switch: after it, reverse sync writes these values back
                    report.add(
                        "reverse",
                        "warn",
                        f"{where}.{f.name}: reverse sync cannot restore {view.table.name}."
                        f"{inverse} (after the write switch MySQL gets the converted value)",
                    )
                if col.is_bool and col.data_type == "tinyint":
                    rows = query(
                        conn,
                        f"SELECT 1 FROM {quote_ident(view.table.name)} WHERE "
                        f"{quote_ident(col.name)} NOT IN (0, 1) LIMIT 1",
                    )
                    if rows:
                        report.add(
                            "types",
                            "warn",
                            f"{where}.{f.name}: {view.table.name}.{col.name} is TINYINT(1) "
                            "but holds values other than 0/1; they become true "
                            "(map it with type: int to keep them)",
                        )


def _retention_check(conn: Any, report: PlanReport, rate: float) -> None:
    rows = sum(c.rows_estimate for c in report.collections)
    est = rows / rate if rate else 0
    v = variables(conn, "expire_logs_days", "binlog_expire_logs_seconds")
    secs = (
        float(v.get("binlog_expire_logs_seconds") or 0)
        or float(v.get("expire_logs_days") or 0) * 86400
    )
    if not secs:
        report.add(
            "binlog_retention",
            "ok",
            f"binlogs never expire; backfill estimated at {est / 60:.1f} min",
        )
    elif secs < 2 * est:
        report.add(
            "binlog_retention",
            "block",
            f"binlogs expire after {secs / 3600:.1f} h but the backfill is estimated at "
            f"{est / 3600:.1f} h: CDC would find its start position purged; raise "
            "binlog_expire_logs_seconds",
        )
    else:
        report.add(
            "binlog_retention",
            "ok",
            f"binlogs kept {secs / 3600:.1f} h; backfill "
            f"estimated at {est / 60:.1f} min at {rate:,.0f} rows/s",
        )


def _replica_tls_checks(mapping: Mapping, src: MySQLURL, report: PlanReport) -> None:
    for i, url in enumerate(mapping.throttle.replicas):
        setting = f"throttle.replicas[{i}]"
        replica = parse_mysql_url(url, setting).with_tls(src.tls)
        if not replica.password:
            replica = with_password_file(replica, SOURCE_PASSWORD_FILE_ENV)
        try:
            conn = mysql_connect(replica, database=False)
        except MigratorError as exc:
            report.add("throttle", "block", str(exc))
            continue
        try:
            cipher = session_cipher(conn)
        finally:
            conn.close()
        report.connections[setting] = {"encrypted": bool(cipher), "cipher": cipher}
        report.add(
            f"tls {setting}",
            "ok" if cipher else "warn",
            f"replica {replica.address}: "
            + (f"encrypted ({cipher})" if cipher else "NOT encrypted (add ssl-mode to its URL)"),
        )


def _kafka_tls_check(mapping: Mapping, report: PlanReport) -> None:
    dbz = mapping.debezium
    if not dbz.bootstrap:
        return
    protocol = dbz.security.protocol
    encrypted = protocol.endswith("SSL")
    report.connections["kafka"] = {"encrypted": encrypted, "security_protocol": protocol}
    report.add(
        "tls kafka",
        "ok" if encrypted else "warn",
        f"Kafka security.protocol={protocol}"
        + ("" if encrypted else ": not encrypted (debezium.security.protocol: SASL_SSL or SSL)"),
    )


def _target_checks(mig: Migration, report: PlanReport) -> None:
    mapping, client = mig.settings, mig.client
    info = client.admin.command("buildInfo")
    encrypted = uses_tls(client)
    report.connections["target"] = {"encrypted": encrypted}
    local = host_of(mapping.target.url).split(":")[0] in ("127.0.0.1", "localhost")
    report.add(
        "tls target",
        "ok" if encrypted else "warn",
        "MongoDB connections encrypted"
        if encrypted
        else "MongoDB connections are NOT encrypted"
        + (" (loopback)" if local else "")
        + ": add tls=true&tlsCAFile=/path/ca.pem to target.url",
    )
    _kafka_tls_check(mapping, report)
    report.add(
        "target",
        "ok",
        f"MongoDB {info.get('version', '?')} at "
        f"{host_of(mapping.target.url)}, database {mapping.target_database!r}",
    )
    db, state = mig.target, mig.state
    problem = state.identity_problem(mapping)
    if problem:
        report.add("state", "block", f"{problem}: {state.identity_hint(mapping)}")
    resuming = state.backfill_position() is not None
    for c in mapping.collections:
        if db[c.name].find_one({}, {"_id": 1}) is not None and not resuming:
            report.add(
                "target",
                "warn",
                f"collection {c.name!r} already holds documents: "
                "backfill upserts by _id and leaves the others (use --restart to clear)",
            )
    if resuming:
        report.add("state", "info", "a backfill was started before: `backfill` resumes it")
