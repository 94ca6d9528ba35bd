"""Static files: how production stores them (DEBUG off) and how they are served."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponseBase
from servestatic.middleware import ServeStaticMiddleware
from servestatic.responders import MissingFileError
from servestatic.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    """Hashed, compressed files; ES module imports are rewritten to the hashed
    names too, so a browser never mixes modules of two deploys."""

    support_js_module_import_aggregation = True


class StaticFiles(ServeStaticMiddleware):
    """servestatic: under ASGI it streams each file asynchronously (whitenoise's
    synchronous file iterator made Django warn once per file served).

    Under DEBUG servestatic answers a missing file with an exception, a 500
    and two tracebacks in the log that any visitor could cause at will; here
    it is a 404, as without DEBUG.
    """

    async def __call__(self, request: HttpRequest) -> HttpResponseBase:
        try:
            return await super().__call__(request)
        except MissingFileError:
            raise Http404("no such static file") from None
