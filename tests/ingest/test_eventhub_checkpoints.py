"""The checkpoint store's contract: the one the SDK's load balancer relies on."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from tracking.ingest.sources import eventhub_checkpoints as checkpoints

pytestmark = pytest.mark.django_db(transaction=True)

SCOPE = {
    "namespace": "ns.servicebus.windows.net",
    "eventhub": "trackers",
    "consumer_group": "$Default",
}


def ownership(partition_id: str, owner_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "fully_qualified_namespace": SCOPE["namespace"],
        "eventhub_name": SCOPE["eventhub"],
        "consumer_group": SCOPE["consumer_group"],
        "partition_id": partition_id,
        "owner_id": owner_id,
        **extra,
    }


def listed() -> dict[str, dict[str, Any]]:
    return {record["partition_id"]: record for record in checkpoints.list_ownership(**SCOPE)}


def test_a_first_claim_creates_the_ownership_with_an_etag_and_epoch_seconds() -> None:
    [won] = checkpoints.claim_ownership(claims=[ownership("0", "a")])
    assert won["owner_id"] == "a" and won["etag"]
    # The SDK compares last_modified_time with time.time(): float seconds.
    assert isinstance(won["last_modified_time"], float)
    assert abs(won["last_modified_time"] - time.time()) < 5
    assert listed()["0"] == won


def test_of_two_first_claims_on_one_partition_exactly_one_wins() -> None:
    first = checkpoints.claim_ownership(claims=[ownership("0", "a")])
    second = checkpoints.claim_ownership(claims=[ownership("0", "b")])
    assert len(first) == 1 and second == []
    assert listed()["0"]["owner_id"] == "a"


def test_a_claim_with_a_stale_etag_loses() -> None:
    [mine] = checkpoints.claim_ownership(claims=[ownership("0", "a")])
    [renewed] = checkpoints.claim_ownership(claims=[mine])
    assert renewed["etag"] != mine["etag"]
    # Someone who read the old etag cannot take it.
    assert checkpoints.claim_ownership(claims=[{**mine, "owner_id": "b"}]) == []
    assert listed()["0"]["owner_id"] == "a"


def test_concurrent_claims_from_several_threads_have_exactly_one_winner() -> None:
    checkpoints.claim_ownership(claims=[ownership("0", "seed")])
    read = listed()["0"]
    barrier = threading.Barrier(4)
    winners: list[str] = []

    def claim(owner: str) -> None:
        try:
            barrier.wait()
            won = checkpoints.claim_ownership(claims=[{**read, "owner_id": owner}])
            winners.extend(record["owner_id"] for record in won)
        finally:
            connection.close()

    threads = [threading.Thread(target=claim, args=(f"owner-{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert listed()["0"]["owner_id"] == winners[0]


def test_an_expired_ownership_is_taken_over_and_its_old_owner_cannot_renew() -> None:
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    [dead] = checkpoints.claim_ownership(claims=[ownership("1", "dead")], now=long_ago)
    assert dead["last_modified_time"] + 60 < time.time()  # what the SDK calls expired
    [taken] = checkpoints.claim_ownership(claims=[{**listed()["1"], "owner_id": "alive"}])
    assert taken["owner_id"] == "alive"
    assert checkpoints.claim_ownership(claims=[dead]) == []


def test_a_released_partition_has_an_empty_owner_and_can_be_claimed() -> None:
    [mine] = checkpoints.claim_ownership(claims=[ownership("2", "a")])
    [released] = checkpoints.claim_ownership(claims=[{**mine, "owner_id": ""}])
    assert listed()["2"]["owner_id"] == "" == released["owner_id"]
    [claimed] = checkpoints.claim_ownership(claims=[{**listed()["2"], "owner_id": "b"}])
    assert claimed["owner_id"] == "b"


def test_ownership_is_scoped_to_namespace_hub_and_consumer_group() -> None:
    checkpoints.claim_ownership(claims=[ownership("0", "a")])
    other_group = {**SCOPE, "consumer_group": "replay"}
    assert checkpoints.list_ownership(**other_group) == []
    [won] = checkpoints.claim_ownership(
        claims=[{**ownership("0", "b"), "consumer_group": "replay"}]
    )
    assert won["owner_id"] == "b" and listed()["0"]["owner_id"] == "a"


def test_a_checkpoint_round_trips_with_a_string_offset() -> None:
    record = {**ownership("3", ""), "offset": "4096", "sequence_number": 17}
    record.pop("owner_id")
    checkpoints.update_checkpoint(checkpoint=record)
    checkpoints.update_checkpoint(checkpoint={**record, "offset": "8192", "sequence_number": 33})
    [stored] = checkpoints.list_checkpoints(**SCOPE)
    assert stored == {**record, "offset": "8192", "sequence_number": 33}
    assert isinstance(stored["offset"], str)


def test_a_checkpoint_without_an_offset_is_refused() -> None:
    with pytest.raises(ValueError, match="offset and a sequence number"):
        checkpoints.update_checkpoint(checkpoint={**ownership("0", ""), "sequence_number": 1})


async def test_the_sdk_facing_store_runs_the_same_operations() -> None:
    from tracking.ingest.sources.eventhub import DatabaseCheckpointStore

    async def run_in_db(function: Any, /, **kwargs: Any) -> Any:
        def call() -> Any:
            try:
                return function(**kwargs)
            finally:
                connection.close()

        return await asyncio.to_thread(call)

    store = DatabaseCheckpointStore(run_in_db)
    [won] = await store.claim_ownership([ownership("0", "a")])
    listed_now = await store.list_ownership(
        SCOPE["namespace"], SCOPE["eventhub"], SCOPE["consumer_group"]
    )
    assert listed_now == [won]
    await store.update_checkpoint({**ownership("0", ""), "offset": "10", "sequence_number": 1})
    [checkpoint] = await store.list_checkpoints(
        SCOPE["namespace"], SCOPE["eventhub"], SCOPE["consumer_group"]
    )
    assert checkpoint["offset"] == "10"
