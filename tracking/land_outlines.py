"""The land outlines every map page draws under its optional tiles.

world-atlas's Natural Earth land at three scales (static/vendor/README.md),
coarsest first, each with the zoom from which a map draws it: the finer files
are larger (55 KB, 0.5 MB, 3 MB), so a page loads one only once the map is
zoomed in that far (maps/static/maps/basemap.js).
"""

from __future__ import annotations

from typing import Any

from django.templatetags.static import static

_OUTLINES = (("land-110m.json", 0), ("land-50m.json", 4), ("land-10m.json", 7))


def land_urls() -> list[dict[str, Any]]:
    """The outlines as a page's config carries them: ``[{"url": ..., "minZoom": n}]``."""
    return [
        {"url": static(f"vendor/world-atlas/{name}"), "minZoom": min_zoom}
        for name, min_zoom in _OUTLINES
    ]
