"""How updates travel between processes, said once at start-up of each long-running process."""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)
_said = False


def is_process_local() -> bool:
    """Whether map updates only reach connections in this same process."""
    if settings.HUB_FANOUT == "channel-layer":
        backend = str(settings.CHANNEL_LAYERS["default"]["BACKEND"])
        return backend.endswith("InMemoryChannelLayer")
    return not settings.REDIS_URL


def log_channel_layer(*, role: str, single_process: bool = False) -> None:
    """Log how this process sends or receives map updates; the first call in a process wins.

    ``single_process`` says that web server and pipeline share this process
    (the demo), where nothing more than the process itself is needed.
    """
    global _said
    if _said:
        return
    _said = True
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
