"""Hook delivery through real geoserver processes: SETHOOK end to end to each kind of endpoint,
events queued while the endpoint is down surviving kill -9 of the leader, a follower that never
delivers (and delivers its own queue once promoted), and writes that a hanging endpoint does
not slow down."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aio_pika
import aiomqtt
import nats
import orjson
import pytest
import redis.asyncio as aioredis
from brokers import (  # noqa: F401 - fixtures
    Broker,
    Receiver,
    amqp_broker_fixture,
    mqtt_broker_fixture,
    nats_broker_fixture,
    receiver_fixture,
    redis_broker_fixture,
)
from geoserver.delivery.queue import HookQueue
from helpers import GeoServer, free_port, wait_until

Make = Callable[..., GeoServer]
FENCE = ["NEARBY", "fleet", "FENCE", "DETECT", "enter", "POINT", 33.5, -115.5, 5000]


def ids(bodies: list[bytes]) -> list[str]:
    return [orjson.loads(b)["id"] for b in list(bodies)]


def queue_for(data_dir: Path, url: str, n: int, hook: str = "h") -> None:
    """Events queued by an earlier run of the server (through the queue's own API)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    q = HookQueue(data_dir / "queue.db", lambda: 0)
    for i in range(n):
        q.enqueue(hook, [url], orjson.dumps({"hook": hook, "id": f"truck{i}", "detect": "enter"}))
    q.close()


def enter(server: GeoServer, n: int, start: int = 0) -> None:
    """`n` objects entering the fence, one write each (each one event for the hook)."""
    client = server.client()
    for i in range(start, start + n):
        client.execute_command("SET", "fleet", f"truck{i}", "POINT", 33.5, -115.5)


def test_sethook_delivers_tile38_events(server: GeoServer, receiver: Receiver) -> None:
    client = server.client()
    assert client.execute_command("SETHOOK", "warehouse", receiver.url(), "META", "zone", "w1", *FENCE) == 1
    enter(server, 3)
    wait_until(lambda: len(receiver.bodies) >= 3, message="3 events")
    events = [orjson.loads(b) for b in receiver.bodies]
    assert [e["id"] for e in events] == ["truck0", "truck1", "truck2"]
    first = events[0]
    assert (first["command"], first["detect"], first["hook"]) == ("set", "enter", "warehouse")
    assert first["key"] == "fleet"
    assert first["meta"] == {"zone": "w1"} and first["object"]["type"] == "Point"


def test_kill9_with_events_queued_delivers_them_after_restart(make_server: Make) -> None:
    port = free_port()  # the endpoint is down while the events are produced
    leader = make_server("leader", args=["--appendfsync", "always"])
    client = leader.client()
    client.execute_command("SETHOOK", "h", f"http://127.0.0.1:{free_port()}/old", *FENCE)
    client.execute_command("DELHOOK", "h")  # replayed at restart: must not drop the later events
    client.execute_command("SETHOOK", "h", f"http://127.0.0.1:{port}/hook", *FENCE)
    enter(leader, 40)
    wait_until(lambda: "hook endpoint failed" in leader.log(), message="a failed delivery")
    leader.kill9()
    up = Receiver(port).start()
    try:
        leader.start()
        wait_until(lambda: len(up.bodies) >= 40, timeout=20, message="40 events after the restart")
        assert ids(up.bodies) == [f"truck{i}" for i in range(40)]
    finally:
        up.stop()


def test_kill9_queue_written_by_an_earlier_run(make_server: Make) -> None:
    port = free_port()
    server = make_server("s", start=False)
    queue_for(server.dir, f"http://127.0.0.1:{port}/hook", 50)
    server.start()
    wait_until(lambda: "hook endpoint failed" in server.log(), message="a failed delivery")
    server.kill9()
    up = Receiver(port).start()
    try:
        server.start()
        wait_until(lambda: len(up.bodies) >= 50, timeout=20, message="50 events after the restart")
        assert ids(up.bodies) == [f"truck{i}" for i in range(50)]
    finally:
        up.stop()


def test_follower_never_delivers_until_promoted(make_server: Make, receiver: Receiver) -> None:
    leader = make_server("leader")
    follower = make_server("follower", start=False)
    queue_for(follower.dir, receiver.url("follower-queue"), 20, hook="old")  # from when it led
    follower.args = ["--follow", f"127.0.0.1:{leader.port}"]
    follower.start()
    leader.client().execute_command("SETHOOK", "h", receiver.url("hook"), *FENCE)
    enter(leader, 10)
    wait_until(lambda: follower.json("HOOKS", "*").get("hooks"), message="the hook replicated")
    wait_until(lambda: len(receiver.bodies) >= 10, message="the leader's events")
    time.sleep(1.0)  # long enough for a follower that did deliver to have done so
    assert ids(receiver.bodies) == [f"truck{i}" for i in range(10)]  # once each, from the leader
    assert follower.json("FOLLOW", "no", "one")["ok"]
    wait_until(lambda: len(receiver.bodies) >= 30, message="the promoted follower's own queue")
    assert ids(receiver.bodies)[10:] == [f"truck{i}" for i in range(20)]


def test_hanging_endpoint_does_not_slow_writes(make_server: Make) -> None:
    slow = Receiver().start()
    slow.hold.clear()  # every POST hangs until released
    try:
        server = make_server("s", args=["--hook-timeout", "5"])
        client = server.client()
        client.execute_command("SETHOOK", "slow", slow.url(), *FENCE)
        worst = 0.0
        for i in range(300):
            started = time.monotonic()
            client.execute_command("SET", "fleet", f"truck{i}", "POINT", 33.5, -115.5)
            worst = max(worst, time.monotonic() - started)
        wait_until(lambda: slow.requests >= 1, message="a hanging request")
        # a write that waited for a send would take the whole hook-timeout (5 s); the margin is
        # for a loaded machine
        assert worst < 2.5, f"a write took {worst:.3f} s with hook-timeout 5 s"
        slow.hold.set()
        wait_until(lambda: len(set(ids(slow.bodies))) >= 300, timeout=30, message="the backlog")
        assert list(dict.fromkeys(ids(slow.bodies))) == [f"truck{i}" for i in range(300)]
    finally:
        slow.stop()


def test_metrics_per_hook(make_server: Make, receiver: Receiver) -> None:
    metrics_port = free_port()
    server = make_server("s", args=["--metrics-addr", f"127.0.0.1:{metrics_port}"])
    client = server.client()
    client.execute_command("SETHOOK", "warehouse", receiver.url(), *FENCE)
    client.execute_command("SETHOOK", "nowhere", f"http://127.0.0.1:{free_port()}/x", *FENCE)
    enter(server, 3)
    wait_until(lambda: len(receiver.bodies) >= 3, message="3 events")

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    wait_until(lambda: 'geoserver_hook_send_failures_total{hook="nowhere"}' in scrape(), message="a failure")
    text = scrape()
    for line in ("tile38_messages_sent_total 3.0", 'geoserver_hook_events_sent_total{hook="warehouse"} 3.0',
                 'geoserver_hook_events_total{hook="nowhere"} 3.0',
                 'geoserver_hook_events_queued{hook="nowhere"} 3.0',
                 "geoserver_hook_queue_events 3.0", "geoserver_hook_delivering 1.0"):
        assert line in text, line


async def _read_redis(broker: Broker, topic: str, run: Callable[[], None]) -> bytes:
    client = aioredis.Redis(port=broker.port)
    pubsub = client.pubsub()
    await pubsub.subscribe(topic)
    await pubsub.get_message(timeout=5)
    run()
    message = None
    async with asyncio.timeout(10):
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    await pubsub.aclose()
    await client.aclose()
    return message["data"]


async def _read_nats(broker: Broker, topic: str, run: Callable[[], None]) -> bytes:
    conn = await nats.connect(f"nats://127.0.0.1:{broker.port}")
    sub = await conn.subscribe(topic)
    await conn.flush()
    run()
    message = await sub.next_msg(timeout=10)
    await conn.close()
    return message.data


async def _read_mqtt(broker: Broker, topic: str, run: Callable[[], None]) -> bytes:
    async with aiomqtt.Client("127.0.0.1", broker.port) as client:
        await client.subscribe(topic, qos=1)
        run()
        async with asyncio.timeout(10):
            message = await anext(aiter(client.messages))
    return bytes(message.payload)


async def _read_amqp(broker: Broker, topic: str, run: Callable[[], None]) -> bytes:
    run()
    conn = await aio_pika.connect(str(broker.extra["url"]))
    channel = await conn.channel()
    async with asyncio.timeout(10):
        while True:
            try:
                queue = await channel.declare_queue(topic, durable=True, passive=True)
                message = await queue.get(fail=False)
            except aio_pika.exceptions.ChannelClosed:  # not declared yet: the first send is on its way
                channel, message = await conn.channel(), None
            if message is not None:
                break
            await asyncio.sleep(0.05)
    await conn.close()
    return message.body


KINDS = {
    "redis": ("redis_broker", lambda b, t: f"redis://127.0.0.1:{b.port}/{t}", _read_redis),
    "nats": ("nats_broker", lambda b, t: f"nats://127.0.0.1:{b.port}/{t}", _read_nats),
    "mqtt": ("mqtt_broker", lambda b, t: f"mqtt://127.0.0.1:{b.port}/fleet/{t}?qos=1", _read_mqtt),
    "amqp": ("amqp_broker", lambda b, t: f"{b.extra['url']}/{t}?route=fleet", _read_amqp),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_each_kind_end_to_end(kind: str, make_server: Make, request: pytest.FixtureRequest) -> None:
    fixture, url_of, read = KINDS[kind]
    broker: Broker = request.getfixturevalue(fixture)
    topic = f"e2e_{kind}_{free_port()}"
    server = make_server("s")
    server.client().execute_command("SETHOOK", "h", url_of(broker, topic), *FENCE)
    body = await read(broker, topic if kind != "mqtt" else f"fleet/{topic}", lambda: enter(server, 1))
    event = orjson.loads(body)
    assert (event["hook"], event["id"], event["detect"]) == ("h", "truck0", "enter")


def test_queue_stays_with_a_leader_that_becomes_a_follower(make_server: Make) -> None:
    """A switchover while the endpoint is down: the old leader keeps its queued events and sends
    none while it follows; the new leader has none of them; they go out when the old one leads
    again (docs/geofencing-endpoints.md#restarts-and-failover)."""
    port = free_port()
    a = make_server("a")
    b = make_server("b", args=["--follow", f"127.0.0.1:{a.port}"])
    a.client().execute_command("SETHOOK", "h", f"http://127.0.0.1:{port}/hook", *FENCE)
    enter(a, 5)
    wait_until(lambda: "hook endpoint failed" in a.log(), message="a failed delivery")
    wait_until(lambda: b.json("GET", "fleet", "truck4").get("ok"), message="b caught up")
    assert b.json("FOLLOW", "no", "one")["ok"]  # b leads
    assert a.json("FOLLOW", "127.0.0.1", b.port)["ok"]  # a follows it
    up = Receiver(port).start()
    try:
        time.sleep(1.5)  # longer than a's first retry delays: it would have sent by now
        assert up.requests == 0
        assert a.json("FOLLOW", "no", "one")["ok"]
        wait_until(lambda: len(up.bodies) >= 5, message="a's queue once it leads again")
        assert ids(up.bodies) == [f"truck{i}" for i in range(5)]
    finally:
        up.stop()


def test_config_set_queue_bound_drops_the_oldest(make_server: Make) -> None:
    port = free_port()
    server = make_server("s")
    client = server.client()
    assert client.execute_command("CONFIG", "SET", "hook-queue-max", "3") == b"OK"
    client.execute_command("SETHOOK", "h", f"http://127.0.0.1:{port}/hook", *FENCE)
    enter(server, 10)
    assert server.stats()["pending_events"] == 3  # SERVER: Tile38's pending_events
    assert "hook queue full: oldest events dropped" in server.log()
    up = Receiver(port).start()
    try:
        wait_until(lambda: server.stats()["pending_events"] == 0, timeout=20, message="an empty queue")
        assert ids(up.bodies)[-3:] == ["truck7", "truck8", "truck9"]
    finally:
        up.stop()


def test_sethook_refuses_malformed_endpoints_with_the_reason(server: GeoServer, receiver: Receiver) -> None:
    for url, reason in [("kafka://127.0.0.1:9092/fleet", "not built in geoserver"),
                        ("redis://127.0.0.1", "missing redis channel name"),
                        ("mqtt://127.0.0.1/t?qos=3", "invalid MQTT qos value"),
                        (f"{receiver.url()},nats://127.0.0.1/s?jetstream=maybe", "invalid jetstream value")]:
        reply = server.json("SETHOOK", "h", url, *FENCE)
        assert not reply["ok"] and reason in reply["err"], (url, reply)
    assert server.json("HOOKS", "*")["hooks"] == []
    assert server.client().execute_command("SETHOOK", "h", receiver.url(), *FENCE) == 1  # still serving
    enter(server, 1)
    wait_until(lambda: receiver.bodies, message="an event")
