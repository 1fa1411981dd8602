"""HTTP on the same port as RESP, as Tile38 does: `GET /SET+fleet+t1+POINT+33+-115`,
`POST /` with the command line as body, plus `/metrics` (Prometheus) and `/healthz`.
Requests are parsed with h11; every response closes the connection. Unlike Tile38, admin
commands need POST, other sites' pages cannot write, and CORS is off unless `cors-origins`
names the origin (security.py decides; docs/security.md)."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast
from urllib.parse import unquote_to_bytes

import h11
import orjson
from wsproto.utilities import generate_accept_token

from geoserver import dispatch
from geoserver.commands import TABLE, slices
from geoserver.errors import AUTH_REQUIRED, ProtocolError, request_too_large
from geoserver.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from geoserver.protocol.framing import split_command_line
from geoserver.protocol.output import Chunks
from geoserver.security import http_refusal, origin_allowed, password_matches

if TYPE_CHECKING:
    from geoserver.server import Client, Server

JSON_TYPE = "application/json; charset=utf-8"
_METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"DELETE ", b"PATCH ")
_REASONS = {200: b"OK", 204: b"No Content", 400: b"Bad Request", 401: b"Unauthorized",
            403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
            500: b"Internal Server Error"}


_HTTP_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/\d\.\d\r?$")


def looks_like_http(data: bytes) -> bool:
    """An HTTP request line, as Tile38 decides it: a method and a line that ends in ` HTTP/x.y`.
    `GET fleet truck1` typed in telnet is a command, not a request (it used to hang). A first
    chunk without a whole line yet counts as HTTP when it starts with a method and cannot be
    a short telnet command (browsers and curl send the request line at once)."""
    if not data.startswith(_METHODS):
        return False
    line, newline, _ = data.partition(b"\n")
    if newline:
        return bool(_HTTP_LINE.match(line))
    return b" HTTP/" in line or len(line) > 1024


@dataclass
class HttpRequest:
    method: str
    target: bytes
    body: bytes
    password: str | None
    headers: dict[str, str]


class HttpRequestParser:
    """Feed bytes; returns the request once complete. The request line and headers are capped
    at `max_head` bytes (h11 buffers them until complete), the body at `max_body`, or at
    `preauth_body` when a password is set and the Authorization header does not carry it."""

    def __init__(self, max_head: int, max_body: int, requirepass: str = "", preauth_body: int = 0) -> None:
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self._max = max_body
        self._requirepass = requirepass
        self._preauth_body = preauth_body
        self._request: h11.Request | None = None
        self._headers: dict[str, str] = {}
        self._body = bytearray()

    def feed(self, data: bytes) -> HttpRequest | None:
        self._conn.receive_data(data)
        while True:
            try:
                event = self._conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise ProtocolError(f"invalid HTTP request: {exc}") from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Request):
                self._request = event
                self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
                auth = self._headers.get("authorization")
                if self._requirepass and not (auth and password_matches(auth, self._requirepass)):
                    self._max = min(self._max, self._preauth_body)
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > self._max:
                    raise request_too_large(self._max)
            elif isinstance(event, h11.EndOfMessage):
                assert self._request is not None
                return HttpRequest(self._request.method.decode(), bytes(self._request.target),
                                   bytes(self._body), self._headers.get("authorization"), self._headers)
            else:
                return None


class Sent(bytes):
    """The body `handle` returns when it has already written the whole response itself (a big
    reply, in pieces): `response` of it is empty, so the caller's write adds nothing."""


SENT = Sent()


def response(status: int, body: bytes, content_type: str = JSON_TYPE, head_only: bool = False,
             cors_origin: str | None = None) -> bytes:
    """A whole HTTP/1.1 response; for HEAD, the headers of the GET answer without its body.
    CORS headers only for an origin `cors-origins` allows (Tile38 sends `*` to everyone)."""
    if isinstance(body, Sent):
        return b""
    return response_head(status, len(body), content_type, cors_origin) + (b"" if head_only else body)


def response_head(status: int, length: int, content_type: str = JSON_TYPE,
                  cors_origin: str | None = None) -> bytes:
    """The status line and headers of a response whose body is `length` bytes."""
    head = [
        b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"OK")),
        b"Content-Type: " + content_type.encode(),
        b"Connection: close",
        b"Content-Length: %d" % length,
    ]
    if cors_origin is not None:
        head += [b"Access-Control-Allow-Origin: " + cors_origin.encode("latin-1"), b"Vary: Origin",
                 b"Access-Control-Allow-Methods: POST, GET, OPTIONS",  # Tile38's values
                 b"Access-Control-Allow-Headers: *, Authorization"]
    return b"\r\n".join(head) + b"\r\n\r\n"


def stream_head(content_type: str = JSON_TYPE, cors_origin: str | None = None) -> bytes:
    """The head of a response whose body comes as chunks (a live fence, a subscription)."""
    head = [b"HTTP/1.1 200 OK", b"Content-Type: " + content_type.encode(), b"Connection: close",
            b"Transfer-Encoding: chunked"]
    if cors_origin is not None:
        head += [b"Access-Control-Allow-Origin: " + cors_origin.encode("latin-1"), b"Vary: Origin"]
    return b"\r\n".join(head) + b"\r\n\r\n"


