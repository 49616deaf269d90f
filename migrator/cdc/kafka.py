"""`migrator cdc --source debezium`: a Kafka consumer group over Debezium topics.

Topics are `<prefix>.<db>.<table>` for every mapped table. Offsets are committed only after
MongoDB acknowledged the batch they cover, so a crash replays (idempotently) instead of losing.
Several processes with the same `--group` share the partitions: that is how CDC scales past one
machine.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from migrator.cdc.applier import Applier
from migrator.cdc.binlog import DDL
from migrator.cdc.debezium import DebeziumDecoder, DebeziumSettings, Record
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.loop import Boundary, CdcSummary, ChangeLoop, Idle, LiveStats, LoopSettings, Unit
from migrator.errors import ConfigError, ConnectError, ConversionError
from migrator.model.events import ChangeEvent, Position, Transaction, reached
from migrator.model.secrets import read_secret_file
from migrator.model.settings import KafkaSecuritySpec, Mapping
from migrator.runtime import Migration, opened
from migrator.state.store import StateStore

log = logging.getLogger("migrator.cdc.kafka")


def _json(b: bytes | None) -> Any:
    if b is None:
        return None
    try:
        return json.loads(b)
    except ValueError:
        return b.decode("utf-8", "replace")


def _pause(consumer: Any, stop: threading.Event, wait: Any) -> None:
    """Pause every partition while `wait()` says it waited (it waits at most a second at a
    time), polling to keep the group membership; then go back to the committed offsets."""
    parts = list(consumer.assignment())
    if parts:
        consumer.pause(*parts)
    while not stop.is_set() and wait():
        consumer.poll(timeout_ms=100)  # heartbeats; paused partitions return nothing
    for tp in consumer.assignment():
        committed = consumer.committed(tp)
        if committed is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, committed)
    consumer.resume(*consumer.assignment())


@dataclass(frozen=True)
class _Point:
    """The last rollback to MySQL-first: the source's position then, and whose binlog it is."""

    position: Position
    server: int | None

    @classmethod
    def read(cls, state: StateStore) -> _Point | None:
        doc = state.cdc_rollback()
        return cls(Position.from_dict(doc["position"]), doc.get("server_id")) if doc else None


def _before(ev: ChangeEvent, point: _Point | None) -> bool:
    """Logged before the last rollback to MySQL-first: a change of the time MongoDB was the
    truth (reverse sync's copy of it) or one applied before the switch; skipped, as the
    binlog source starts at that rollback's position (runner.after_rollback). Only a record
    of the same server's binlog (server_id, file name) can be placed against the point: one
    read from a replica or after a failover is applied (an echo applied converges as CDC
    catches up; a change skipped would be lost)."""
    if point is None or ev.origin is None or point.position.file is None:
        return False
    same_server = point.server is not None and ev.origin_server == point.server
    same_log = (ev.origin.file or "").rsplit(".", 1)[0] == point.position.file.rsplit(".", 1)[0]
    return same_server and same_log and not reached(ev.origin, point.position)


@dataclass(frozen=True)
class KafkaSource:
    """Where the Debezium topics are and how to read them: the mapping's `debezium:` settings,
    with what a caller (the CLI's --kafka-* flags) gives over them."""

    bootstrap: str
    prefix: str
    group: str
    decoding: DebeziumSettings
    security: dict[str, Any]

    @classmethod
    def of(
        cls,
        mapping: Mapping,
        *,
        bootstrap: str | None = None,
        prefix: str | None = None,
        group: str | None = None,
        security: dict[str, Any] | None = None,
    ) -> KafkaSource:
        dbz = mapping.debezium
        bootstrap, prefix = bootstrap or dbz.bootstrap, prefix or dbz.topic_prefix
        if not bootstrap or not prefix:
            raise ConfigError(
                "--source debezium needs --kafka-bootstrap and --topic-prefix "
                "(or debezium.bootstrap / debezium.topic_prefix in the mapping)"
            )
        return cls(
            bootstrap=bootstrap,
            prefix=prefix,
            group=group or dbz.group or f"migrator-{mapping.target_database}",
            decoding=DebeziumSettings(
                dbz.time_precision_mode, dbz.decimal_handling_mode, dbz.binary_handling_mode
            ),
            security=security_settings(mapping, {}) if security is None else security,
        )


