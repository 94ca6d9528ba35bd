"""Event Hub partition ownership and checkpoints, kept in the Django database.

These are the storage operations behind the SDK's ``CheckpointStore``
(``tracking.ingest.sources.eventhub.DatabaseCheckpointStore`` adapts them), in the shapes
the SDK uses: dictionaries with ``fully_qualified_namespace``,
``eventhub_name``, ``consumer_group`` and ``partition_id``; ownership adds
``owner_id``, ``last_modified_time`` (float seconds since the epoch: the
SDK's load balancer compares it with ``time.time()``) and ``etag``;
checkpoints add ``offset`` (a string) and ``sequence_number``.

Claims use optimistic concurrency: a claim names the ``etag`` it read, and
the row changes only if the etag is still that; a claim without an etag
creates the row and fails if another process created it first.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.db import IntegrityError, transaction

from tracking.models import EventHubCheckpoint, EventHubOwnership

Record = dict[str, Any]


def _scope(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        "namespace": str(record["fully_qualified_namespace"]),
        "eventhub": str(record["eventhub_name"]),
        "consumer_group": str(record["consumer_group"]),
        "partition_id": str(record["partition_id"]),
    }


def _ownership_record(row: EventHubOwnership) -> Record:
    return {
        "fully_qualified_namespace": row.namespace,
        "eventhub_name": row.eventhub,
        "consumer_group": row.consumer_group,
        "partition_id": row.partition_id,
        "owner_id": row.owner_id,
        "last_modified_time": row.last_modified.timestamp(),
        "etag": row.etag,
    }


def list_ownership(*, namespace: str, eventhub: str, consumer_group: str) -> list[Record]:
    rows = EventHubOwnership.objects.filter(
        namespace=namespace, eventhub=eventhub, consumer_group=consumer_group
    ).order_by("partition_id")
    return [_ownership_record(row) for row in rows]


def claim_ownership(
    *, claims: Iterable[Mapping[str, Any]], now: datetime | None = None
) -> list[Record]:
    """Claim each partition whose etag is unchanged; return the claims that won.

    An ``owner_id`` of ``""`` releases the partition. Every successful claim
    gets a new etag and ``last_modified_time``.
    """
    now = now or datetime.now(UTC)
    won: list[Record] = []
    for claim in claims:
        scope = _scope(claim)
        owner_id = str(claim.get("owner_id") or "")
        new_etag = uuid.uuid4().hex
        expected = claim.get("etag")
        if expected:
            updated = EventHubOwnership.objects.filter(**scope, etag=expected).update(
                owner_id=owner_id, last_modified=now, etag=new_etag
            )
            if not updated:
                continue
        else:
            try:
                with transaction.atomic():
                    EventHubOwnership.objects.create(
                        **scope, owner_id=owner_id, last_modified=now, etag=new_etag
                    )
            except IntegrityError:
                continue  # another process created it since we listed
        won.append(
            {
                **claim,
                "owner_id": owner_id,
                "last_modified_time": now.timestamp(),
                "etag": new_etag,
            }
        )
    return won


def update_checkpoint(*, checkpoint: Mapping[str, Any], now: datetime | None = None) -> None:
    """Record that a partition has been read up to and including this event."""
    offset = checkpoint.get("offset")
    sequence_number = checkpoint.get("sequence_number")
    if offset is None or sequence_number is None:
        raise ValueError("a checkpoint needs an offset and a sequence number")
    scope: dict[str, Any] = _scope(checkpoint)
    EventHubCheckpoint.objects.update_or_create(
        **scope,
        defaults={
            "offset": str(offset),
            "sequence_number": int(sequence_number),
            "updated_at": now or datetime.now(UTC),
        },
    )


def list_checkpoints(*, namespace: str, eventhub: str, consumer_group: str) -> list[Record]:
    rows = EventHubCheckpoint.objects.filter(
        namespace=namespace, eventhub=eventhub, consumer_group=consumer_group
    ).order_by("partition_id")
    return [
        {
            "fully_qualified_namespace": row.namespace,
            "eventhub_name": row.eventhub,
            "consumer_group": row.consumer_group,
            "partition_id": row.partition_id,
            "offset": row.offset,
            "sequence_number": row.sequence_number,
        }
        for row in rows
    ]
