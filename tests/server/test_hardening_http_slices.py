"""Big HTTP replies written in pieces (issue 9: no single reply may stall the loop).

A big SCAN / WITHIN / NEARBY / KEYS answered over HTTP is written as the pieces it was
encoded in (protocol/http.py `_send_pieces`, commands/slices.send), after a head whose
Content-Length is the joined body's: the bytes on the wire are those of the one-piece
response. In-process: the server's own Server and Client protocol on a real 127.0.0.1 listener,
the slice threshold lowered with monkeypatch so a small dataset takes the sliced path (the code
is the same; only the sizes that choose it differ). Real process: 120k objects over HTTP, a
reply left unread while other clients are served, and the hard output limit.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from geoserver import dispatch
from geoserver.commands import slices
from geoserver.config import ServerConfig
from geoserver.protocol.resp import encode_command
from geoserver.server import Client, Server
from helpers import GeoServer, free_port, wait_until
from wire import Wire, encode

N = 2_000
WORLD = "BOUNDS+-90+-180+90+180"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv = Server(ServerConfig(dir=tmp_path_factory.mktemp("http-slices"), appendonly=False,
                              cors_origins="https://ok.example"))
    for i in range(N):
        fields = [b"FIELD", b"speed", b"%d" % (i % 40)] if i % 3 == 0 else []
        lat, lon = -60 + (i * 7919 % 120_000) / 1000.0, -170 + (i * 104_729 % 340_000) / 1000.0
        dispatch.apply_record(srv, [b"SET", b"k", b"id%d" % i, *fields, b"POINT",
                                    b"%.4f" % lat, b"%.4f" % lon])
    dispatch.apply_record(srv, [b"SET", b"k", b"bin\xff\xfe", b"POINT", b"1", b"2"])
    for i in range(50):
        poly = (b'{"type":"Polygon","coordinates":[[[%d,1],[%d,1],[%d,2],[%d,1]]]}'
                % (i, i + 1, i + 1, i))
        dispatch.apply_record(srv, [b"SET", b"k", b"shape%d" % i, b"OBJECT", poly])
    return srv


REQUESTS = [
    b"GET /SCAN+k+LIMIT+100000 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /SCAN+k+LIMIT+100000+POINTS HTTP/1.1\r\nHost: x\r\nOrigin: https://ok.example\r\n\r\n",
    b"HEAD /SCAN+k+LIMIT+100000+IDS HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /WITHIN+k+LIMIT+100000+" + WORLD.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /NEARBY+k+DISTANCE+LIMIT+100000+POINT+0+0 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /KEYS+* HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 28\r\n\r\nSCAN k LIMIT 100000 HASHES 5",
]


async def _exchange(server: Server, request: bytes) -> bytes:
    """Everything the server sends for one request, through a real listener."""
    port = free_port()
    listener = await asyncio.get_running_loop().create_server(lambda: Client(server), "127.0.0.1", port)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        data = await reader.read()  # the server closes after its response
        writer.close()
        return data
    finally:
        listener.close()


def _normal(data: bytes) -> bytes:
    """The response without what differs between two runs: JSON's elapsed and the
    Content-Length that counts it (checked against the body first)."""
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    if not head.startswith(b"HEAD"):
        assert length == len(body) or not body
    head = re.sub(rb"Content-Length: \d+", b"Content-Length: _", head)
    return head + b"\r\n\r\n" + re.sub(rb'"elapsed":"[^"]*"', b'"elapsed":""', body)


@pytest.mark.parametrize("request_bytes", REQUESTS, ids=lambda r: r.split(b" HTTP")[0].decode())
def test_http_reply_in_pieces_equals_one_piece(server: Server, request_bytes: bytes,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slices, "SLICE", 10**9)
    whole = asyncio.run(_exchange(server, request_bytes))
    sent: list[int] = []
    real_send = slices.send

    async def counting_send(client: Client, chunks: list[bytes]) -> None:
        sent.append(len(chunks))
        await real_send(client, chunks)  # type: ignore[arg-type]

    monkeypatch.setattr(slices, "send", counting_send)
    monkeypatch.setattr(slices, "SLICE", 0)
    monkeypatch.setattr(slices, "STEP", 97)  # many pieces
    pieces = asyncio.run(_exchange(server, request_bytes))
    head_only = request_bytes.startswith(b"HEAD")
    assert sent == [1] if head_only else (sent and sent[0] > 3), "the reply went out in pieces"
    assert whole.startswith(b"HTTP/1.1 200 OK\r\n")
    if not request_bytes.startswith(b"HEAD"):
        assert whole.count(b"id") > 500 or b"KEYS" in request_bytes
    else:
        assert whole.endswith(b"\r\n\r\n")
    assert _normal(pieces) == _normal(whole)


def test_http_big_reply_from_a_script_context_is_joined(server: Server,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a connection (Lua scripts) a sliced reply is still one piece of bytes."""
    from geoserver.commands.base import Ctx

    monkeypatch.setattr(slices, "STEP", 97)
    ctx = Ctx(server, None, False, 0.0, server.db)
    out = slices.run(slices.reply(ctx, [str(i) for i in range(1000)], "ids"))
    assert isinstance(out, bytes) and out.startswith(b"*1000\r\n$1\r\n0\r\n")
    assert out.endswith(b"$3\r\n999\r\n")