def security_settings(mapping: Mapping, overrides: dict[str, Any]) -> dict[str, Any]:
    """KafkaConsumer's security arguments: debezium.security of the mapping with `overrides`
    (the --kafka-* flags; `sasl_password_file` read here) given over it."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if "sasl_password_file" in given:
        given["sasl_password"] = read_secret_file(
            given.pop("sasl_password_file"), "--kafka-sasl-password-file"
        )
    try:
        spec = KafkaSecuritySpec.model_validate({**mapping.debezium.security.model_dump(), **given})
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ConfigError(
            f"Kafka security settings (--kafka-*, debezium.security): {problems}"
        ) from None
    return spec.kafka_python()


def run_debezium(
    migration: Migration | Mapping,
    *,
    source: KafkaSource | None = None,
    bootstrap: str | None = None,
    prefix: str | None = None,
    group: str | None = None,
    mode: str = "follow",
    stop: threading.Event | None = None,
    on_batch: Callable[[LiveStats], None] | None = None,
    poll_ms: int = 500,
    pending_timeout: float = 600.0,
    dry_run: bool = False,
) -> CdcSummary:
    """Apply the Debezium topics of `source` (default: the mapping's `debezium:` settings,
    with `bootstrap`, `prefix` and `group` given over them).
    `dry_run` decodes, transforms and builds every operation but writes nothing: no document,
    no offset committed, no checkpoint (the pipeline's own rate, as the binlog source's)."""
    with opened(migration, claim_state=not dry_run) as mig:
        return _run_debezium(
            mig,
            source or KafkaSource.of(mig.settings, bootstrap=bootstrap, prefix=prefix, group=group),
            mode=mode,
            stop=stop or threading.Event(),
            on_batch=on_batch,
            poll_ms=poll_ms,
            pending_timeout=pending_timeout,
            dry_run=dry_run,
        )


def _run_debezium(
    mig: Migration,
    source: KafkaSource,
    *,
    mode: str,
    stop: threading.Event,
    on_batch: Callable[[LiveStats], None] | None,
    poll_ms: int,
    pending_timeout: float,
    dry_run: bool,
) -> CdcSummary:
    lookup = SourceLookup(mig.source_url)
    applier = Applier(
        mig.transform,
        mig.target,
        mig.state,
        lookup,
        pending_bound_seconds=pending_timeout,
        unordered=True,  # a topic per table: no order across tables
        dry_run=dry_run,
    )
    topics = [f"{source.prefix}.{mig.source_database}.{t}" for t in sorted(applier.tables)]
    summary = CdcSummary(mode=mode, start={"group": source.group, "topics": topics})
    stream = DebeziumStream(
        mig, source, topics, summary, stop=stop, poll_ms=poll_ms, dry_run=dry_run
    )
    log.info(
        "debezium consumer starting",
        extra={"bootstrap": source.bootstrap, "group": source.group, "topics": topics},
    )
    settings = LoopSettings(
        mode=mode,
        dry_run=dry_run,
        batch_events=2000,
        batch_seconds=0.1,
        max_events=1_000_000,  # a batch is one poll (at most max_poll_records records)
        on_batch=on_batch,
    )
    try:
        return ChangeLoop(
            mig,
            stream,
            applier,
            settings,
            stop=stop,
            summary=summary,
            live_fields={"source": "debezium", "group": source.group},
        ).run()
    finally:
        lookup.close()


class DebeziumStream:
    """Debezium's topics of the mapped tables, read by a consumer group; offsets are committed
    only after MongoDB acknowledged what a poll read (see loop.py)."""

    source = "debezium"
    batches_at_boundaries = True  # committing a poll's offsets covers all it read

    def __init__(
        self,
        mig: Migration,
        source: KafkaSource,
        topics: list[str],
        summary: CdcSummary,
        *,
        stop: threading.Event,
        poll_ms: int,
        dry_run: bool,
    ) -> None:
        self.mig, self.kafka, self.topics, self.summary = mig, source, topics, summary
        self.state, self.stop, self.poll_ms, self.dry_run = mig.state, stop, poll_ms, dry_run
        self.decoder = DebeziumDecoder(mig.schema, source.decoding)
        self.consumer: Any = None
        self.offsets: dict[str, int] = {}  # read since the last acknowledgement
        self.targets: dict[Any, int] = {}  # --until-caught-up: each partition's end
        self.last_empty = False  # the last poll found nothing
        self.idle_polls = 0
        self.since_rollback = _Point.read(self.state)

    def _open(self) -> Any:
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        security = self.kafka.security
        try:
            c = KafkaConsumer(
                bootstrap_servers=self.kafka.bootstrap,
                group_id=self.kafka.group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                key_deserializer=_json,
                value_deserializer=_json,
                session_timeout_ms=6000,
                heartbeat_interval_ms=2000,
                max_poll_records=2000,
                client_id="migrator",
                metadata_max_age_ms=5000,
                **(security or {}),
            )
        except KafkaError as exc:  # kafka-python 3 names "no brokers" differently than 2.x
            raise ConnectError(
                f"cannot reach Kafka at {self.kafka.bootstrap} (--kafka-bootstrap, "
                f"security.protocol {(security or {}).get('security_protocol', 'PLAINTEXT')}): "
                f"{type(exc).__name__}"
            ) from None
        c.subscribe(topics=self.topics)
        return c

    def units(self) -> Iterator[Unit]:
        from kafka.errors import KafkaError

        if self.consumer is None:
            self.consumer = self._open()
        else:
            self._rewind()  # what was read and not acknowledged is read again
        while True:
            try:
                polled = self.consumer.poll(timeout_ms=self.poll_ms)
            except KafkaError as exc:
                raise ConnectError(f"Kafka at {self.kafka.bootstrap}: {exc}") from None
            self.last_empty = not polled
            self.idle_polls = 0 if polled else self.idle_polls + 1
            for tp, records in polled.items():
                for r in records:
                    txn = self._decode(r)
                    if txn is not None:
                        yield txn
                    self.offsets[f"{tp.topic}[{tp.partition}]"] = r.offset + 1
            for tp in self.consumer.assignment():
                if tp not in self.targets:
                    hw = self.consumer.highwater(tp)  # known after a fetch (STACK.md)
                    if hw is not None:
                        self.targets[tp] = hw
            yield Boundary() if polled else Idle()

    def _decode(self, r: Any) -> Transaction | None:
        rec = Record(
            topic=r.topic, key=r.key, value=r.value, partition=r.partition, offset=r.offset
        )
        pos = Position(file=f"{r.topic}[{r.partition}]", pos=r.offset + 1)
        try:
            ev = self.decoder.decode(rec)
        except ConversionError as exc:
            self.summary.dead_letters += 1
            if not self.dry_run:
                self.state.dead_letter(
                    source="debezium",
                    collection="",
                    key=r.key,
                    reason=exc.message,
                    payload=r.value,
                    position=pos.to_dict(),
                )
            return None
        if ev is None:
            return None
        if _before(ev, self.since_rollback):
            self.summary.skipped += 1
            return None
        return Transaction([ev], pos, ev.commit_time)

    def acknowledge(self, batch: list[Transaction]) -> None:
        if not self.offsets:
            return
        self.consumer.commit()  # what the consumer read, all of it applied
        self.state.save_cdc_checkpoint(
            {"kafka": self.offsets, "group": self.kafka.group}, source="debezium"
        )
        self.offsets = {}

    def quiet(self, idle: Idle) -> None:
        """Kafka offsets are committed with each batch: nothing more to keep."""

    def suspend(self, wait: Callable[[], bool]) -> None:
        if self.consumer is None:
            while wait():
                pass
        else:
            _pause(self.consumer, self.stop, wait)
            self.offsets = {}
        self.targets.clear()
        self.since_rollback = _Point.read(self.state)

    def _rewind(self) -> None:
        for tp in self.consumer.assignment():
            committed = self.consumer.committed(tp)
            if committed is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, committed)
        self.offsets = {}

    def caught_up(self) -> str | None:
        if self.consumer is None or not self.last_empty:
            return None
        parts = self.consumer.assignment()
        if not parts:
            return "no partitions assigned (no topics match)" if self.idle_polls > 40 else None
        done = all(
            tp in self.targets and self.consumer.position(tp) >= self.targets[tp] for tp in parts
        )
        return "caught up" if done else None

    def lag_is_zero(self) -> bool:
        return self.last_empty

    def apply_ddl(self, ddl: DDL) -> None:  # Debezium's schema changes are not read
        raise AssertionError("the Debezium stream yields no DDL")

    def status(self) -> dict[str, Any]:
        return {"source": "debezium"}

    def end(self) -> dict[str, Any]:
        if self.consumer is None:
            return {"offsets": {}}
        return {
            "offsets": {
                f"{tp.topic}[{tp.partition}]": self.consumer.position(tp)
                for tp in self.consumer.assignment()
            }
        }

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close(autocommit=False)
