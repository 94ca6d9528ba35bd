"""What the ASGI servers we run know of a WebSocket's socket, and ASGI does not say.

ASGI's ``send`` has no backpressure that holds under every server. uvicorn's
waits while its transport holds more than the high-water mark (64 KiB);
daphne's returns at once, and Twisted keeps whatever it is handed until the
client reads it, without bound. A viewer that never reads would so grow a
daphne process for as long as it stays connected. The hub therefore asks the
server's transport how many bytes it still holds for the socket, and hands
over more only once that is nothing; and it cuts off a viewer whose sends
have stalled at the transport, because a WebSocket close would itself wait
behind the bytes the viewer does not read.

This is the one module that knows where uvicorn and daphne keep a
connection's transport. Under any other server (or the test communicator)
``server_socket`` answers None, and the hub relies on ``send`` alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerSocket:
    """The transport under one WebSocket connection."""

    buffered: Callable[[], int]
    """Bytes the server holds for the socket, not yet written to it."""
    abort: Callable[[], None]
    """Drop the connection now, whatever is unsent."""


def server_socket(send: Callable[..., Any]) -> ServerSocket | None:
    """The transport behind the ASGI ``send`` of a WebSocket connection, if the
    server is one this module knows."""
    # Channels' session middleware wraps the server's send in its own (the
    # hub's SessionSignIn does not, but a stack may still put it in front).
    wrapper: Any = getattr(send, "__self__", None)
    while hasattr(wrapper, "real_send"):
        send = wrapper.real_send
        wrapper = getattr(send, "__self__", None)
    # daphne: send is functools.partial(Server.handle_reply, protocol), and the
    # protocol (autobahn's, over Twisted) writes to a Twisted TCP transport.
    transport: Any
    if isinstance(send, functools.partial) and send.args:
        transport = getattr(send.args[0], "transport", None)
        if hasattr(transport, "abortConnection") and hasattr(transport, "_tempDataLen"):
            return ServerSocket(
                buffered=functools.partial(_twisted_buffered, transport),
                abort=transport.abortConnection,
            )
    # uvicorn: send is a bound method of its WebSocket protocol, an asyncio
    # protocol whose transport (asyncio's or uvloop's) counts what it buffers.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if hasattr(transport, "get_write_buffer_size") and hasattr(transport, "abort"):
        return ServerSocket(buffered=transport.get_write_buffer_size, abort=transport.abort)
    return None


def _twisted_buffered(transport: Any) -> int:
    # twisted.internet.abstract.FileDescriptor: dataBuffer from offset on, and
    # what write() appended since it was last joined.
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
