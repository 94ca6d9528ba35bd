"""Telling open maps that geofences changed (``geofencesChanged``), once the change commits.

Every way a fence changes passes here, whoever makes it: a save (the admin's
form and upload, ``import_geofences``), a delete (one, or the admin's bulk
delete: Django deletes each row with its signals), and
``Geofence.objects.update`` (an admin action switching fences on or off). The
extent a fence had before the change is read before it (the row as stored),
the one it has after from the saved fence, so the viewers of the cells it
left and of the cells it reaches are both told. The fences changed in one
transaction go out together, in one publish, after it commits; nothing goes
out for a transaction rolled back.

A failure to publish is logged and never fails the change: the fences are
saved, and a map sees them at its next fetch.

Publishing from a sync thread (an admin view, a command) reaches the
process's own fan-out when there is one: under an ASGI server (uvicorn,
daphne, the demo) a sync view runs in asgiref's ``sync_to_async`` thread,
from which ``async_to_sync`` runs the publish on the server's event loop,
whose fan-out holds the process's viewers. Elsewhere (a command, a WSGI
server) the loop is a new one: a fan-out is made for that publish (over
Redis it reaches every web process) and closed after it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from asgiref.sync import async_to_sync
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from tracking.geofence_extents import EXTENTS, extents_of
from tracking.geofences import Box
from tracking.hub.fanout import make_fanout, running_fanout
from tracking.hub.publishing import publish_geofences_changed
from tracking.models import Geofence, geofences_updated, geofences_updating

logger = logging.getLogger("tracking.geofences")

# How long a change waits for the fan-out (Redis) before it gives up.
PUBLISH_TIMEOUT_SECONDS = 10.0


class _Before(threading.local):
    """The extents of fences about to be saved or updated, by database and pk, per thread."""

    def __init__(self) -> None:
        self.extents: dict[tuple[str, int], tuple[Box, ...]] = {}


_before = _Before()


class _Changes:
    """The fences changed in one transaction, with their extents before and after:
    its commit hook."""

    def __init__(self) -> None:
        self.extents: defaultdict[int, list[Box]] = defaultdict(list)
        self.sent = False

    def add(self, extents: Mapping[int, Iterable[Box]]) -> None:
        for pk, boxes in extents.items():
            self.extents[pk] += boxes

    def __call__(self) -> None:
        self.sent = True
        announce(self.extents)


def announce(extents: Mapping[int, Iterable[Box]]) -> None:
    """Publish ``geofencesChanged`` for fences (by pk, their boxes before and
    after a committed change), from sync code; logs instead of raising."""
    try:
        async_to_sync(_publish)(extents)
    except Exception:
        logger.exception(
            "Could not tell open maps that geofences %s changed; they see it at their next fetch",
            ", ".join(str(pk) for pk in sorted(extents)),
        )


async def _publish(extents: Mapping[int, Iterable[Box]]) -> None:
    fanout = running_fanout()
    if fanout is not None:  # this process's viewers are on this loop
        await asyncio.wait_for(
            publish_geofences_changed(extents, fanout=fanout), PUBLISH_TIMEOUT_SECONDS
        )
        return
    fanout = make_fanout()
    try:
        await asyncio.wait_for(
            publish_geofences_changed(extents, fanout=fanout), PUBLISH_TIMEOUT_SECONDS
        )
    finally:
        await fanout.close()


def _changed(using: str, extents: Mapping[int, Iterable[Box]]) -> None:
    """Note changed fences in the transaction under way on ``using`` (or, in
    autocommit, announce them now)."""
    connection = transaction.get_connection(using)
    if connection.in_atomic_block:
        for _, hook, *_ in connection.run_on_commit:
            if isinstance(hook, _Changes) and not hook.sent:
                hook.add(extents)
                return
    changes = _Changes()
    changes.add(extents)
    transaction.on_commit(changes, using=using, robust=True)


def _boxes(fence: Geofence) -> tuple[Box, ...]:
    extent = EXTENTS.extent((fence.pk, fence.updated_at), fence.geojson)
    return () if extent is None else extent.boxes


@receiver(pre_save, sender=Geofence, dispatch_uid="geofence_changes.pre_save")
def _before_save(sender: Any, instance: Geofence, using: str, **kwargs: Any) -> None:
    if instance.pk is not None:
        _remember_before(using, [instance.pk])


@receiver(post_save, sender=Geofence, dispatch_uid="geofence_changes.post_save")
def _after_save(sender: Any, instance: Geofence, using: str, **kwargs: Any) -> None:
    before = _before.extents.pop((using, instance.pk), ())
    _changed(using, {instance.pk: before + _boxes(instance)})


@receiver(post_delete, sender=Geofence, dispatch_uid="geofence_changes.post_delete")
def _after_delete(sender: Any, instance: Geofence, using: str, **kwargs: Any) -> None:
    _changed(using, {instance.pk: _boxes(instance)})


@receiver(geofences_updating, dispatch_uid="geofence_changes.updating")
def _before_update(sender: Any, pks: list[int], using: str, **kwargs: Any) -> None:
    _remember_before(using, pks)


@receiver(geofences_updated, dispatch_uid="geofence_changes.updated")
def _after_update(sender: Any, pks: list[int], using: str, **kwargs: Any) -> None:
    after = extents_of(pks, using=using)
    _changed(
        using,
        {
            pk: _before.extents.pop((using, pk), ()) + (after[pk].boxes if pk in after else ())
            for pk in pks
        },
    )


def _remember_before(using: str, pks: list[int]) -> None:
    for pk, extent in extents_of(pks, using=using).items():
        _before.extents[(using, pk)] = extent.boxes
