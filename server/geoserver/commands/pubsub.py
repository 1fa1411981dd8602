"""Pub/sub commands: SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE PUBLISH (geoserver.pubsub).

SUBSCRIBE turns the connection into a subscriber (Client.subscriber); from then on its
commands go to `subscribed` instead of the command table, as in Tile38's liveSubscription.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from geoserver.commands.base import Ctx, command
from geoserver.errors import CommandError
from geoserver.protocol.output import dumps_json, elapsed_text
from geoserver.protocol.resp import Raw, encode_error, encode_value
from geoserver.pubsub import ALLOWED, ONLY_PUBSUB, Subscriber, confirm_frame

if TYPE_CHECKING:
    from geoserver.server import Client


def _subscribe(client: Client, names: list[bytes], pattern: bool, unsubscribe: bool, start: int) -> bytes:
    """Apply (P)(UN)SUBSCRIBE for a subscriber: one confirmation per name, framed."""
    sub = client.subscriber
    assert sub is not None
    hub = client.server.pubsub
    command = ("punsubscribe" if pattern else "unsubscribe") if unsubscribe else (
        "psubscribe" if pattern else "subscribe")
    if unsubscribe and not names:  # Redis: all of them
        names = sorted(sub.patterns if pattern else sub.channels)
    out = []
    for name in names:
        if unsubscribe:
            hub.unsubscribe(sub, name, pattern)
        else:
            hub.subscribe(sub, name, pattern)
        frame = confirm_frame(sub.json, command, name, sub.count, time.perf_counter_ns() - start)
        out.append(client.frame(frame, sub.json))
    return b"".join(out)


def _start(ctx: Ctx, argv: list[bytes], pattern: bool) -> Any:
    client = ctx.client
    if client is None:
        raise CommandError("not allowed here")
    start = time.perf_counter_ns()
    client.start_subscriber(ctx.json)
    return Raw(_subscribe(client, argv[1:], pattern, False, start))


@command("subscribe", min_args=2)
def cmd_subscribe(ctx: Ctx, argv: list[bytes]) -> Any:
    """SUBSCRIBE channel [channel ...]"""
    return _start(ctx, argv, False)


@command("psubscribe", min_args=2)
def cmd_psubscribe(ctx: Ctx, argv: list[bytes]) -> Any:
    """PSUBSCRIBE pattern [pattern ...]"""
    return _start(ctx, argv, True)


@command("unsubscribe")
def cmd_unsubscribe(ctx: Ctx, argv: list[bytes]) -> Any:
    """UNSUBSCRIBE [channel ...] -- outside subscriber mode there is nothing to leave"""
    return [] if not ctx.json else {}


@command("punsubscribe")
def cmd_punsubscribe(ctx: Ctx, argv: list[bytes]) -> Any:
    """PUNSUBSCRIBE [pattern ...] -- outside subscriber mode there is nothing to leave"""
    return [] if not ctx.json else {}


@command("publish", min_args=3, max_args=3)
def cmd_publish(ctx: Ctx, argv: list[bytes]) -> Any:
    """PUBLISH channel message"""
    n = ctx.server.pubsub.publish(argv[1], argv[2])
    return {"published": n} if ctx.json else n


def subscribed(client: Client, argv: list[bytes]) -> bytes:
    """A command from a subscriber: only (P)(UN)SUBSCRIBE, PING and QUIT (Tile38's rule).
    Returns the framed reply, which the connection sends in order with the others."""
    sub = client.subscriber
    assert sub is not None
    start = time.perf_counter_ns()
    name = argv[0].decode("utf-8", "replace").lower()
    if name not in ALLOWED:
        return _reply(client, sub, None, ONLY_PUBSUB, start)
    if name == "quit":
        client.closing = True
        return _reply(client, sub, {}, None, start)
    if name == "ping":
        if sub.json:
            said = argv[1].decode("utf-8", "replace") if len(argv) > 1 else "pong"
            return _reply(client, sub, {"ping": said}, None, start)
        return encode_value([b"PONG", argv[1] if len(argv) > 1 else b""])
    if name in ("subscribe", "psubscribe") and len(argv) < 2:
        return _reply(client, sub, None, f"wrong number of arguments for '{name}' command", start)
    return _subscribe(client, argv[1:], name.startswith("p"), "unsub" in name, start)


def _reply(client: Client, sub: Subscriber, body: dict[str, Any] | None, err: str | None,
           start: int) -> bytes:
    elapsed = elapsed_text(time.perf_counter_ns() - start)
    if sub.json:
        doc: dict[str, Any] = {"ok": err is None}
        if err is not None:
            doc["err"] = err
        doc.update(body or {})
        doc["elapsed"] = elapsed
        return client.frame(dumps_json(doc), True)
    if err is not None:
        return encode_error(err)
    return b"+OK\r\n"