# ---- a real server with 120k objects ------------------------------------------------------------

BIG = 120_000


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    data = tmp_path_factory.mktemp("http-slices-live") / "data"
    data.mkdir()
    (data / "appendonly.aof").write_bytes(b"".join(
        encode_command([b"SET", b"big", b"id%06d" % i, b"POINT", b"%.4f" % (-60 + (i % 1200) / 10),
                        b"%.4f" % (-170 + (i // 1200) / 10)]) for i in range(BIG)))
    srv = GeoServer(data).start()
    wait_until(lambda: srv.json("SCAN", "big", "COUNT").get("count") == BIG, 60, message="loaded")
    yield srv
    srv.kill9()


def _http(port: int, path: str, rcvbuf: int = 0) -> bytes:
    with socket.socket() as sock:
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.settimeout(60)
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
        return data


@pytest.mark.parametrize("path", ["/SCAN+big+LIMIT+1000000", "/WITHIN+big+LIMIT+1000000+IDS+" + WORLD])
def test_http_body_equals_the_json_reply(live: GeoServer, path: str) -> None:
    """The HTTP body of a 120k-row reply (sliced, in pieces) is the JSON-over-RESP reply's."""
    data = _http(live.port, path)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: %d" % len(body) in head
    assert body.endswith(b"}\r\n")
    doc = orjson.loads(body)
    assert doc["ok"] and doc["count"] == BIG
    args = path.lstrip("/").split("+")
    with Wire(live.port) as w:
        w.send(encode("OUTPUT", "json"))
        w.read_frame()
        _, _, bulk = w.raw(*args).partition(b"\r\n")
    elapsed = re.compile(rb'"elapsed":"[^"]*"')
    assert elapsed.sub(b"", body.rstrip(b"\r\n")) == elapsed.sub(b"", bulk.rstrip(b"\r\n"))


def test_unread_http_reply_others_served(live: GeoServer) -> None:
    """A ~5 MB HTTP reply its client does not read yet waits at the high-water mark in pieces:
    other clients are served meanwhile, then the whole response arrives."""
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    slow.connect(("127.0.0.1", live.port))
    with slow, Wire(live.port) as other:
        slow.sendall(b"GET /SCAN+big+LIMIT+1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(20):
            assert other.call("PING") == "PONG"
        assert other.call("SET", "k2", "a", "POINT", 1, 2) == "OK"
        slow.settimeout(60)
        data = b""
        while chunk := slow.recv(1 << 20):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert orjson.loads(body)["count"] == BIG


def test_http_big_reply_over_hard_limit_disconnects(live: GeoServer, tmp_path: Path) -> None:
    """The hard output limit holds for an HTTP reply written in pieces."""
    c = live.client()
    old = c.execute_command("CONFIG", "GET", "client-output-buffer-limit")[1]
    c.execute_command("CONFIG", "SET", "client-output-buffer-limit", "normal 2mb 0 0")
    try:
        data = _http(live.port, "/SCAN+big+LIMIT+1000000")
        assert b'"count":120000' not in data
        wait_until(lambda: "over the hard limit" in live.log(), 10, message="hard-limit log line")
        assert live.json("PING")["ok"]
    finally:
        c.execute_command("CONFIG", "SET", "client-output-buffer-limit", old)
