"""A backfill worker reads and transforms the next chunk while the last one is written, and
records a chunk done only after its writes: pinned on the pipeline with a worker whose writes
wait on the test (no server is involved: this is the ordering logic only)."""

from __future__ import annotations

import threading
import time
from typing import Any

from migrator.backfill.worker import Chunk, ChunkResult, Page, PipelinedWrites


class Worker:
    """Two pages per chunk; a write waits until the test releases it."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.log: list[str] = []
        self.release = threading.Semaphore(0)
        self.fail_on = fail_on

    def prepare(self, chunk: Chunk, res: ChunkResult) -> Any:
        for i in range(2):
            self.log.append(f"read {chunk.id}.{i}")
            res.rows += 1
            yield Page(chunk.collection)

    def write(self, chunk: Chunk, page: Page) -> None:
        self.release.acquire()
        if chunk.id == self.fail_on:
            raise RuntimeError("refused")
        self.log.append(f"wrote {chunk.id}")

    def finish(self, chunk: Chunk, res: ChunkResult, t0: float) -> ChunkResult:
        self.log.append(f"done {chunk.id}")
        return res


def wait_for(condition: Any) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "the pipeline stopped"
        time.sleep(0.01)


def chunk(n: int) -> Chunk:
    return Chunk(f"c{n}", "orders", n, None, None)


def test_the_next_chunk_is_read_while_the_last_is_written_and_done_follows_its_writes():
    w = Worker()
    reports: list[tuple[str, Any, Any]] = []
    pipe = PipelinedWrites(w, lambda *r: reports.append(r))  # type: ignore[arg-type]
    t = threading.Thread(target=lambda: (pipe.submit(chunk(1)), pipe.submit(chunk(2))))
    t.start()
    # c1's first write waits: its second page is read meanwhile
    wait_for(lambda: "read c1.1" in w.log)
    assert not any(x.startswith("wrote") for x in w.log)
    # its second write waits: c2 is read meanwhile, and c1 is not done before its writes
    w.release.release()
    wait_for(lambda: "read c2.0" in w.log)
    assert w.log.count("wrote c1") == 1 and not reports
    for _ in range(3):
        w.release.release()
    t.join()
    pipe.close()
    assert [x for x in w.log if not x.startswith("read")] == [
        "wrote c1",
        "wrote c1",
        "done c1",
        "wrote c2",
        "wrote c2",
        "done c2",
    ]
    assert [(kind, res.chunk_id, res.rows) for kind, res, _ in reports] == [
        ("done", "c1", 2),
        ("done", "c2", 2),
    ]


def test_a_failed_write_is_reported_and_stops_the_reads():
    w = Worker(fail_on="c1")
    reports: list[tuple[str, Any, Any]] = []
    pipe = PipelinedWrites(w, lambda *r: reports.append(r))  # type: ignore[arg-type]
    w.release.release()
    assert pipe.submit(chunk(1)) is False or pipe.submit(chunk(2)) is False
    pipe.close()
    assert reports[0][0] == "error" and "refused" in reports[0][2]
    assert not [r for r in reports if r[0] == "done"]
