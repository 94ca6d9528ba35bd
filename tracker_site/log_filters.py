"""What the ASGI server logs per connection, cut to what an operator needs.

uvicorn hands its WebSocket protocol library (websockets) its own
``uvicorn.error`` logger, so each WebSocket logs uvicorn's line
(``127.0.0.1:50000 - "WebSocket /api/signalr" [accepted]``, or ``403``) and
then the library's own ("connection open", "connection rejected ...",
"connection closed"), which say nothing more. And uvicorn's line carries the
query string, where the hub's connection id and a client's access token
travel.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

WEBSOCKET_LINE = '"WebSocket %s"'


def _package_folder(name: str) -> str | None:
    spec = importlib.util.find_spec(name)
    locations = spec.submodule_search_locations if spec else None
    return f"{Path(locations[0]).resolve()}{os.sep}" if locations else None


# Where the websockets library's own modules are (uvicorn's live elsewhere).
_LIBRARY_FOLDER = _package_folder("websockets")


class OneLinePerWebSocket(logging.Filter):
    """On ``uvicorn.error``: drops the websockets library's INFO lines and
    removes the query from uvicorn's WebSocket line, which stays the one line
    a WebSocket logs when it opens or is refused."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno <= logging.INFO
            and _LIBRARY_FOLDER
            and os.path.realpath(record.pathname).startswith(_LIBRARY_FOLDER)
        ):
            return False
        if (
            isinstance(record.msg, str)
            and WEBSOCKET_LINE in record.msg
            and isinstance(record.args, tuple)
            and len(record.args) >= 2
        ):
            client, path, *rest = record.args
            record.args = (client, str(path).partition("?")[0], *rest)
        return True
