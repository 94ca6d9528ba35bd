"""Watch one map cell through the hub, as any SignalR client would.

    python docs/examples/watch_cell.py [--url http://127.0.0.1:8000] [--cell 24 60] [--count N]
                                       [--header "NAME: VALUE" ...]

Joins the cell (numbered longitude first: [24, 60] holds Helsinki), prints the
latest position of every tracker in it, then each update as it comes (and
each geofence a tracker there enters or leaves), until Ctrl-C (or --count
position updates). Where the map needs a signed-in user, it signs in
with the API token in the environment variable TRACKER_TOKEN. --header adds a
header to every request (as curl's -H does).
"""

import argparse
import asyncio
import os
import signal
from datetime import UTC, datetime

from pysignalr.client import SignalRClient


async def watch(url: str, cell: list[int], count: int | None, headers: dict[str, str]) -> None:
    # What accessTokenFactory sends: a bearer token on negotiate and on the WebSocket.
    token = os.environ.get("TRACKER_TOKEN")
    if token:
        headers = {**headers, "Authorization": f"Bearer {token}"}
    client = SignalRClient(f"{url}/api/signalr", headers=headers)
    enough = asyncio.Event()
    seen = 0

    async def on_open() -> None:
        # updateMapGridGroups(newGridNumbers, previousGridNumbers)
        await client.send("updateMapGridGroups", [[cell], []])

    async def on_location(arguments: list) -> None:
        nonlocal seen
        if enough.is_set():
            return
        tracker_id, latitude, longitude, timestamp_ms = arguments
        at = datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%H:%M:%S")
        print(f"{at}  {tracker_id}  {latitude:.5f}, {longitude:.5f}", flush=True)
        seen += 1
        if count is not None and seen >= count:
            enough.set()

    async def on_geofence(verb: str, arguments: list) -> None:
        # geofenceEntered / geofenceExited(trackerId, geofenceId): the fence's
        # name is GET /api/geofences (its "id").
        if not enough.is_set():
            tracker_id, geofence_id = arguments
            print(f"          {tracker_id}  {verb} geofence {geofence_id}", flush=True)

    async def on_fences_changed(arguments: list) -> None:
        (geofence_ids,) = arguments
        print(f"          geofences changed: {', '.join(geofence_ids)}", flush=True)

    client.on_open(on_open)
    client.on("locationUpdated", on_location)
    client.on("geofenceEntered", lambda arguments: on_geofence("entered", arguments))
    client.on("geofenceExited", lambda arguments: on_geofence("left", arguments))
    client.on("geofencesChanged", on_fences_changed)
    # Ctrl-C (or SIGTERM) ends the watch as --count does: the client is stopped
    # and waited for, so it closes its connection before the program exits.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, enough.set)
    running = asyncio.create_task(client.run())
    stopping = asyncio.create_task(enough.wait())
    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
    # The client ending by itself is a failure: refused (a bad token, a private
    # map), or nothing listening at --url.
    problem = None
    if running.done() and not running.cancelled():
        error = running.exception()
        problem = f"{type(error).__name__}: {error}" if error else "the hub ended the connection"
    for task in (running, stopping):
        task.cancel()
    await asyncio.gather(running, stopping, return_exceptions=True)
    if problem is not None:
        raise SystemExit(f"watch_cell.py: {problem}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="where the map is served")
    parser.add_argument("--cell", nargs=2, type=int, default=[24, 60], metavar=("X", "Y"))
    parser.add_argument("--count", type=int, default=None, help="stop after this many updates")
    parser.add_argument("--header", action="append", default=[], help='"NAME: VALUE", repeatable')
    arguments = parser.parse_args()
    headers = {}
    for header in arguments.header:
        name, colon, value = header.partition(":")
        if not colon or not name.strip():
            parser.error(f"--header {header!r} is not NAME: VALUE")
        headers[name.strip()] = value.strip()
    asyncio.run(watch(arguments.url, arguments.cell, arguments.count, headers))


if __name__ == "__main__":
    main()
