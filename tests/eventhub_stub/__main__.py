"""``python -m tests.eventhub_stub``: serve a stand-in Event Hub until SIGTERM/SIGINT.

Prints the connection string on one line (then flushes) once the port is bound;
exits 0 on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .server import Broker, drop_connections, listen
from .store import Hub
from .stub import connection_string


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.eventhub_stub", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5672, help="0 picks a free port")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--hub", default="events")
    parser.add_argument("--key-name", default="stub")
    parser.add_argument("--key", default="stub")
    parser.add_argument("--verbose", "-v", action="store_true", help="log links and requests")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    broker = Broker(Hub(args.hub, args.partitions), key_name=args.key_name, key=args.key)
    server = await listen(broker, args.host, args.port)
    port = server.sockets[0].getsockname()[1]
    print(
        connection_string(
            host=args.host, port=port, hub=args.hub, key_name=args.key_name, key=args.key
        ),
        flush=True,
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    server.close()
    drop_connections(broker)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
