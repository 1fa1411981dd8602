"""amqp:// and amqps:// endpoints with aio-pika, declared as Tile38 does: an exchange named
after the queue (the URL's type, durable, auto_delete, internal), and unless the type is
`topic`, a queue of that name bound to it with the route key. Publishes use publisher confirms,
so delivered means the broker confirmed the message. `immediate` is refused by RabbitMQ 3+ and
`no_wait` cannot be combined with confirms: both are accepted in URLs and not sent."""

from __future__ import annotations

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange

from geoserver.delivery.endpoints.urls import AmqpOptions, Endpoint


class Sender:
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        assert isinstance(endpoint.options, AmqpOptions)
        self.endpoint, self.options, self.timeout = endpoint, endpoint.options, timeout
        self._conn: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None

    async def _open(self) -> AbstractExchange:
        o, name = self.options, self.endpoint.target
        self._conn = await aio_pika.connect(o.uri, timeout=self.timeout)
        channel: AbstractChannel = await self._conn.channel(publisher_confirms=True)
        exchange = await channel.declare_exchange(name, o.type, durable=o.durable, auto_delete=o.auto_delete,
                                                  internal=o.internal, timeout=self.timeout)
        if o.type != "topic":
            queue = await channel.declare_queue(name, durable=o.durable, auto_delete=o.auto_delete,
                                                timeout=self.timeout)
            await queue.bind(exchange, o.route, timeout=self.timeout)
        return exchange

    async def send(self, payload: bytes) -> None:
        try:
            if self._exchange is None:
                self._exchange = await self._open()
            message = aio_pika.Message(payload, content_type="application/json",
                                       delivery_mode=aio_pika.DeliveryMode(self.options.delivery_mode),
                                       priority=self.options.priority)
            await self._exchange.publish(message, self.options.route, mandatory=self.options.mandatory,
                                         timeout=self.timeout)
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        self._exchange = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()
