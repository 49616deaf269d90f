"""An application process for the cutover tests: threads sharing one DualWriter (default
settings) write hot rows, inserts, updates and deletes until a stop file appears, and log
every acknowledged write as a JSON line.

    python -m tests.integration.app_process MAPPING LOG WRITER_ID STOP_FILE [THREADS]
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from migrator.cutover.sdk import DualWriter, WritesFrozen
from migrator.model.settings import load_mapping

HOT = [1, 2, 3, 4, 5]  # orders every thread of every process updates


def main() -> None:
    mapping, log_path, wid, stop_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    threads = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    sdk = DualWriter(load_mapping(mapping))  # default settings, as an application runs it
    out = Path(log_path).open("a", buffering=1)  # noqa: SIM115 (open while threads write)
    lock = threading.Lock()

    def ack(**entry: Any) -> None:
        with lock:
            out.write(json.dumps({**entry, "at": time.time()}) + "\n")

    def retrying(fn: Any, *args: Any) -> None:
        while True:
            try:
                fn(*args)
                return
            except WritesFrozen:  # the write switch: retry, as an application would
                time.sleep(0.03)

    def run(tid: int) -> None:
        n = 0
        base = 10_000_000 + wid * 100_000 + tid * 10_000
        while not Path(stop_file).exists():
            n += 1
            hot = HOT[(n + tid + wid) % len(HOT)]
            note = f"w{wid}t{tid}-{n}"
            t0 = time.time()
            retrying(sdk.update, "orders", {"id": hot}, {"note": note})
            ack(op="hot", id=hot, note=note, t0=t0)
            oid = base + n
            row = {
                "id": oid,
                "order_no": f"P{oid}",
                "customer_id": 1 + n % 5,
                "status": "new",
                "total": "1.00",
                "created_at": "2024-07-01 12:00:00",
            }
            retrying(sdk.insert, "orders", row)
            item = {"order_id": oid, "line_no": 1, "product_id": 1, "qty": n % 7 + 1}
            retrying(sdk.insert, "order_items", {**item, "unit_price": "2.00"})
            ack(op="insert", id=oid, qty=n % 7 + 1)
            if n % 3 == 0:
                retrying(sdk.update, "orders", {"id": oid}, {"status": "paid"})
                ack(op="paid", id=oid)
            if n % 4 == 0:
                gone = oid - 1
                retrying(sdk.delete, "order_items", {"order_id": gone, "line_no": 1})
                retrying(sdk.delete, "orders", {"id": gone})
                ack(op="delete", id=gone)
            time.sleep(0.03)

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    sdk.close()
    out.close()


if __name__ == "__main__":
    main()
