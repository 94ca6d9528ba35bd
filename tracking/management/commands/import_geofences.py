"""``manage.py import_geofences FILE [--replace]``: geofences from a GeoJSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tracking.geofence_import import ImportRefused, import_geofences
from tracking.geofences import FenceError


class Command(BaseCommand):
    help = (
        "Import geofences from a GeoJSON Feature or FeatureCollection: one fence per feature, "
        'named by its "name" property (else the file name and its number). A fence whose name '
        "exists gets the file's shape (and stays on or off as it was). Any invalid feature refuses the whole file, and nothing is saved."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help="a GeoJSON file")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="delete the fences the file does not name (and their visits)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path: Path = options["file"]
        try:
            raw = path.read_bytes()
        except OSError as error:
            raise CommandError(f"{path}: {error.strerror or error}") from None
        try:
            report = import_geofences(
                raw=raw, default_name=path.stem, delete_others=options["replace"]
            )
        except ImportRefused as refused:
            raise CommandError(
                "\n".join(f"{path}: {problem}" for problem in refused.problems)
            ) from None
        except FenceError as error:
            raise CommandError(f"{path}: {error}") from None
        for line in report.lines():
            self.stdout.write(line)
        count = report.fences
        self.stdout.write(f"{count} geofence{'' if count == 1 else 's'} from {path}")
