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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from migrator.cdc.applier import Applier
from migrator.cdc.debezium import DebeziumDecoder, DebeziumSettings, Record
from migrator.cdc.lookup import SourceLookup
from migrator.cdc.roles import table_roles
from migrator.cdc.runner import (
    CdcSummary,
    Liveness,
    LiveStats,
    truth_stop_reason,
    wait_while_copying,
)
from migrator.errors import ConfigError, ConnectError, ConversionError
from migrator.model.events import ChangeEvent, Position, Transaction, reached
from migrator.model.secrets import read_secret_file
from migrator.model.settings import KafkaSecuritySpec, Mapping
from migrator.reverse.runner import run_reverse
from migrator.runtime import Migration, opened
from migrator.state.store import StateStore, now

log = logging.getLogger("migrator.cdc.kafka")


def _json(b: bytes | None) -> Any:
    if b is None:
        return None
    try:
        return json.loads(b)
    except ValueError:
        return b.decode("utf-8", "replace")


def _pause_for_copy(
    consumer: Any, state: StateStore, live: Liveness, stop: threading.Event, mode: str
) -> None:
    log.warning("a backfill is copying; CDC pauses until it ends")
    _pause(consumer, stop, lambda: wait_while_copying(state, live, stop, mode, max_wait=1.0))


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
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    mapping, transform, client, state = mig.settings, mig.transform, mig.client, mig.state
    bootstrap, group, security = source.bootstrap, source.group, source.security
    lookup = SourceLookup(mig.source_url)
    applier = Applier(
        transform,
        mig.target,
        state,
        lookup,
        pending_bound_seconds=pending_timeout,
        unordered=True,  # a topic per table: no order across tables
        dry_run=dry_run,
    )
    decoder = DebeziumDecoder(mig.schema, source.decoding)
    tables = sorted(table_roles(transform))
    db = mig.source_database
    topics = [f"{source.prefix}.{db}.{t}" for t in tables]

    def open_consumer() -> Any:
        try:
            c = KafkaConsumer(
                bootstrap_servers=bootstrap,
                group_id=group,
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
                f"cannot reach Kafka at {bootstrap} (--kafka-bootstrap, security.protocol "
                f"{(security or {}).get('security_protocol', 'PLAINTEXT')}): {type(exc).__name__}"
            ) from None
        c.subscribe(topics=topics)
        return c

    live = Liveness(state, mode=mode, source="debezium", group=group)
    if not dry_run:
        live.start()
        wait_while_copying(state, live, stop, mode)
    consumer = open_consumer()
    last_sweep = time.monotonic()
    summary = CdcSummary(mode=mode, start={"group": group, "topics": topics})
    stats = LiveStats(pending=applier.pending_count, dead_letters=state.dead_letter_count())
    targets: dict[Any, int] = {}
    t0 = time.monotonic()
    idle_polls = 0
    since_rollback = _Point.read(state)
    log.info(
        "debezium consumer starting",
        extra={"bootstrap": bootstrap, "group": group, "topics": topics},
    )
    try:
        while not stop.is_set():
            try:
                polled = consumer.poll(timeout_ms=poll_ms)
            except KafkaError as exc:
                raise ConnectError(f"Kafka at {bootstrap}: {exc}") from None
            txns: list[Transaction] = []
            offsets: dict[str, int] = {}
            for tp, records in polled.items():
                for r in records:
                    rec = Record(
                        topic=r.topic,
                        key=r.key,
                        value=r.value,
                        partition=r.partition,
                        offset=r.offset,
                    )
                    pos = Position(file=f"{r.topic}[{r.partition}]", pos=r.offset + 1)
                    try:
                        ev = decoder.decode(rec)
                    except ConversionError as exc:
                        summary.dead_letters += 1
                        if dry_run:
                            continue
                        state.dead_letter(
                            source="debezium",
                            collection="",
                            key=r.key,
                            reason=exc.message,
                            payload=r.value,
                            position=pos.to_dict(),
                        )
                        continue
                    if ev is not None and _before(ev, since_rollback):
                        summary.skipped += 1
                    elif ev is not None:
                        txns.append(Transaction([ev], pos, ev.commit_time))
                    offsets[f"{tp.topic}[{tp.partition}]"] = r.offset + 1
            for tp in consumer.assignment():
                if tp not in targets and mode == "until-caught-up":
                    hw = consumer.highwater(tp)  # known after a fetch (end_offsets lies, STACK.md)
                    if hw is not None:
                        targets[tp] = hw
            truth = None if dry_run else state.mongo_is_truth()
            if truth is not None:
                # the write switch: apply and commit nothing of this poll (checked after it,
                # so every record in it is from before a later flip)
                def reverse_a_while() -> bool:
                    """Reverse sync for a few seconds at a time (the consumer polls between);
                    True while MongoDB is still the source of truth."""
                    rev = run_reverse(
                        mapping,
                        transform,
                        client,
                        state,
                        stop=stop,
                        mode="follow" if mode == "follow" else "until-caught-up",
                        live=live,
                        max_seconds=5.0,
                    )
                    summary.reverse_changes += rev.changes
                    summary.dead_letters += rev.dead_letters
                    return mode == "follow" and state.mongo_is_truth() is not None

                if mode != "follow":
                    reverse_a_while()
                    summary.stopped = truth_stop_reason(truth) + "; reverse sync caught up"
                    break
                _pause(consumer, stop, reverse_a_while)
                since_rollback = _Point.read(state)
                targets.clear()
                continue
            if not dry_run and state.copy_in_progress() is not None:
                # the copy fence: apply nothing of this poll, commit nothing; the consumer
                # stays in its group (paused, polling to keep its membership) and goes back
                # to the committed offsets after the copy
                _pause_for_copy(consumer, state, live, stop, mode)
                targets.clear()
                continue
            if txns:
                res = applier.apply(txns)
                summary.events += res.events
                summary.transactions += len(txns)
                summary.dead_letters += res.dead_letters
                for (t, op), n in res.applied.items():
                    k = f"{t} {op}"
                    summary.applied[k] = summary.applied.get(k, 0) + n
                    stats.applied[(t, op)] = stats.applied.get((t, op), 0) + n
                last = txns[-1].commit_time
                stats.lag_seconds = (now() - last).total_seconds() if last else 0.0
            if polled:
                summary.batches += 1
                idle_polls = 0
                if not dry_run:
                    consumer.commit()  # only now: MongoDB acknowledged everything above
                    state.save_cdc_checkpoint({"kafka": offsets, "group": group}, source="debezium")
                    stats.checkpoint_at = now()
            else:
                idle_polls += 1
                stats.lag_seconds = 0.0
            if not dry_run and time.monotonic() - last_sweep > 5.0:
                last_sweep = time.monotonic()
                before = applier.expired
                applier.sweep_pending()
                if not polled:  # caught up: settle what cascades left dangling
                    applier.sweep_dangling()
                summary.dead_letters += applier.expired - before
            stats.events = summary.events
            stats.dead_letters = summary.dead_letters
            stats.pending = applier.pending_count
            elapsed = time.monotonic() - t0
            stats.events_per_sec = summary.events / elapsed if elapsed else 0.0
            if not dry_run:
                state.save_cdc_status(
                    lag_seconds=stats.lag_seconds,
                    events=summary.events,
                    dead_letters=stats.dead_letters,
                    pending=stats.pending,
                    mode=mode,
                    source="debezium",
                )
            if on_batch:
                on_batch(stats)
            if (
                mode == "until-caught-up"
                and consumer.assignment()
                and not polled
                and all(
                    tp in targets and consumer.position(tp) >= targets[tp]
                    for tp in consumer.assignment()
                )
            ):
                summary.stopped = "caught up"
                break
            if mode == "until-caught-up" and not consumer.assignment() and idle_polls > 40:
                summary.stopped = "no partitions assigned (no topics match)"
                break
        else:
            summary.stopped = "stopped by signal"
        summary.end = {
            "offsets": {
                f"{tp.topic}[{tp.partition}]": consumer.position(tp) for tp in consumer.assignment()
            }
        }
        if not dry_run and state.mongo_is_truth() is None:  # sweeps read MySQL as the truth
            before = applier.expired
            applier.sweep_pending()
            applier.sweep_dangling()
            summary.dead_letters += applier.expired - before
        summary.pending = applier.pending_count
    finally:
        if not dry_run:
            live.stop()
        consumer.close(autocommit=False)
        lookup.close()
    summary.seconds = time.monotonic() - t0
    summary.events_per_sec = summary.events / summary.seconds if summary.seconds else 0.0
    summary.lag_seconds = stats.lag_seconds
    return summary
