"""The sandbox's SecantusDB over many writes, started plainly and through the sandbox's
launcher (migrator/sandbox_secantus.py), printed (not a timed test).

Single `update_one`s of 50 hot documents, in rounds of 1,500: the plain server slows down as
its retryable-write records pile up; the launcher's batched pruning keeps the rate flat.

Usage: .venv/bin/python bench/sandbox_server.py [--rounds 12]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from pymongo import MongoClient

from migrator.devtools.sandbox import free_port, secantus_binary


def rates(launcher: list[str], rounds: int) -> list[int]:
    port = free_port()
    home = tempfile.mkdtemp()
    flags = ["--host", "127.0.0.1", "--port", str(port), "--storage-path", home]
    proc = subprocess.Popen([*launcher, *flags, "--log-level", "WARNING"])
    try:
        url = f"mongodb://127.0.0.1:{port}/?directConnection=true"
        with MongoClient[dict](url, serverSelectionTimeoutMS=30_000) as client:
            coll = client.bench.t
            out = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                for j in range(1500):
                    coll.update_one({"_id": j % 50}, {"$set": {"v": j}}, upsert=True)
                out.append(round(1500 / (time.perf_counter() - t0)))
            return out
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()
    binary = secantus_binary()
    if binary is None:
        sys.exit("no SecantusDB (secantusd-py) in this venv: run `make setup`")
    for name, launcher in (
        ("plain secantusd-py", [binary]),
        (
            "through migrator/sandbox_secantus.py",
            [sys.executable, "-m", "migrator.devtools.secantus"],
        ),
    ):
        print(f"{name}: update_one/s per 1,500 writes: {rates(launcher, args.rounds)}", flush=True)


if __name__ == "__main__":
    main()
