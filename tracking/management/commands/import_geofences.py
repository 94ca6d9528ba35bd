"""``manage.py import_geofences FILE [--replace]``: geofences from a GeoJSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from tracking.geofences import FenceError, parse_geojson_text
from tracking.models import Geofence

NAME_LENGTH = Geofence._meta.get_field("name").max_length or 100


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
            fences = features_by_name(raw, default_name=path.stem)
        except FenceError as error:
            raise CommandError(f"{path}: {error}") from None
        with transaction.atomic():
            existing = {fence.name: fence for fence in Geofence.objects.filter(name__in=fences)}
            for name, feature in fences.items():
                fence = existing.get(name)
                if fence is None:
                    Geofence.objects.create(name=name, geojson=feature)
                    self.stdout.write(f"Imported {name}")
                elif fence.geojson == feature:
                    self.stdout.write(f"Unchanged {name}")
                else:
                    fence.geojson = feature
                    fence.save(update_fields=["geojson", "updated_at"])
                    self.stdout.write(f"Updated {name}")
            if options["replace"]:
                deleted = Geofence.objects.exclude(name__in=fences).order_by("name")
                for fence in deleted:
                    self.stdout.write(f"Deleted {fence.name}")
                deleted.delete()
        self.stdout.write(f"{len(fences)} geofence{'' if len(fences) == 1 else 's'} from {path}")


def features_by_name(raw: bytes, *, default_name: str) -> dict[str, str]:
    """Each fence of a GeoJSON document as one Feature's text, by name;
    ``FenceError`` with the parser's message if any feature is not a valid fence."""
    parsed = parse_geojson_text(raw)  # refuses the whole document on any invalid feature
    data = json.loads(raw)
    features = {
        "FeatureCollection": lambda: data["features"],
        "Feature": lambda: [data],
    }.get(data["type"], lambda: [{"type": "Feature", "properties": {}, "geometry": data}])()
    by_name: dict[str, str] = {}
    for number, (fence, feature) in enumerate(zip(parsed, features, strict=True), start=1):
        where = f"feature {number - 1}: " if len(parsed) > 1 else ""
        name = fence.name.strip() or f"{default_name} {number}"
        if len(name) > NAME_LENGTH:
            raise FenceError(f"{where}the name is longer than {NAME_LENGTH} characters")
        if "\x00" in name:
            raise FenceError(f"{where}the name holds a NUL character")
        if name in by_name:
            raise FenceError(f"{where}the name {name!r} is used twice in the file")
        by_name[name] = json.dumps(feature)
    return by_name
