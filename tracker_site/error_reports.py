"""What Django's error reports (the debug page, the admins' e-mails) show of the settings."""

from __future__ import annotations

import re

from django.views.debug import SafeExceptionReporterFilter


class SettingsFilter(SafeExceptionReporterFilter):
    """Hides, besides Django's usual keys, passwords and tokens, every setting
    that can carry a credential: service URLs (``DATABASE_URL``, ``REDIS_URL``,
    a tile URL with an API key), connection strings (Event Hubs, checkpoint
    stores) and the channel layers, whose hosts are Redis URLs."""

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CREDENTIAL"
        r"|URL|CONNECTION|DSN|ADDRESS|HOSTS?$|CHANNEL_LAYERS",
        flags=re.IGNORECASE,
    )
