"""Endpoint URL parsing (pure): Tile38's forms and defaults, and a clear reason for every URL
that cannot be delivered to (tidwall/tile38 internal/endpoint/endpoint.go is the reference)."""

from __future__ import annotations

import pytest
from geoserver.delivery.endpoints import NOT_BUILT, SENDERS, EndpointError, open_sender, parse_endpoint
from geoserver.delivery.endpoints.urls import AmqpOptions, MqttOptions, NatsOptions

PARSED = [
    # url, kind, host, port, target
    ("http://10.0.0.1:9999/endpoint?x=1", "http", "10.0.0.1", 9999, "http://10.0.0.1:9999/endpoint?x=1"),
    ("https://example.com/hook", "http", "example.com", 443, "https://example.com/hook"),
    ("http://localhost/", "http", "localhost", 80, "http://localhost/"),
    ("redis://127.0.0.1:6380/fleet", "redis", "127.0.0.1", 6380, "fleet"),
    ("redis://cache/fleet%20events", "redis", "cache", 6379, "fleet events"),
    ("nats://127.0.0.1:4222/fleet.events", "nats", "127.0.0.1", 4222, "fleet.events"),
    ("nats://broker/fleet", "nats", "broker", 4222, "fleet"),
    ("mqtt://127.0.0.1:1884/fleet/events/all", "mqtt", "127.0.0.1", 1884, "fleet/events/all"),
    ("mqtt://broker/fleet", "mqtt", "broker", 1883, "fleet"),
    ("amqp://guest:guest@127.0.0.1:5672/fleet", "amqp", "127.0.0.1", 5672, "fleet"),
    ("amqps://u:p@mq/fleet/", "amqp", "mq", 5671, "fleet"),
    ("amqp://guest:guest@mq:5673/vhost/fleet/", "amqp", "mq", 5673, "fleet"),
]


@pytest.mark.parametrize(("url", "kind", "host", "port", "target"), PARSED)
def test_forms(url: str, kind: str, host: str, port: int, target: str) -> None:
    ep = parse_endpoint(url)
    assert (ep.kind, ep.host, ep.port, ep.target, ep.url) == (kind, host, port, target, url)
    assert ep.kind in SENDERS


def test_parameters_and_tile38_defaults() -> None:
    assert parse_endpoint("mqtt://b/t").options == MqttOptions(qos=0, retained=False)
    assert parse_endpoint("mqtt://b/t?qos=2&retained=1").options == MqttOptions(qos=2, retained=True)
    nats = parse_endpoint("nats://b:4222/t?user=u&pass=p&jetstream=true").options
    assert nats == NatsOptions(user="u", password="p", jetstream=True)
    amqp = parse_endpoint("amqp://guest:guest@mq:5672/q").options
    assert amqp == AmqpOptions(uri="amqp://guest:guest@mq:5672", route="tile38", type="direct",
                               durable=True, delivery_mode=1, priority=0)
    amqp = parse_endpoint("amqp://mq/vh/q/?route=r&type=fanout&durable=false&delivery_mode=2&priority=9"
                          "&auto_delete=1&mandatory=t").options
    assert amqp == AmqpOptions(uri="amqp://mq/vh", route="r", type="fanout", durable=False, auto_delete=True,
                               mandatory=True, delivery_mode=2, priority=9)


REFUSED = [
    ("", "unknown scheme"),
    ("fleet", "unknown scheme"),
    ("ftp://host/x", "unknown scheme 'ftp'"),
    ("redis:host/ch", "missing the two slashes"),
    ("http://", "missing host"),
    ("http://host:port/", "invalid port"),
    ("redis:///ch", "missing host"),
    ("redis://host", "missing redis channel name"),
    ("redis://host:0/ch", "invalid redis url port '0'"),
    ("redis://host:70000/ch", "invalid redis url port '70000'"),
    ("redis://host:1:2/ch", "want host[:port]"),
    ("redis://host/%zz", "bad %-escape"),
    ("redis://host/ch?db=1", "unknown redis parameter 'db' (known: none)"),
    ("nats://host:4222", "missing NATS topic name"),
    ("nats://host/t?jetstream=maybe", "invalid jetstream value 'maybe'"),
    ("nats://host/t?tls=1", "tls=true needs tlscert and tlskey"),
    ("nats://host/t?password=x", "unknown nats parameter 'password'"),
    ("mqtt://host", "missing MQTT topic name"),
    ("mqtt://host/a/+/c", "wildcard"),
    ("mqtt://host/t?qos=3", "invalid MQTT qos value '3' (want 0..2)"),
    ("mqtt://host/t?qos=x", "invalid MQTT qos value 'x'"),
    ("mqtt://host/t?retained=2", "invalid MQTT retained, should be [0, 1]"),
    ("mqtt://host/t?Qos=1", "unknown mqtt parameter 'Qos'"),
    ("mqtt://host/t?cert=/c.pem", "cert and key go together"),
    ("amqp://host/", "missing AMQP queue name"),
    ("amqp://host:x/q", "invalid amqp url port 'x'"),
    ("amqp://host/q?type=x", "invalid AMQP type 'x'"),
    ("amqp://host/q?priority=300", "invalid priority value '300' (want 0..255)"),
    ("amqp://host/q?delivery_mode=3", "invalid delivery_mode value '3' (want 1..2)"),
    ("local://fleet", "use SETCHAN"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_with_reason(url: str, reason: str) -> None:
    with pytest.raises(EndpointError) as info:
        parse_endpoint(url)
    assert reason in str(info.value)


@pytest.mark.parametrize("url", [
    "kafka://10.0.20.78:9092/warnings", "sqs://us-east-1:123/queue", "pubsub://project:topic",
    "grpc://10.0.20.78:3333", "disque://10.0.20.78:7711/q", "cf-queue://acct/queue?token=t",
    "Endpoint=sb://x.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=v;EntityPath=e",
    "https://sqs.us-east-1.amazonaws.com/123456789/queue",
])
def test_kinds_not_built(url: str) -> None:
    with pytest.raises(EndpointError, match="not built in geoserver"):
        parse_endpoint(url)


def test_every_not_built_kind_is_named() -> None:
    assert set(NOT_BUILT) == {"kafka", "sqs", "pubsub", "grpc", "disque", "cf-queue", "Endpoint="}


def test_every_built_kind_opens_a_sender_without_connecting() -> None:
    for url in ("http://h/x", "redis://h/c", "nats://h/t", "mqtt://h/t", "amqp://h/q"):
        sender = open_sender(parse_endpoint(url), 1.0)
        assert callable(sender.send) and callable(sender.close)
