"""Static files storage for production (DEBUG off)."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    """Hashed, compressed files; ES module imports are rewritten to the hashed
    names too, so a browser never mixes modules of two deploys."""

    support_js_module_import_aggregation = True
