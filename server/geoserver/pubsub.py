"""Pub/sub: channels and patterns, their subscribers, and Tile38's message shapes.

A subscriber is a connection that ran SUBSCRIBE or PSUBSCRIBE: from then on it takes only
(P)SUBSCRIBE, (P)UNSUBSCRIBE, PING and QUIT, and receives every message published to its
channels. Messages are the bytes of one event or PUBLISH; a subscriber whose connection does
not take them fast enough is cut at the `pubsub` class of client-output-buffer-limit
(server.Client.send_event). The encoders are pure; `Hub` only routes.

Shapes, as Tile38 (internal/server/pubsub.go): RESP `*3 message channel payload` and
`*4 pmessage pattern channel payload`, confirmations `*3 subscribe channel count`; JSON
connections get the payload itself (a JSON string when it is not JSON) and
`{"ok":true,"command":"subscribe","channel":...,"num":n,"elapsed":...}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from geoserver.protocol.output import dumps_json, elapsed_text
from geoserver.protocol.resp import encode_value
from geoserver.store.glob import matcher

ALLOWED = frozenset({"subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "quit"})
ONLY_PUBSUB = "only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT allowed in this context"


def is_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return True


def message_frame(json: bool, channel: bytes, payload: bytes, pattern: bytes | None = None,
                  known_json: bool = False) -> bytes:
    """One published message as a subscriber receives it (JSON: the document, which the
    connection frames as a bulk string or an HTTP chunk)."""
    if json:
        if known_json or is_json(payload):
            return payload
        return orjson.dumps(payload.decode("utf-8", "replace"))
    if pattern is None:
        return encode_value([b"message", channel, payload])
    return encode_value([b"pmessage", pattern, channel, payload])


def confirm_frame(json: bool, command: str, channel: bytes, count: int, elapsed_ns: int) -> bytes:
    """The reply to (P)(UN)SUBSCRIBE, one per channel named."""
    if json:
        return dumps_json({"ok": True, "command": command,
                           "channel": channel.decode("utf-8", "surrogateescape"),
                           "num": count, "elapsed": elapsed_text(elapsed_ns)})
    return encode_value([command.encode(), channel, count])


@dataclass(eq=False)
class Subscriber:
    """A subscribed connection: what it listens to and how it takes bytes."""

    send: Callable[[bytes], None]  # frames and writes (Client.send_json / send_raw)
    json: bool
    channels: set[bytes] = field(default_factory=set)
    patterns: set[bytes] = field(default_factory=set)

    @property
    def count(self) -> int:
        return len(self.channels) + len(self.patterns)


class Hub:
    """Who listens to what; `publish` returns how many subscribers got the message."""

    def __init__(self) -> None:
        self.channels: dict[bytes, set[Subscriber]] = {}
        self.patterns: dict[bytes, set[Subscriber]] = {}
        self.published = 0  # messages handed to subscribers

    def subscriber_count(self) -> int:
        tables = (self.channels, self.patterns)
        return len({sub for table in tables for subs in table.values() for sub in subs})

    def subscribe(self, sub: Subscriber, channel: bytes, pattern: bool) -> None:
        (sub.patterns if pattern else sub.channels).add(channel)
        (self.patterns if pattern else self.channels).setdefault(channel, set()).add(sub)

    def unsubscribe(self, sub: Subscriber, channel: bytes, pattern: bool) -> None:
        (sub.patterns if pattern else sub.channels).discard(channel)
        table = self.patterns if pattern else self.channels
        subs = table.get(channel)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del table[channel]

    def drop(self, sub: Subscriber) -> None:
        for channel in list(sub.channels):
            self.unsubscribe(sub, channel, False)
        for pattern in list(sub.patterns):
            self.unsubscribe(sub, pattern, True)

    def publish(self, channel: str | bytes, payload: bytes, known_json: bool = False) -> int:
        """`known_json`: the payload is a JSON document already (a fence event)."""
        if isinstance(channel, str):
            channel = channel.encode("utf-8", "surrogateescape")
        sent = 0
        for sub in list(self.channels.get(channel, ())):
            sub.send(message_frame(sub.json, channel, payload, None, known_json))
            sent += 1
        if self.patterns:
            name = channel.decode("utf-8", "surrogateescape")
            for pattern, subs in list(self.patterns.items()):
                if matcher(pattern.decode("utf-8", "surrogateescape"))(name):
                    for sub in list(subs):
                        sub.send(message_frame(sub.json, channel, payload, pattern, known_json))
                        sent += 1
        self.published += sent
        return sent
