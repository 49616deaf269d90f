"""Launcher for the mongoeco wire server (run by its own Python >= 3.13 venv, not imported).

Usage: python mongoeco_server.py HOST PORT. Prints `READY <uri>` once it listens.
"""

import asyncio
import sys

from mongoeco.engines.memory import MemoryEngine
from mongoeco.wire.proxy import AsyncMongoEcoProxyServer


async def main(host: str, port: int) -> None:
    # No cap on blocking aggregations/counts: verification counts whole collections.
    engine = MemoryEngine(aggregation_materialization_limit=None)
    server = AsyncMongoEcoProxyServer(engine=engine, host=host, port=port)
    address = await server.start()
    print("READY", address.uri, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
