"""Hook delivery: the contract between the fence engine, which turns writes into events, and
the delivery layer, which queues them durably and sends them to endpoints.

The fence engine (geoserver.fence) only ever calls a `HookSink`; it never sees a queue, a socket
or a broker. A started server runs the durable sink (geoserver.delivery.sink.DurableSink:
queue.py, worker.py, endpoints/), which delivers only while the server leads; a Server that was
never started, and tests of the fence engine, run `MemorySink`, the in-memory twin. Keeping the
circle this small is what lets a slow endpoint never slow a write: `enqueue` must return
without waiting on the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol


class HookSink(Protocol):
    def enqueue(self, hook: str, endpoints: Sequence[str], payload: bytes) -> None:
        """Queue one event (Tile38's JSON, already encoded) for `hook`. Endpoints are tried in
        order, the next on failure (Tile38's failover list). Never blocks on I/O."""

    def forget(self, hook: str) -> None:
        """The hook was deleted or expired: drop what is still queued for it."""

    def depth(self) -> int:
        """Events queued and not yet delivered, across all hooks."""


@dataclass
class MemorySink:
    """In-memory twin of the durable sink: records what would be delivered, in order."""

    events: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)

    def enqueue(self, hook: str, endpoints: Sequence[str], payload: bytes) -> None:
        self.events.append((hook, tuple(endpoints), payload))

    def forget(self, hook: str) -> None:
        self.events = [e for e in self.events if e[0] != hook]

    def depth(self) -> int:
        return len(self.events)
