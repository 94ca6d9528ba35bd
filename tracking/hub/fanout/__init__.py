"""Fan-out: how each cell's updates reach the map connections watching that cell.

The pipeline publishes, per batch, one piece of text per cell: the encoded
hub records of every tracker that moved in it. Each web process hands that
text to its own connections that watch the cell. ``get_fanout`` picks the
way, by ``HUB_FANOUT`` and ``REDIS_URL``:

- ``RedisFanOut`` (``HUB_FANOUT=cells`` with Redis, the production default):
  one Redis pub/sub channel per cell, one subscription per cell per process.
- ``LocalFanOut`` (``cells`` without Redis: the demo): the same, within one
  process.
- ``ChannelLayerFanOut`` (``HUB_FANOUT=channel-layer``): a channels group per
  cell and a layer message per connection, kept to compare with (see
  BENCHMARKS.md).

Pub/sub is at-most-once: a message published while a web process is
reconnecting to Redis does not reach its viewers, who see that tracker's
next update instead (trackers report every second or so).
"""

from __future__ import annotations

import asyncio
import logging
import weakref

from django.conf import settings

from tracking.hub.fanout.base import FanOut, LocalFanOut, Viewer, describe_error
from tracking.hub.fanout.channel_layer import ChannelLayerFanOut
from tracking.hub.fanout.redis_pubsub import RedisFanOut

__all__ = [
    "ChannelLayerFanOut",
    "FanOut",
    "LocalFanOut",
    "RedisFanOut",
    "Viewer",
    "announce",
    "describe_error",
    "get_fanout",
    "make_fanout",
    "reset_fanouts",
    "running_fanout",
]

logger = logging.getLogger("tracking.hub.fanout")

# One fan-out per event loop: Redis connections belong to the loop that made them.
_fanouts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FanOut] = weakref.WeakKeyDictionary()
_announced = False


def get_fanout() -> FanOut:
    """This process's fan-out, as ``HUB_FANOUT`` and ``REDIS_URL`` say."""
    loop = asyncio.get_running_loop()
    fanout = _fanouts.get(loop)
    if fanout is None:
        fanout = _fanouts[loop] = make_fanout()
    return fanout


def running_fanout() -> FanOut | None:
    """The fan-out of the running event loop if it has made one (it has
    viewers or has published), else None; makes none."""
    return _fanouts.get(asyncio.get_running_loop())


def make_fanout() -> FanOut:
    """A new fan-out as ``HUB_FANOUT`` and ``REDIS_URL`` say, outside the
    per-loop registry: its maker closes it (``FanOut.close``)."""
    if settings.HUB_FANOUT == "channel-layer":
        return ChannelLayerFanOut()
    if settings.REDIS_URL:
        return RedisFanOut(settings.REDIS_URL, prefix=settings.CHANNEL_LAYER_PREFIX)
    return LocalFanOut()


def reset_fanouts() -> None:
    """Forget every fan-out (tests change settings between runs)."""
    _fanouts.clear()


def is_process_local() -> bool:
    """Whether map updates only reach connections in this same process."""
    if settings.HUB_FANOUT == "channel-layer":
        backend = str(settings.CHANNEL_LAYERS["default"]["BACKEND"])
        return backend.endswith("InMemoryChannelLayer")
    return not settings.REDIS_URL


def announce(*, role: str, single_process: bool = False) -> None:
    """Log how this process sends or receives map updates; the first call in a process wins.

    ``single_process`` says that web server and pipeline share this process
    (the demo), where nothing more than the process itself is needed.
    """
    global _announced
    if _announced:
        return
    _announced = True
    if not is_process_local():
        how = (
            f"channel layer {settings.CHANNEL_LAYERS['default']['BACKEND']}"
            if settings.HUB_FANOUT == "channel-layer"
            else "Redis pub/sub, one channel per map cell"
        )
        logger.info("%s: map updates travel by %s", role, how)
    elif single_process:
        logger.info("%s: map updates stay in this process (REDIS_URL is unset)", role)
    else:
        logger.warning(
            "%s: REDIS_URL is unset, so map updates stay in this process: "
            "consume_events run as a separate process cannot reach the browsers of a "
            "separate web server. Set REDIS_URL to run web and ingestion apart.",
            role,
        )
