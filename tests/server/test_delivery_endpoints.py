"""Each endpoint kind delivers to a real broker on 127.0.0.1 (tests/brokers.py), read back with
that broker's own client; and fails fast, with an error, when the broker is not there."""

from __future__ import annotations

import asyncio
import json

import aio_pika
import aiomqtt
import nats
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
from geoserver.delivery.endpoints import open_sender, parse_endpoint
from helpers import free_port

EVENT = json.dumps({"command": "set", "detect": "enter", "hook": "warehouse", "key": "fleet",
                    "id": "truck1", "object": {"type": "Point", "coordinates": [-115.5, 33.5]}}).encode()


async def send(url: str, payload: bytes = EVENT, timeout: float = 5.0) -> None:
    sender = open_sender(parse_endpoint(url), timeout)
    try:
        await sender.send(payload)
    finally:
        await sender.close()


async def test_http_posts_the_event_json(receiver: Receiver) -> None:
    await send(receiver.url("endpoint?x=1"))
    assert receiver.bodies == [EVENT]


@pytest.mark.parametrize("status", [201, 202])
async def test_http_accepts_201_and_202(receiver: Receiver, status: int) -> None:
    receiver.status = status
    await send(receiver.url())
    assert receiver.bodies == [EVENT]


@pytest.mark.parametrize("status", [204, 301, 404, 500, 503])
async def test_http_other_statuses_are_failures(receiver: Receiver, status: int) -> None:
    receiver.status = status
    with pytest.raises(ConnectionError, match=f"HTTP {status}"):
        await send(receiver.url())


async def test_redis_publishes_to_the_channel(redis_broker: Broker) -> None:
    client = aioredis.Redis(port=redis_broker.port)
    pubsub = client.pubsub()
    await pubsub.subscribe("fleet events")
    await pubsub.get_message(timeout=5)  # the subscribe confirmation
    await send(f"redis://127.0.0.1:{redis_broker.port}/fleet%20events")
    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    assert message is not None and message["data"] == EVENT
    await pubsub.aclose()
    await client.aclose()


async def test_nats_publishes_to_the_subject(nats_broker: Broker) -> None:
    conn = await nats.connect(f"nats://127.0.0.1:{nats_broker.port}")
    sub = await conn.subscribe("fleet.events")
    await conn.flush()
    await send(f"nats://127.0.0.1:{nats_broker.port}/fleet.events")
    message = await sub.next_msg(timeout=5)
    assert message.data == EVENT
    await conn.close()


async def test_nats_jetstream_is_acknowledged_and_stored(nats_broker: Broker) -> None:
    conn = await nats.connect(f"nats://127.0.0.1:{nats_broker.port}")
    js = conn.jetstream()
    await js.add_stream(name="FLEET", subjects=["fleet.stored"])
    await send(f"nats://127.0.0.1:{nats_broker.port}/fleet.stored?jetstream=true")
    stored = await js.get_last_msg("FLEET", "fleet.stored")
    assert stored.data == EVENT
    await js.delete_stream("FLEET")
    await conn.close()


async def test_nats_jetstream_without_a_stream_is_a_failure(nats_broker: Broker) -> None:
    with pytest.raises(Exception):  # noqa: B017 - nats-py's NoRespondersError: nothing stored it
        await send(f"nats://127.0.0.1:{nats_broker.port}/nostream.here?jetstream=true", timeout=2)


@pytest.mark.parametrize(("query", "qos", "retain"), [("", 0, False), ("?qos=1", 1, False),
                                                      ("?qos=2&retained=1", 2, True)])
async def test_mqtt_publishes_with_qos_and_retain(mqtt_broker: Broker, query: str, qos: int,
                                                  retain: bool) -> None:
    topic = f"fleet/events/q{qos}"
    async with aiomqtt.Client("127.0.0.1", mqtt_broker.port) as client:
        await client.subscribe(topic, qos=2)
        await send(f"mqtt://127.0.0.1:{mqtt_broker.port}/{topic}{query}")
        async with asyncio.timeout(5):
            message = await anext(aiter(client.messages))
    assert message.payload == EVENT and message.qos == qos
    if retain:  # a subscriber that comes later gets the retained event
        async with aiomqtt.Client("127.0.0.1", mqtt_broker.port) as late:
            await late.subscribe(topic)
            async with asyncio.timeout(5):
                again = await anext(aiter(late.messages))
            assert again.payload == EVENT and again.retain
            await late.publish(topic, b"", retain=True)  # clear it


async def test_amqp_declares_like_tile38_and_publishes(amqp_broker: Broker) -> None:
    base = amqp_broker.extra["url"]
    await send(f"{base}/fleet_q?route=trucks&delivery_mode=2")
    conn = await aio_pika.connect(str(base))
    channel = await conn.channel()
    queue = await channel.declare_queue("fleet_q", durable=True, passive=True)  # Tile38 declared it
    message = await queue.get(timeout=5)
    assert message.body == EVENT and message.content_type == "application/json"
    assert message.routing_key == "trucks" and message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.exchange == "fleet_q"
    await message.ack()
    await conn.close()


async def test_amqp_vhost_form(amqp_broker: Broker) -> None:
    base = amqp_broker.extra["url"]
    await send(f"{base}/%2F/fleet_vq/")  # `/vhost/queue/`: the default vhost "/" escaped
    conn = await aio_pika.connect(str(base))
    queue = await (await conn.channel()).declare_queue("fleet_vq", durable=True, passive=True)
    assert (await queue.get(timeout=5)).body == EVENT
    await conn.close()


@pytest.mark.parametrize("url", ["http://127.0.0.1:{port}/x", "redis://127.0.0.1:{port}/c",
                                 "nats://127.0.0.1:{port}/s", "mqtt://127.0.0.1:{port}/t",
                                 "amqp://guest:guest@127.0.0.1:{port}/q"])
async def test_endpoint_down_fails_within_the_timeout(url: str) -> None:
    port = free_port()  # nothing listens there
    async with asyncio.timeout(5):
        with pytest.raises(Exception):  # noqa: B017 - each client library's own connection error
            await send(url.format(port=port), timeout=2)
