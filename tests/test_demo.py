"""``manage.py demo``: what it says when it cannot start (the page itself is
tested in headless Chromium, in test_map_page)."""

from __future__ import annotations

import re
import socket

import pytest
from django.core.management import CommandError, call_command


def test_the_demo_says_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=rf"cannot listen on 127\.0\.0\.1:{port} .*--port"):
            call_command("demo", "--port", str(port))


def test_the_demo_says_when_its_interface_is_wrong() -> None:
    with pytest.raises(CommandError, match=re.escape("cannot listen on 203.0.113.7:8000")):
        call_command("demo", "--host", "203.0.113.7", "--port", "8000")
