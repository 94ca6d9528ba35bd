"""``python -m tracker_site.serve [uvicorn options]``: uvicorn, after the settings pass.

The README's web server command. It loads the settings in this process
first, as a web server would (a wrong value, or a key anyone could know with
``DEBUG`` off, prints one line and exits 2), and only then becomes
``uvicorn tracker_site.asgi:application`` with the options given. Without it,
``uvicorn --workers N`` learns of a wrong setting only in its workers: they
exit (``asgi.py`` makes sure uvicorn does not start them again) and uvicorn
stops, but with exit code 0.
"""

from __future__ import annotations

import os
import sys

from tracker_site.startup import settings_or_exit

APPLICATION = "tracker_site.asgi:application"


def main(arguments: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tracker_site.settings")
    settings_or_exit(serving=True)
    # The workers read the same environment, so they get the same settings.
    os.execv(sys.executable, [sys.executable, "-m", "uvicorn", APPLICATION, *arguments])


if __name__ == "__main__":
    main(sys.argv[1:])
