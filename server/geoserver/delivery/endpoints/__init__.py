"""Endpoint kinds behind one interface, chosen by URL scheme.

`parse_endpoint(url)` (pure, see urls.py) is what SETHOOK calls to validate a URL: it raises
`EndpointError` with the reason for a malformed URL and for a kind that is not built.
`open_sender(endpoint, timeout)` gives a `Sender` for a parsed endpoint; each kind is one small
module imported on first use, so a server with no amqp hook never imports aio-pika. Adding a
kind (kafka, sqs, ...) is one module with a `Sender` class plus one line in `SENDERS`.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from typing import Protocol

from geoserver.delivery.endpoints.urls import NOT_BUILT, Endpoint, EndpointError, parse_endpoint

__all__ = ["NOT_BUILT", "SENDERS", "Endpoint", "EndpointError", "Sender", "load_kind", "open_sender",
           "parse_endpoint"]


class Sender(Protocol):
    """A connection to one endpoint, opened lazily and reopened after a failure."""

    async def send(self, payload: bytes) -> None:
        """Deliver one event; return only once the peer took it (HTTP 200/201/202, the broker's
        reply or acknowledgement where the protocol has one); raise on failure."""

    async def close(self) -> None:
        """Drop the connection (idle, failed, or the worker stopping)."""


# kind -> module holding its `Sender(endpoint, timeout)`
SENDERS = {
    "http": "geoserver.delivery.endpoints.webhook",
    "redis": "geoserver.delivery.endpoints.redis_pub",
    "nats": "geoserver.delivery.endpoints.nats_pub",
    "mqtt": "geoserver.delivery.endpoints.mqtt_pub",
    "amqp": "geoserver.delivery.endpoints.amqp_pub",
}


def open_sender(endpoint: Endpoint, timeout: float) -> Sender:
    """A sender for `endpoint`; `timeout` bounds each connect and each send, in seconds."""
    module = importlib.import_module(SENDERS[endpoint.kind])
    return module.Sender(endpoint, timeout)


async def load_kind(kind: str) -> None:
    """Import a kind's module (and its client library) in a thread: importing aiohttp or
    nats-py takes 0.1-0.8 s, which would hold the loop, and every write with it."""
    name = SENDERS[kind]
    if name not in sys.modules:
        await asyncio.to_thread(importlib.import_module, name)
