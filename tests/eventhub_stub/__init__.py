"""A local stand-in for Azure Event Hubs, spoken to by the real azure-eventhub SDK.

Run ``python -m tests.eventhub_stub --port PORT --partitions N --hub NAME``: it
prints the connection string to use, then serves AMQP 1.0 on 127.0.0.1:PORT
until SIGTERM or SIGINT. In tests, use ``EventHubStub`` (see ``stub.py``).

What it implements, as the service does: CBS put-token with SAS signature
checks, ``$management`` READ of the hub and its partitions, producers to the hub
(partition by key or round robin) or to a partition, batches unpacked into
events, consumers per partition and consumer group started from an offset,
sequence number, enqueued time, start of stream or ``@latest``, owner-level
(epoch) exclusivity, link credit, and last-enqueued-event metrics on request.
Offsets are byte positions in the partition (not sequence numbers), as on the
service. Any consumer group name is accepted. Events live in memory. Not
implemented: TLS, WebSockets, idempotent publishing, geo-replication offsets.

It needs no patch to the SDK: every frame it writes carries all of its fields,
as the service's do (see ``amqp.py`` for why that matters with azure-eventhub
5.15.1).

Modules: ``amqp`` (codec), ``store`` (partitions and start positions, plain
Python), ``server`` (the AMQP server and Event Hubs nodes), ``stub`` (the API).
"""

from .store import StoredEvent
from .stub import EventHubStub, StubEndpoint, connection_string

__all__ = ["EventHubStub", "StoredEvent", "StubEndpoint", "connection_string"]
