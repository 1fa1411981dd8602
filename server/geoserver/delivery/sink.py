"""The durable HookSink a server runs: queue.db, its delivery worker and their counts.

The server opens it at start (so events queued by a crashed run are there before anything
else) and turns delivery on and off with its role: `start_delivering` as leader,
`stop_delivering` as follower (the queue is kept; it is this member's own, not replicated).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from geoserver.config import ServerConfig
from geoserver.delivery.queue import HookQueue
from geoserver.delivery.stats import DeliveryStats
from geoserver.delivery.worker import DeliveryWorker

QUEUE_FILE = "queue.db"


class DurableSink:
    def __init__(self, config: ServerConfig) -> None:
        self.stats = DeliveryStats()
        # --queuefilename (tile38-server's flag) where the CLI sets it, else <dir>/queue.db
        path = Path(getattr(config, "queue_path", "") or config.dir / QUEUE_FILE)
        self.queue = HookQueue(path, lambda: config.hook_queue_max, config.appendfsync,
                               on_drop=self.stats.dropped, max_total=lambda: config.hook_queue_max_total)
        self.worker = DeliveryWorker(self.queue, self.stats, lambda: config.hook_timeout,
                                     lambda: config.hook_queue_max_age)

    def enqueue(self, hook: str, endpoints: Sequence[str], payload: bytes) -> None:
        if not endpoints:
            raise ValueError(f"hook {hook!r}: an event needs at least one endpoint")
        self.queue.enqueue(hook, endpoints, payload)
        self.stats.produced(hook)

    def forget(self, hook: str) -> None:
        self.worker.forget(hook)
        self.stats.dropped(hook, "forgotten", self.queue.forget(hook))
        self.stats.forget(hook)

    def depth(self) -> int:
        return self.queue.depth()

    def start_delivering(self) -> None:
        self.worker.start()

    def stop_delivering(self) -> None:
        self.worker.pause()

    async def close(self) -> None:
        await self.worker.close()
        self.queue.close()
