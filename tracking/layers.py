"""What the channel layer is, said once at start-up of each long-running process."""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)


def is_process_local() -> bool:
    """Whether the channel layer only reaches consumers in this same process."""
    backend: str = settings.CHANNEL_LAYERS["default"]["BACKEND"]
    return backend.endswith("InMemoryChannelLayer")


def log_channel_layer(*, role: str) -> None:
    if is_process_local():
        logger.warning(
            "%s: REDIS_URL is unset, so the channel layer is in memory: only this "
            "process can push to its browsers, and consume_events run as a separate "
            "process cannot reach them. Set REDIS_URL to run web and ingestion apart.",
            role,
        )
    else:
        logger.info("%s: channel layer %s", role, settings.CHANNEL_LAYERS["default"]["BACKEND"])
