"""Importing geofences from a GeoJSON document, all or nothing: the use case
behind ``manage.py import_geofences`` and the admin's "Import GeoJSON" page."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from tracking.geofences import FenceError, parse_feature, parse_geojson_text
from tracking.models import Geofence

NAME_LENGTH = Geofence._meta.get_field("name").max_length or 100


class ImportRefused(FenceError):
    """The document is refused whole; ``problems`` says what is wrong, one line per feature."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass
class ImportReport:
    """What an import did to each fence, in the document's order, the deleted ones last:
    ("Imported", name), ("Updated", name), ("Unchanged", name) or ("Deleted", name)."""

    done: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{verb} {name}" for verb, name in self.done]

    def count(self, verb: str) -> int:
        return sum(1 for done, _ in self.done if done == verb)

    @property
    def fences(self) -> int:
        """How many fences the document held."""
        return len(self.done) - self.count("Deleted")


def features_by_name(raw: bytes, *, default_name: str) -> dict[str, str]:
    """Each fence of a GeoJSON document (FeatureCollection, Feature, bare Polygon or
    MultiPolygon) as one Feature's text, by its ``name`` property, else
    ``default_name`` and its number. ``ImportRefused`` naming every feature that
    is not a valid fence, or whose name is too long or used twice."""
    try:
        data = json.loads(raw)
    except (ValueError, TypeError, RecursionError):
        data = None
    features: list[Any]
    if (
        isinstance(data, dict)
        and data.get("type") == "FeatureCollection"
        and isinstance(data.get("features"), list)
        and data["features"]
    ):
        features = data["features"]
        wheres = [f"feature {number}: " for number in range(len(features))]
    else:
        # Not a collection of features: one fence, or the parser's message.
        parse_geojson_text(raw)
        is_feature = data["type"] == "Feature"
        features = [data if is_feature else {"type": "Feature", "properties": {}, "geometry": data}]
        wheres = [""]
    problems: list[str] = []
    by_name: dict[str, str] = {}
    for number, (feature, where) in enumerate(zip(features, wheres, strict=True), start=1):
        try:
            parsed = parse_feature(feature, where=where)
        except FenceError as error:
            problems.append(str(error))
            continue
        name = parsed.name.strip() or f"{default_name} {number}"
        if len(name) > NAME_LENGTH:
            problems.append(f"{where}the name is longer than {NAME_LENGTH} characters")
        elif "\x00" in name:
            problems.append(f"{where}the name holds a NUL character")
        elif name in by_name:
            problems.append(f"{where}the name {name!r} is used twice in the file")
        else:
            by_name[name] = json.dumps(feature)
    if problems:
        raise ImportRefused(problems)
    return by_name


def import_geofences(
    *, raw: bytes, default_name: str, update_existing: bool = True, delete_others: bool = False
) -> ImportReport:
    """Store the fences of a GeoJSON document, all or nothing (``ImportRefused`` and
    nothing saved if anything is wrong). A fence whose name exists gets the
    document's shape and keeps its on/off state; with ``update_existing`` False
    such a name refuses the document instead. ``delete_others`` deletes the
    fences (and their visits) the document does not name."""
    fences = features_by_name(raw, default_name=default_name)
    report = ImportReport()
    with transaction.atomic():
        existing = {
            fence.name: fence
            for fence in Geofence.objects.select_for_update().filter(name__in=fences)
        }
        if existing and not update_existing:
            raise ImportRefused(
                [f"a geofence named {name!r} exists already" for name in fences if name in existing]
            )
        for name, feature in fences.items():
            fence = existing.get(name)
            if fence is None:
                Geofence.objects.create(name=name, geojson=feature)
                report.done.append(("Imported", name))
            elif fence.geojson == feature:
                report.done.append(("Unchanged", name))
            else:
                fence.geojson = feature
                fence.save(update_fields=["geojson", "updated_at"])
                report.done.append(("Updated", name))
        if delete_others:
            deleted = Geofence.objects.exclude(name__in=fences).order_by("name")
            report.done.extend(("Deleted", fence.name) for fence in deleted)
            deleted.delete()
    return report
