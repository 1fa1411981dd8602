"""The delivery worker driven through the server's DurableSink against real HTTP receivers
(tests/brokers.py): in order per hook, the failover list, an endpoint down then up, a slow
endpoint holding up neither enqueue nor other hooks, pause (follower) and start (leader),
forget, max age, overflow, and the metrics families."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest
from brokers import Receiver, receiver_fixture  # noqa: F401 - the receiver fixture
from geoserver.config import ServerConfig
from geoserver.delivery.sink import DurableSink
from geoserver.delivery.stats import DeliveryCollector
from helpers import free_port
from prometheus_client import CollectorRegistry, generate_latest


def event(hook: str, i: int) -> bytes:
    return orjson.dumps({"hook": hook, "id": f"truck{i}", "detect": "enter"})


def seen(bodies: list[bytes], hook: str) -> list[int]:
    """Event numbers of `hook` in arrival order, duplicates (at-least-once) kept."""
    out = []
    for body in list(bodies):
        doc = orjson.loads(body)
        if doc["hook"] == hook:
            out.append(int(doc["id"][5:]))
    return out


def in_order_once_each(numbers: list[int], n: int) -> bool:
    """Every event 0..n-1 arrived, first arrivals in order (a resend may repeat the last ones)."""
    firsts = list(dict.fromkeys(numbers))
    return firsts == list(range(n))


async def until(predicate: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(dir=tmp_path, hook_timeout=1.0)


@pytest.fixture
async def sink(config: ServerConfig) -> AsyncIterator[DurableSink]:
    s = DurableSink(config)
    s.start_delivering()
    yield s
    await s.close()


async def test_in_order_per_hook_across_hooks(sink: DurableSink, receiver: Receiver) -> None:
    hooks = ("warehouse", "depot", "port")
    for i in range(60):
        for hook in hooks:
            sink.enqueue(hook, [receiver.url(hook)], event(hook, i))
    await until(lambda: len(receiver.bodies) >= 180, what="180 deliveries")
    for hook in hooks:
        assert seen(receiver.bodies, hook) == list(range(60))
    await until(lambda: sink.depth() == 0, what="an empty queue")
    assert sink.stats.totals.sent == 180 and sink.stats.hooks["depot"].produced == 60


async def test_failover_list_in_order(sink: DurableSink, receiver: Receiver) -> None:
    broken = Receiver().start()
    broken.status = 500
    try:
        dead = f"http://127.0.0.1:{free_port()}/nobody"
        for i in range(40):
            sink.enqueue("h", [dead, broken.url(), receiver.url()], event("h", i))
        await until(lambda: len(receiver.bodies) >= 40, what="40 deliveries to the third endpoint")
        assert seen(receiver.bodies, "h") == list(range(40))
        # the failing endpoints were skipped during their backoff, not retried per event
        assert broken.requests < 20
        assert sink.stats.totals.failed == 0  # some endpoint always took the event
    finally:
        broken.stop()


async def test_endpoint_down_then_up_delivers_everything_in_order(sink: DurableSink) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/later"
    for i in range(25):
        sink.enqueue("late", [url], event("late", i))
    await until(lambda: sink.stats.totals.failed >= 2, what="failed attempts")
    assert sink.depth() == 25
    up = Receiver(port).start()
    try:
        await until(lambda: len(up.bodies) >= 25, what="delivery once the endpoint is up")
        assert seen(up.bodies, "late") == list(range(25))
        await until(lambda: sink.depth() == 0, what="an empty queue")
    finally:
        up.stop()


async def test_slow_endpoint_holds_up_neither_enqueue_nor_other_hooks(
        sink: DurableSink, receiver: Receiver) -> None:
    slow = Receiver().start()
    slow.hold.clear()  # every request hangs until released
    try:
        for i in range(500):
            sink.enqueue("slow", [slow.url()], event("slow", i))
            if i < 20:
                sink.enqueue("fast", [receiver.url()], event("fast", i))
        assert sink.depth() == 520  # enqueue returned at once, with the slow endpoint hanging
        await until(lambda: len(seen(receiver.bodies, "fast")) >= 20, what="the fast hook")
        assert seen(receiver.bodies, "fast") == list(range(20))
        await until(lambda: sink.stats.hooks["slow"].failed >= 1, what="a timed-out send")
        slow.hold.set()
        await until(lambda: sink.depth() == 0, timeout=30, what="the slow hook to drain")
        assert in_order_once_each(seen(slow.bodies, "slow"), 500)
    finally:
        slow.stop()


async def test_paused_worker_delivers_nothing_until_started(sink: DurableSink, receiver: Receiver) -> None:
    sink.stop_delivering()  # this server became a follower
    for i in range(10):
        sink.enqueue("h", [receiver.url()], event("h", i))
    await asyncio.sleep(0.5)
    assert receiver.requests == 0 and sink.depth() == 10
    sink.start_delivering()  # leader again
    await until(lambda: len(receiver.bodies) >= 10, what="delivery after start")
    assert seen(receiver.bodies, "h") == list(range(10))


async def test_forget_drops_queued_events(sink: DurableSink) -> None:
    url = f"http://127.0.0.1:{free_port()}/nobody"
    for i in range(30):
        sink.enqueue("deleted", [url], event("deleted", i))
    sink.enqueue("kept", [url], event("kept", 0))
    sink.forget("deleted")
    assert sink.depth() == 1 and sink.queue.counts == {"kept": 1}
    assert sink.stats.totals.dropped["forgotten"] == 30 and "deleted" not in sink.stats.hooks


async def test_events_older_than_max_age_are_dropped(config: ServerConfig, receiver: Receiver) -> None:
    config.hook_queue_max_age = 60
    queued = DurableSink(config)
    for i in range(5):
        queued.enqueue("old", [receiver.url()], event("old", i))
        queued.enqueue("new", [receiver.url()], event("new", i))
    queued.queue.commit()
    await queued.close()
    with sqlite3.connect(config.dir / "queue.db") as db:  # as if queued two minutes ago
        db.execute("UPDATE events SET queued_at = queued_at - 120 WHERE hook = 'old'")
    sink = DurableSink(config)
    sink.start_delivering()
    try:
        await until(lambda: sink.depth() == 0, what="an empty queue")
        assert seen(receiver.bodies, "new") == list(range(5)) and seen(receiver.bodies, "old") == []
        assert sink.stats.hooks["old"].dropped["expired"] == 5
    finally:
        await sink.close()


async def test_overflow_keeps_the_newest(config: ServerConfig, sink: DurableSink) -> None:
    config.hook_queue_max = 5
    port = free_port()
    for i in range(50):
        sink.enqueue("busy", [f"http://127.0.0.1:{port}/busy"], event("busy", i))
    await asyncio.sleep(0)  # the loop turn's commit trims
    assert sink.queue.counts == {"busy": 5}
    assert sink.stats.hooks["busy"].dropped["overflow"] == 45
    up = Receiver(port).start()
    try:
        await until(lambda: sink.depth() == 0, what="an empty queue")
        assert seen(up.bodies, "busy")[-5:] == [45, 46, 47, 48, 49]
    finally:
        up.stop()


async def test_metrics_families(sink: DurableSink, receiver: Receiver) -> None:
    for i in range(3):
        sink.enqueue("warehouse", [receiver.url()], event("warehouse", i))
    sink.enqueue("stuck", [f"http://127.0.0.1:{free_port()}/x"], event("stuck", 0))
    await until(lambda: sink.stats.totals.sent == 3 and sink.stats.totals.failed >= 1, what="deliveries")
    registry = CollectorRegistry()
    registry.register(DeliveryCollector(lambda: sink))
    text = generate_latest(registry).decode()
    for line in ('tile38_messages_sent_total 3.0', 'geoserver_hook_events_total{hook="warehouse"} 3.0',
                 'geoserver_hook_events_sent_total{hook="warehouse"} 3.0',
                 'geoserver_hook_events_queued{hook="stuck"} 1.0', 'geoserver_hook_queue_events 1.0',
                 'geoserver_hook_delivering 1.0',
                 'geoserver_hook_events_dropped_total{hook="warehouse",reason="overflow"} 0.0',
                 'geoserver_hook_delivery_seconds_count{hook="warehouse"} 3.0'):
        assert line in text, line
    assert 'geoserver_hook_send_failures_total{hook="stuck"}' in text


async def test_unusable_endpoints_are_skipped_and_their_events_dropped(sink: DurableSink,
                                                                        receiver: Receiver) -> None:
    # e.g. hooks of a Tile38 AOF whose kinds are not built here
    for i in range(5):
        sink.enqueue("kafka", ["kafka://127.0.0.1:9092/fleet"], event("kafka", i))
        sink.enqueue("mixed", ["sqs://us-east-1:1/q", receiver.url()], event("mixed", i))
    await until(lambda: sink.depth() == 0, what="an empty queue")
    assert sink.stats.hooks["kafka"].dropped["unusable"] == 5 and sink.stats.hooks["kafka"].failed == 0
    assert seen(receiver.bodies, "mixed") == list(range(5))


async def test_many_hooks_more_than_the_concurrency(sink: DurableSink, receiver: Receiver) -> None:
    hooks = [f"zone{n}" for n in range(300)]  # CONCURRENCY is 64
    for i in range(3):
        for hook in hooks:
            sink.enqueue(hook, [receiver.url(hook)], event(hook, i))
    await until(lambda: sink.depth() == 0, timeout=30, what="an empty queue")
    for hook in hooks:
        assert seen(receiver.bodies, hook) == [0, 1, 2], hook
