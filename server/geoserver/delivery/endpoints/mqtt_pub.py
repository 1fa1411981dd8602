"""mqtt:// endpoints: publish to the topic with aiomqtt, at the URL's qos and retained flag
(Tile38's parameters). Delivered means, at qos 1 and 2, the broker's PUBACK/PUBCOMP; at qos 0,
that the message was written to the broker's connection (MQTT has no reply at qos 0)."""

from __future__ import annotations

import contextlib
import secrets
import ssl

import aiomqtt

from geoserver.delivery.endpoints.urls import Endpoint, MqttOptions


class Sender:
    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        assert isinstance(endpoint.options, MqttOptions)
        self.endpoint, self.options, self.timeout = endpoint, endpoint.options, timeout
        self._client: aiomqtt.Client | None = None

    def _tls(self) -> ssl.SSLContext | None:
        o = self.options
        if not (o.ca_cert or o.cert):
            return None
        context = ssl.create_default_context(cafile=o.ca_cert or None)
        if o.cert:
            context.load_cert_chain(o.cert, o.key)
        return context

    async def send(self, payload: bytes) -> None:
        try:
            if self._client is None:
                client = aiomqtt.Client(self.endpoint.host, self.endpoint.port, timeout=self.timeout,
                                        identifier=f"geoserver-{secrets.token_hex(8)}",
                                        tls_context=self._tls())
                await client.__aenter__()  # a long-lived connection, closed by close()
                self._client = client
            await self._client.publish(self.endpoint.target, payload, qos=self.options.qos,
                                       retain=self.options.retained, timeout=self.timeout)
        except Exception:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(aiomqtt.MqttError):  # already disconnected
                await client.__aexit__(None, None, None)
