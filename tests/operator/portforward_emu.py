"""An emulated API server with the pod ``portforward`` subresource over WebSocket.

Mocked: only the Kubernetes API server and the kubelet behind it (none can run here); the
bytes go on to a real geoserver on the Pod's ``status.podIP``. kmock has no WebSocket
support, so :class:`PortForwardEmulator` answers that one path itself with aiohttp and
leaves every other request to :class:`opharness.KopfEmulator`.

Emulated exactly as kube-apiserver and the kubelet's streaming server do it
(kubernetes ``pkg/kubelet/cri/streaming/portforward/websocket.go``, ``wsstream``):
- ``GET /api/v1/namespaces/<ns>/pods/<pod>/portforward?ports=<p>[,<p>...]`` with a WebSocket
  upgrade; the subprotocol is chosen in the client's order among ``v4.channel.k8s.io`` and
  ``v4.base64.channel.k8s.io`` (only the binary one is implemented; the official client
  offers ``v5.channel.k8s.io, v4.channel.k8s.io`` and gets v4);
- per port, channel ``2i`` carries data both ways and ``2i+1`` errors from the server; each
  channel's first frame is the port number as a little-endian uint16;
- a port that cannot be dialled: ``error forwarding port <p> to pod <pod>, uid : ...`` on
  its error channel, then the connection ends;
- authorization before the upgrade: a pod in :attr:`forbidden` gets the API server's 403
  Status (``... cannot create resource "pods/portforward" ...``), a missing pod 404, a
  request without ``ports`` 400.
Not emulated: the v5 close-channel frames, base64 framing, SPDY, idle timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from urllib.parse import parse_qs

import aiohttp
import aiohttp.web
from kmock._internal import rendering
from opharness import KopfEmulator

BINARY = "v4.channel.k8s.io"
SUPPORTED = (BINARY, "v4.base64.channel.k8s.io")
STALL = 3.0


def status(code: int, reason: str, message: str) -> aiohttp.web.Response:
    return aiohttp.web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "message": message, "reason": reason, "code": code}, status=code)


class PortForwardEmulator(KopfEmulator):
    """KopfEmulator plus ``pods/<pod>/portforward`` (module docstring)."""

    forbidden: tuple[str, ...] = ()  # pod names whose portforward RBAC denies
    stalled: tuple[str, ...] = ()  # pod names whose upgrade is answered only after STALL seconds
    user = "me"

    async def _handle(self, request: rendering.Request):
        parts = request.url.path.strip("/").split("/")
        if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" \
                and parts[6] == "portforward":
            return await self._portforward(request, parts[3], parts[5])
        return await super()._handle(request)

    async def _portforward(self, request: rendering.Request, ns: str, name: str):
        raw = request._raw_request
        assert raw is not None
        if name in self.stalled:  # a hung API server (then a 504, so the test's teardown can end)
            await asyncio.sleep(STALL)
            return status(504, "Timeout", "the server was unable to return a response in the time allotted")
        if name in self.forbidden:
            return status(403, "Forbidden", f'pods "{name}" is forbidden: User "{self.user}" cannot '
                          f'create resource "pods/portforward" in API group "" in the namespace "{ns}"')
        try:
            pod = self.objects[("v1/pods", ns, name)]
        except KeyError:
            pod = None
        if pod is None or pod.deleted:
            return status(404, "NotFound", f'pods "{name}" not found')
        ports = [int(p) for v in parse_qs(raw.url.query_string).get("ports", []) for p in v.split(",") if p]
        if not ports:
            return status(400, "BadRequest", 'query parameter "port" is required')
        offered = [p.strip() for p in raw.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        chosen = next((p for p in offered if p in SUPPORTED), None)
        if offered and chosen != BINARY:
            return status(400, "BadRequest", f"requested protocol(s) are not supported: {offered}")
        ws = aiohttp.web.WebSocketResponse(protocols=(BINARY,) if chosen else ())
        await ws.prepare(raw)
        for i, port in enumerate(ports):
            for channel in (2 * i, 2 * i + 1):
                await ws.send_bytes(bytes([channel]) + struct.pack("<H", port))
        ip = pod["status"]["podIP"]
        # bytes the client sends before the pod's port is dialled wait for it, as in the kubelet
        dialled = [asyncio.get_running_loop().create_future() for _ in ports]
        pumps = [asyncio.create_task(self._dial(ws, i, ip, port, name, dialled[i]))
                 for i, port in enumerate(ports)]  # fmt: skip
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY or not msg.data:
                    continue
                channel, data = msg.data[0], msg.data[1:]
                if channel % 2 or channel // 2 >= len(ports) or not data:
                    continue  # error channels are the server's to write
                writer = await dialled[channel // 2]
                if writer is not None:
                    writer.write(data)
                    await writer.drain()
        finally:
            for future in dialled:
                if future.done() and future.result() is not None:
                    future.result().close()
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
        return ws

    async def _dial(self, ws: aiohttp.web.WebSocketResponse, i: int, ip: str, port: int, pod: str,
                    dialled: asyncio.Future) -> None:
        """The kubelet's side of one port: dial it in the pod, pump its bytes to channel 2i."""
        try:
            reader, writer = await asyncio.open_connection(ip, port)
            dialled.set_result(writer)
        except OSError as exc:
            dialled.set_result(None)
            await ws.send_bytes(bytes([2 * i + 1]) + (
                f"error forwarding port {port} to pod {pod}, uid : failed to connect to "
                f"localhost:{port} inside namespace of the pod: {exc}").encode())
            await ws.close()
            return
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                await ws.send_bytes(bytes([2 * i]) + data)
        await ws.close()  # the pod closed the port: the forward ends
