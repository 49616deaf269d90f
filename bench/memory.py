"""Peak memory against row count, printed (not a timed test): it must stay flat.

For each size N it creates a table of N rows on a throwaway MariaDB and measures the peak RSS
(the kernel's high-water mark of the process) of:
  1. `migrator backfill` with 1 worker (chunks of 5,000 rows, read in bounded pages), and
  2. `migrator cdc --until-caught-up` over ONE transaction that updates all N rows (applied in
     pieces of --max-events-in-memory, the checkpoint at the commit).

Usage: .venv/bin/python bench/memory.py [--sizes 20000,60000,180000]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from migrator.devtools.sandbox import start_stack, url_with_database
from migrator.model.urls import parse_mysql_url
from migrator.source.connection import connect

REPO = Path(__file__).resolve().parents[1]

PEAK = """
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode)
if p.returncode: print(p.stderr[-2000:], file=sys.stderr)
"""


def peak_mb(*args: str) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one migrator command, measured in a fresh parent."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", PEAK, sys.executable, "-m", "migrator.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    kib, code = p.stdout.split()
    if code != "0":
        raise SystemExit(f"migrator {' '.join(args)} failed:\n{p.stderr}")
    return int(kib) / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="20000,60000,180000")
    args = ap.parse_args()
    stack = start_stack()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    print(f"MongoDB server: {stack.mongo_kind}; own RSS now {own_mb():.0f} MiB")
    print(f"{'rows':>9} | {'backfill peak':>26} | {'CDC peak (1 txn of N rows)':>26}")
    try:
        admin = connect(parse_mysql_url(stack.mysql_url), database=False)
        for n in [int(x) for x in args.sizes.split(",")]:
            db = f"mem{n}"
            cur = admin.cursor()
            cur.execute(f"CREATE DATABASE {db}")
            cur.execute(f"USE {db}")
            cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(100), n INT)")
            cur.execute(f"INSERT INTO t SELECT seq, REPEAT('x', 80), seq FROM seq_1_to_{n}")
            admin.commit()
            mapping = work / f"{db}.yaml"
            mapping.write_text(
                "version: 1\n"
                f'source: {{url: "{url_with_database(stack.mysql_url, db)}"}}\n'
                f'target: {{url: "{stack.mongo_url}", database: {db}}}\n'
                f"state: {{database: _state_{db}}}\n"
                "backfill: {chunk_size: 5000, workers: 1}\n"
                "collections:\n  - {name: t, from: t}\n"
            )
            b_mb, b_s = peak_mb("backfill", "-m", str(mapping), "--json", "--workers", "1")
            cur.execute("UPDATE t SET n = n + 1")  # one transaction of n row changes
            admin.commit()
            c_mb, c_s = peak_mb("cdc", "-m", str(mapping), "--until-caught-up", "--json")
            print(
                f"{n:>9,} | {b_mb:>6.0f} MiB ({n / b_s:>7,.0f} rows/s) | "
                f"{c_mb:>6.0f} MiB ({n / c_s:>7,.0f} rows/s)",
                flush=True,
            )
    finally:
        stack.stop()


def own_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
