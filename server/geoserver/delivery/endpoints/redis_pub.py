"""redis:// endpoints: PUBLISH channel event (redis-py's asyncio client). Delivered means the
redis server replied to the PUBLISH; whether a subscriber was listening is redis's business,
as in Tile38."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from geoserver.delivery.endpoints.urls import Endpoint


class Sender:
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.channel = endpoint.target
        self.host, self.port, self.timeout = endpoint.host, endpoint.port, timeout
        self._client: aioredis.Redis | None = None

    async def send(self, payload: bytes) -> None:
        if self._client is None:
            self._client = aioredis.Redis(host=self.host, port=self.port, socket_timeout=self.timeout,
                                          socket_connect_timeout=self.timeout,
                                          retry=Retry(NoBackoff(), 0))  # the worker retries
        try:
            await self._client.publish(self.channel, payload)
        except Exception:
            await self.close()  # a fresh connection for the retry
            raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