def websocket_accept(request: HttpRequest) -> bytes | None:
    """The 101 answer to a WebSocket upgrade (RFC 6455, as Tile38 takes live fences and
    subscriptions over ws://), or None for a plain request."""
    headers = request.headers
    key = headers.get("sec-websocket-key")
    if headers.get("upgrade", "").lower() != "websocket" or not key:
        return None
    token = generate_accept_token(key.strip().encode("latin-1"))
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + token + b"\r\n\r\n")


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


def allowed_origin(request: HttpRequest, allowed: str) -> str | None:
    """The origin to name in Access-Control-Allow-Origin, if the request's is allowed."""
    origin = request.headers.get("origin")
    return origin if origin is not None and origin_allowed(origin, allowed) else None


def json_error_body(message: str) -> bytes:
    return orjson.dumps({"ok": False, "err": message, "elapsed": "0s"}) + b"\r\n"


async def handle(client: Client, request: HttpRequest) -> tuple[int, str, bytes]:
    """Run the request's command (or serve /metrics); returns status, content type, body."""
    server = client.server
    path = request.target.split(b"?", 1)[0]
    if request.method == "OPTIONS":
        return 204, JSON_TYPE, b""
    if path == b"/metrics":  # on the client port it is as private as the data
        if server.requirepass and not client.authed:
            return 401, JSON_TYPE, json_error_body(AUTH_REQUIRED)
        return 200, METRICS_CONTENT_TYPE, server.metrics.render()
    line = unquote_to_bytes(path.lstrip(b"/").replace(b"+", b" "))
    if request.method == "POST" and request.body:
        line = (line + b" " + request.body).strip()
    try:
        argv = split_command_line(line)
    except ProtocolError as exc:
        return 400, JSON_TYPE, json_error_body(exc.message)
    if not argv:
        return 200, JSON_TYPE, orjson.dumps({"ok": True, "elapsed": "0s"}) + b"\r\n"
    cmd = TABLE.get(argv[0].decode("utf-8", "replace").lower())
    if cmd is not None:
        status, refusal = http_refusal(request.method, cmd.write, cmd.admin, request.headers,
                                       server.config.cors_origins)
        if refusal:
            return status, JSON_TYPE, json_error_body(refusal)
    reply = dispatch.execute(server, client, argv, json=True)
    body = reply if isinstance(reply, bytes) else await reply
    if isinstance(body, Chunks):  # a big reply (commands/slices.reply): written in pieces
        return await _send_pieces(client, request, body)
    status = 200
    if argv[0].lower() == b"healthz" and body.startswith(b'{"ok":false'):
        status = 500  # load balancers and kubelet probes read the status code
    return status, JSON_TYPE, body + b"\r\n"


async def _send_pieces(client: Client, request: HttpRequest, chunks: Chunks) -> tuple[int, str, bytes]:
    """Write a big 200 reply as the pieces it was encoded in (slices.send: a loop turn between
    them, the high-water pause and the output limits), with the head and Content-Length the
    joined body would get, so the bytes on the wire are the same; returns SENT. A WebSocket
    upgrade, an event stream, or a failed AOF flush (a 500 instead) take the one-piece path."""
    server = client.server
    if websocket_accept(request) is not None or client.events_only or not server.flush_aof():
        return 200, JSON_TYPE, b"".join(chunks) + b"\r\n"
    chunks.append(b"\r\n")
    head = response_head(200, chunks.nbytes, JSON_TYPE,
                         allowed_origin(request, server.config.cors_origins))
    if request.method == "HEAD":
        chunks.clear()
    chunks.insert(0, head)
    await slices.send(client, chunks)
    return 200, JSON_TYPE, SENT


METRICS_INDEX = (b"<html><head><title>Tile38 (geoserver)</title></head><body><h1>Tile38 (geoserver)</h1>"
                 b"<p><a href='/metrics'>Metrics</a></p><p><a href='/healthz'>Health</a></p>"
                 b"</body></html>\n")


class MetricsClient(asyncio.Protocol):
    """The `--metrics-addr` listener: serves only /metrics and /healthz."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = HttpRequestParser(server.config.max_inline_size, 1 << 16)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            request = self.parser.feed(data)
        except ProtocolError as exc:
            self.transport.write(response(400, json_error_body(exc.message)))
            self.transport.close()
            return
        if request is None:
            return
        path = request.target.split(b"?", 1)[0]
        if path == b"/metrics":
            out = response(200, self.server.metrics.render(), METRICS_CONTENT_TYPE)
        elif path == b"/":  # Tile38's index page
            out = response(200, METRICS_INDEX, "text/html; charset=utf-8")
        elif path == b"/healthz":
            from geoserver.commands.server import health_error

            err = health_error(self.server)
            out = response(500 if err else 200, json_error_body(err) if err else b'{"ok":true}\r\n')
        else:
            out = response(404, json_error_body("not found"))
        self.transport.write(out)
        self.transport.close()
