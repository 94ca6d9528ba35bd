"""What the channel layer is, said once at start-up of each long-running process."""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)
_said = False


def is_process_local() -> bool:
    """Whether the channel layer only reaches consumers in this same process."""
    backend = str(settings.CHANNEL_LAYERS["default"]["BACKEND"])
    return backend.endswith("InMemoryChannelLayer")


def log_channel_layer(*, role: str, single_process: bool = False) -> None:
    """Log which channel layer this process uses; the first call in a process wins.

    ``single_process`` says that web server and pipeline share this process
    (the demo), where an in-memory layer is all that is needed.
    """
    global _said
    if _said:
        return
    _said = True
    if not is_process_local():
        logger.info("%s: channel layer %s", role, settings.CHANNEL_LAYERS["default"]["BACKEND"])
    elif single_process:
        logger.info("%s: in-memory channel layer (REDIS_URL is unset)", role)
    else:
        logger.warning(
            "%s: REDIS_URL is unset, so the channel layer is in memory: only this "
            "process can push to its browsers, and consume_events run as a separate "
            "process cannot reach them. Set REDIS_URL to run web and ingestion apart.",
            role,
        )
