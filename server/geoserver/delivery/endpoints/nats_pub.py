"""nats:// endpoints: publish to the subject with nats-py. Delivered means the server answered
the flush that follows the publish (so the message reached it), or, with `jetstream=true`,
that JetStream acknowledged it (stored in a stream)."""

from __future__ import annotations

import ssl

import nats
from nats.aio.client import Client

from geoserver.delivery.endpoints.urls import Endpoint, NatsOptions


class Sender:
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        assert isinstance(endpoint.options, NatsOptions)
        self.endpoint, self.options, self.timeout = endpoint, endpoint.options, timeout
        self._conn: Client | None = None

    async def _connect(self) -> Client:
        o = self.options
        scheme = "tls" if o.secure or o.tls else "nats"
        context: ssl.SSLContext | None = None
        if scheme == "tls":
            context = ssl.create_default_context()
            if o.tls:
                context.load_cert_chain(o.tls_cert, o.tls_key)

        async def quiet(exc: Exception) -> None:  # failures surface from send(), not the log
            return None

        return await nats.connect(
            servers=[f"{scheme}://{self.endpoint.host}:{self.endpoint.port}"],
            user=o.user or None, password=o.password or None, token=o.token or None,
            user_credentials=o.credential or None, tls=context, connect_timeout=max(1, round(self.timeout)),
            # one try (nats-py's 0 means "forever"): the worker owns retries and backoff
            allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0, error_cb=quiet)

    async def send(self, payload: bytes) -> None:
        try:
            if self._conn is None or self._conn.is_closed:
                self._conn = await self._connect()
            if self.options.jetstream:
                await self._conn.jetstream().publish(self.endpoint.target, payload, timeout=self.timeout)
            else:
                await self._conn.publish(self.endpoint.target, payload)
                await self._conn.flush(timeout=max(1, round(self.timeout)))
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if not conn.is_closed:
                await conn.close()
