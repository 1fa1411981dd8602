"""http:// and https:// endpoints: POST of the event JSON, as Tile38 (only 200, 201 and 202
count as delivered; anything else is retried)."""

from __future__ import annotations

import aiohttp

from geoserver.delivery.endpoints.urls import Endpoint

ACCEPTED = (200, 201, 202)
HEADERS = {"Content-Type": "application/json"}


class Sender:
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.url = endpoint.url
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def send(self, payload: bytes) -> None:
        if self._session is None or self._session.closed:
            # keep-alive connections to the endpoint, one pool per URL (Tile38: 20 idle per host)
            # no cookie jar (as Go's http.Client in Tile38: an endpoint's cookies are not sent back)
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, connector=aiohttp.TCPConnector(limit_per_host=20),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False)
        async with self._session.post(self.url, data=payload, headers=HEADERS) as resp:
            await resp.read()
            if resp.status not in ACCEPTED:
                raise ConnectionError(f"HTTP {resp.status} {resp.reason}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
