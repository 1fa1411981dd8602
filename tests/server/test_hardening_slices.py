"""Big replies encoded and sent in slices (issue 9: no single reply may stall the loop).

In-process: the sliced encoding (commands/slices.reply, kept as output.Chunks) gives exactly
the bytes of the one-go encoding, for every output form, in RESP, JSON over RESP and HTTP JSON.
The slice threshold and step are lowered with monkeypatch so a small dataset takes the sliced
path (the code is the same; only the sizes that choose it differ).
Real sockets: a reply far above the 4 MB high-water mark, left unread, is sent in pieces while
other clients are served, the connection's later pipelined commands wait their turn, the
bytes arrive whole, and the hard output limit still disconnects.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest
from geoserver import dispatch
from geoserver.commands import slices
from geoserver.config import ServerConfig
from geoserver.protocol.output import Chunks
from geoserver.protocol.resp import encode_command
from geoserver.server import Client, Server
from helpers import GeoServer, wait_until
from wire import Wire, encode

N = 2_500


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """An in-process Server (never started) holding points with fields, shapes, a binary id."""
    srv = Server(ServerConfig(dir=tmp_path_factory.mktemp("slices"), appendonly=False))
    for i in range(N):
        fields = [b"FIELD", b"speed", b"%d" % (i % 40)] if i % 3 == 0 else []
        if i % 7 == 0:
            fields += [b"FIELD", b"age", b"%d" % i]
        lat, lon = -60 + (i * 7919 % 120_000) / 1000.0, -170 + (i * 104_729 % 340_000) / 1000.0
        dispatch.apply_record(srv, [b"SET", b"k", b"id%d" % i, *fields, b"POINT",
                                    b"%.4f" % lat, b"%.4f" % lon])
    for i in range(40):
        poly = (b'{"type":"Polygon","coordinates":[[[%d,1],[%d,1],[%d,2],[%d,1]]]}'
                % (i, i + 1, i + 1, i))
        dispatch.apply_record(srv, [b"SET", b"k", b"shape%d" % i, b"OBJECT", poly])
    dispatch.apply_record(srv, [b"SET", b"k", b"bin\xff\xfe", b"FIELD", b"speed", b"3",
                                b"POINT", b"1", b"2"])
    for i in range(300):
        dispatch.apply_record(srv, [b"SET", b"s%03d" % i, b"x", b"POINT", b"1", b"2"])
    return srv


WORLD = ["BOUNDS", "-90", "-180", "90", "180"]
COMMANDS = [
    ["SCAN", "k", "LIMIT", "100000"],
    ["SCAN", "k", "LIMIT", "100000", "IDS"],
    ["SCAN", "k", "DESC", "LIMIT", "100000", "POINTS"],
    ["SCAN", "k", "LIMIT", "100000", "BOUNDS"],
    ["SCAN", "k", "LIMIT", "100000", "HASHES", "6"],
    ["SCAN", "k", "LIMIT", "100000", "NOFIELDS"],
    ["SCAN", "k", "CURSOR", "10", "LIMIT", "2000", "MATCH", "id1*"],
    ["SCAN", "k", "WHERE", "speed", "0", "20", "LIMIT", "100000"],
    ["NEARBY", "k", "LIMIT", "100000", "IDS", "POINT", "0", "0"],
    ["NEARBY", "k", "DISTANCE", "LIMIT", "100000", "IDS", "POINT", "0", "0"],
    ["NEARBY", "k", "DISTANCE", "LIMIT", "100000", "POINTS", "POINT", "0", "0", "9000000"],
    ["WITHIN", "k", "LIMIT", "100000", *WORLD],
    ["INTERSECTS", "k", "LIMIT", "100000", "IDS", *WORLD],
    ["KEYS", "*"],
    ["STATS", "k", "nothing", *[f"s{i:03d}" for i in range(300)]],
]


def _run(server: Server, argv: list[str], json: bool, resp_conn: bool) -> tuple[bytes, bool]:
    """The reply's bytes, and whether it ran sliced (a coroutine)."""
    client = Client(server)
    client.resp_conn = resp_conn
    reply = dispatch.execute(server, client, [a.encode() for a in argv], json)
    sliced = not isinstance(reply, bytes)
    if sliced:
        reply = asyncio.run(reply)  # type: ignore[arg-type]
    if isinstance(reply, Chunks):  # RESP and HTTP connections both get the pieces
        return b"".join(reply), sliced
    return reply, sliced


def _normal(data: bytes, json: bool, resp_conn: bool) -> bytes:
    """The reply without what differs between two runs: JSON's elapsed (and the bulk length
    that counts it)."""
    if not json:
        return data
    if resp_conn:
        head, _, body = data.partition(b"\r\n")
        assert int(head[1:]) == len(body) - 2 and body.endswith(b"\r\n")
        data = body
    return re.sub(rb'"elapsed":"[^"]*"', b'"elapsed":""', data)


@pytest.mark.parametrize("mode", ["resp", "json-resp", "http"])
@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:6]))
def test_sliced_reply_bytes_equal_one_go(server: Server, argv: list[str], mode: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    json, resp_conn = mode != "resp", mode != "http"
    monkeypatch.setattr(slices, "SLICE", 10**9)
    whole, sliced = _run(server, argv, json, resp_conn)
    assert not sliced
    monkeypatch.setattr(slices, "SLICE", 0)
    monkeypatch.setattr(slices, "STEP", 97)  # many slice boundaries
    pieces, sliced = _run(server, argv, json, resp_conn)
    assert sliced
    assert whole.count(b"id") > 200 or argv[0] in ("KEYS", "STATS")
    assert _normal(pieces, json, resp_conn) == _normal(whole, json, resp_conn)


def test_sliced_reply_is_chunks_on_resp(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """A RESP connection gets the pieces, never joined; values are released as encoded."""
    monkeypatch.setattr(slices, "SLICE", 0)
    client = Client(server)
    reply = asyncio.run(dispatch.execute(server, client, [b"SCAN", b"k", b"LIMIT", b"100000"],
                                         False))  # type: ignore[arg-type]
    assert isinstance(reply, Chunks) and len(reply) > 2
    assert hiredis.Reader().feed(b"".join(reply)) is None
    reader = hiredis.Reader()
    reader.feed(b"".join(reply))
    cursor, rows = reader.gets()
    assert cursor == 0 and len(rows) == N + 41


# ---- real sockets ------------------------------------------------------------------------------

BIG = 12_000
VALUE = b"v" * 1500  # a STRING object's value: ~18 MB of SCAN reply


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    data = tmp_path_factory.mktemp("slices-live") / "data"
    data.mkdir()
    (data / "appendonly.aof").write_bytes(b"".join(
        encode_command([b"SET", b"big", b"id%05d" % i, b"STRING", VALUE]) for i in range(BIG)))
    srv = GeoServer(data).start()
    wait_until(lambda: srv.json("SCAN", "big", "COUNT").get("count") == BIG, 60, message="loaded")
    yield srv
    srv.kill9()


def test_unread_big_reply_sent_in_pieces_others_served(live: GeoServer) -> None:
    """A ~18 MB reply its client does not read yet is sent in pieces (held at the high-water
    mark): another client is served meanwhile, the same connection's next command waits for
    its turn, and the whole reply then arrives intact and in order."""
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # before connect: a small window
    slow.connect(("127.0.0.1", live.port))
    with slow, Wire(live.port) as other:
        slow.sendall(encode("SCAN", "big", "LIMIT", 1_000_000) + encode("PING"))
        for _ in range(20):  # the server serves others while the reply is held, unread
            assert other.call("PING") == "PONG"
        assert other.call("SET", "k2", "a", "POINT", 1, 2) == "OK"
        slow.settimeout(60)
        reader = hiredis.Reader()
        replies: list[object] = []
        while len(replies) < 2:  # then it all arrives, in order
            while (reply := reader.gets()) is not False:
                replies.append(reply)
            if len(replies) < 2:
                data = slow.recv(1 << 20)
                assert data, "connection closed"
                reader.feed(data)
        cursor, rows = replies[0]  # type: ignore[misc]
        assert cursor == 0 and len(rows) == BIG
        assert rows[0] == [b"id00000", VALUE] and rows[-1] == [b"id%05d" % (BIG - 1), VALUE]
        assert replies[1] == b"PONG"
    assert live.json("PING")["ok"]


def test_big_reply_over_hard_limit_disconnects(tmp_path: Path, live: GeoServer) -> None:
    """The hard output limit applies to a reply sent in pieces as to one sent whole."""
    c = live.client()
    old = c.execute_command("CONFIG", "GET", "client-output-buffer-limit")[1]
    c.execute_command("CONFIG", "SET", "client-output-buffer-limit", "normal 2mb 0 0")
    try:
        with Wire(live.port) as w:
            w.send(encode("SCAN", "big", "LIMIT", 1_000_000))
            assert w.closed_by_peer(30)
        assert live.json("PING")["ok"]
        assert "over the hard limit" in live.log()
    finally:
        c.execute_command("CONFIG", "SET", "client-output-buffer-limit", old)


def test_unread_big_reply_over_soft_limit_disconnects(live: GeoServer) -> None:
    """The soft limit counts the pieces not yet handed to the transport: a reader that never
    reads a reply far above it is disconnected by the sweep, and the server keeps serving."""
    c = live.client()
    old = c.execute_command("CONFIG", "GET", "client-output-buffer-limit")[1]
    c.execute_command("CONFIG", "SET", "client-output-buffer-limit", "normal 0 6mb 1")
    try:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        slow.connect(("127.0.0.1", live.port))
        with slow:
            slow.sendall(encode("SCAN", "big", "LIMIT", 1_000_000))
            wait_until(lambda: "over the soft limit" in live.log(), 30, message="soft-limit disconnect")
        assert live.json("PING")["ok"]
    finally:
        c.execute_command("CONFIG", "SET", "client-output-buffer-limit", old)
