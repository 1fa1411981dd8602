"""Live fences, black-box: ports of tidwall/tile38 tests/fence_test.go as tables, plus every
option a fence takes. A case is a fence command and steps of (write, events expected after it);
the stream must deliver exactly those events, in order (a DROP ends each case: its `drop`
event proves nothing else came before it)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fencewire import EventStream, matches
from helpers import GeoServer

POLY = {"type": "Polygon", "coordinates": [[[-112, 33], [-111, 33], [-111, 34], [-112, 34], [-112, 33]]]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    srv = GeoServer(Path(tmp_path_factory.mktemp("fence")) / "s").start()
    yield srv
    srv.kill9()


def enter_inside(oid: str, **more: object) -> list[dict[str, object]]:
    return [{"command": "set", "detect": "enter", "id": oid, **more},
            {"command": "set", "detect": "inside", "id": oid, **more}]


def exit_outside(oid: str, **more: object) -> list[dict[str, object]]:
    return [{"command": "set", "detect": "exit", "id": oid, **more},
            {"command": "set", "detect": "outside", "id": oid, **more}]


CASES = {
    # tests/fence_test.go fence_basic_test
    "basic": ("NEARBY {k} FENCE POINT 33 -115 5000", [
        ("SET {k} myid1 POINT 33 -115",
         enter_inside("myid1", **{"object.type": "Point", "object.coordinates": [-115, 33], "key": "{k}"})),
        ("SET {k} myid1 POINT 34 -115", exit_outside("myid1", **{"object.coordinates": [-115, 34]})),
    ]),
    # tests/fence_test.go fence_detect_inside_test
    "detect inside,outside": (
        "WITHIN {k} FENCE DETECT inside,outside POINTS BOUNDS 33.618824 -84.457973 33.654359 -84.399859", [
            ("SET {k} 200 POINT 33.642301 -84.43118",
             [{"command": "set", "detect": "inside", "id": "200",
               "point": {"lat": 33.642301, "lon": -84.43118}}]),
            ("SET {k} 200 POINT 34.642301 -84.43118",
             [{"command": "set", "detect": "outside", "id": "200",
               "point": {"lat": 34.642301, "lon": -84.43118}}]),
        ]),
    "detect enter,exit only": ("WITHIN {k} FENCE DETECT enter,exit BOUNDS 33 -112 34 -111", [
        ("SET {k} a POINT 40 -100", []),
        ("SET {k} a POINT 33.5 -111.5", [{"detect": "enter", "id": "a"}]),
        ("SET {k} a POINT 33.6 -111.5", []),
        ("SET {k} a POINT 40 -100", [{"detect": "exit", "id": "a"}]),
    ]),
    "enter downgraded to inside when enter not detected": (
        "WITHIN {k} FENCE DETECT inside BOUNDS 33 -112 34 -111", [
            ("SET {k} a POINT 33.5 -111.5", [{"detect": "inside", "id": "a"}]),
        ]),
    "cross (Tile38 issue 578 shape)": ("NEARBY {k} FENCE DETECT cross,outside POINT 10 10 10000", [
        ("SET {k} v POINT 0 0", [{"detect": "outside"}]),
        ("SET {k} v POINT 20 20", [{"detect": "cross"}, {"detect": "outside"}]),
    ]),
    "polygon fence, object output with fields": (
        "INTERSECTS {k} FENCE OBJECT " + orjson.dumps(POLY).decode(), [
            ("SET {k} t FIELD speed 90 POINT 33.5 -111.5",
             enter_inside("t", **{"fields": {"speed": 90}, "object.type": "Point"})),
        ]),
    "NOFIELDS and IDS output": ("WITHIN {k} FENCE NOFIELDS IDS BOUNDS 33 -112 34 -111", [
        ("SET {k} t FIELD speed 90 POINT 33.5 -111.5", enter_inside("t", fields=None, object=None)),
        ("FSET {k} t speed 50", []),  # Tile38: NOFIELDS fences ignore FSET
    ]),
    "FSET reports inside": ("WITHIN {k} FENCE BOUNDS 33 -112 34 -111", [
        ("SET {k} t POINT 33.5 -111.5", enter_inside("t")),
        ("FSET {k} t speed 50", [{"command": "fset", "detect": "inside", "fields": {"speed": 50}}]),
    ]),
    "MATCH": ("WITHIN {k} MATCH truck* FENCE BOUNDS 33 -112 34 -111", [
        ("SET {k} car1 POINT 33.5 -111.5", []),
        ("SET {k} truck1 POINT 33.5 -111.5", enter_inside("truck1")),
    ]),
    "WHERE": ("WITHIN {k} WHERE speed 10 +inf FENCE DETECT enter,exit BOUNDS 33 -112 34 -111", [
        ("SET {k} slow FIELD speed 5 POINT 33.5 -111.5", []),
        ("SET {k} fast FIELD speed 50 POINT 33.5 -111.5", [{"detect": "enter", "id": "fast"}]),
        ("SET {k} fast FIELD speed 5 POINT 33.5 -111.5", [{"detect": "exit", "id": "fast"}]),
    ]),
    "WHEREIN": ("WITHIN {k} WHEREIN kind 2 1 3 FENCE DETECT enter BOUNDS 33 -112 34 -111", [
        ("SET {k} a FIELD kind 2 POINT 33.5 -111.5", []),
        ("SET {k} b FIELD kind 3 POINT 33.5 -111.5", [{"detect": "enter", "id": "b"}]),
    ]),
    "DISTANCE": ("NEARBY {k} FENCE DISTANCE DETECT inside POINT 33 -115 5000", [
        ("SET {k} a POINT 33 -115", [{"detect": "inside", "distance": 0}]),
    ]),
    "HASHES output": ("WITHIN {k} FENCE DETECT inside HASHES 5 BOUNDS 33 -112 34 -111", [
        ("SET {k} a POINT 33.5123 -111.2693", [{"hash": "9tbys"}]),
    ]),
    "BOUNDS output and area": ("WITHIN {k} FENCE DETECT inside BOUNDS BOUNDS 33 -112 34 -111", [
        ("SET {k} a POINT 33.5 -111.5", [{"bounds": {"sw": {"lat": 33.5, "lon": -111.5},
                                                     "ne": {"lat": 33.5, "lon": -111.5}}}]),
    ]),
    "del and pdel": ("WITHIN {k} FENCE DETECT enter BOUNDS 33 -112 34 -111", [
        ("SET {k} far POINT 40 -100", []),
        ("SET {k} a POINT 33.5 -111.5", [{"detect": "enter"}]),
        ("SET {k} b POINT 33.5 -111.5", [{"detect": "enter"}]),
        ("DEL {k} a", [{"command": "del", "id": "a", "detect": None, "group": None}]),
        ("PDEL {k} b*", [{"command": "del", "id": "b"}]),
    ]),
    "expiry reports del": ("WITHIN {k} FENCE DETECT enter BOUNDS 33 -112 34 -111", [
        ("SET {k} far POINT 40 -100", []),
        ("SET {k} brief EX 0.2 POINT 33.5 -111.5",
         [{"detect": "enter", "id": "brief"}, {"command": "del", "id": "brief"}]),  # the expiry's DEL
    ]),
    "COMMANDS": ("WITHIN {k} FENCE COMMANDS del,drop BOUNDS 33 -112 34 -111", [
        ("SET {k} far POINT 40 -100", []),
        ("SET {k} a POINT 33.5 -111.5", []),
        ("DEL {k} a", [{"command": "del", "id": "a"}]),
    ]),
    "EXPIRE and shapes": ("INTERSECTS {k} FENCE DETECT enter,inside BOUNDS 33 -112 34 -111", [
        ("SET {k} zone OBJECT " + orjson.dumps(POLY).decode(), enter_inside("zone")),
        ("EXPIRE {k} zone 1000",
         [{"command": "expire", "detect": "enter"}, {"command": "expire", "detect": "inside"}]),
    ]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_live_fence(server: GeoServer, name: str) -> None:
    key = "k_" + "".join(c if c.isalnum() else "_" for c in name)
    fence, steps = CASES[name]
    stream = EventStream(server, *split(fence.replace("{k}", key)))
    try:
        assert stream.read_line() == b"+OK"
        c = server.client()
        for write, expected in steps:
            c.execute_command(*split(write.replace("{k}", key)))
            for want in expected:
                got = stream.event()
                want = {p: (v.replace("{k}", key) if isinstance(v, str) else v) for p, v in want.items()}
                assert matches(got, want), (write, want, got)
                assert got["key"] == key and "time" in got
        c.execute_command("DROP", key)
        assert matches(stream.event(), {"command": "drop", "key": key})
    finally:
        stream.close()


def split(line: str) -> list[str]:
    head, sep, obj = line.partition(" OBJECT ")
    return head.split() + (["OBJECT", obj] if sep else [])


def test_inline_json_and_group_ids(server: GeoServer) -> None:
    """Inline (telnet) and JSON output: `{"ok":true,"live":true}` first, then the same events;
    enter and inside share a group id; a new enter starts a new group."""
    stream = EventStream(server, "NEARBY", "g", "FENCE", "POINT", 33, -115, 5000, json=True)
    try:
        assert orjson.loads(stream.bulk()) == {"ok": True, "live": True}
        c = server.client()
        c.execute_command("SET", "g", "x", "POINT", 33, -115)
        enter, inside = stream.events(2)
        assert enter["group"] == inside["group"] and len(enter["group"]) == 24
        c.execute_command("SET", "g", "x", "POINT", 34, -115)
        exit_, _outside = stream.events(2)
        assert exit_["group"] == enter["group"]
        c.execute_command("SET", "g", "x", "POINT", 33, -115)
        assert stream.event()["group"] != enter["group"]
    finally:
        stream.close()
    inline = EventStream(server, "WITHIN", "g2", "FENCE", "BOUNDS", 0, 0, 1, 1, inline=True)
    try:
        assert inline.read_line() == b"+OK"
        server.client().execute_command("SET", "g2", "x", "POINT", 0.5, 0.5)
        assert inline.event()["detect"] == "enter"
    finally:
        inline.close()


def test_event_bytes_match_tile38(server: GeoServer) -> None:
    """The exact bytes, field order included, of Tile38's makemsg (time and group vary)."""
    stream = EventStream(server, "WITHIN", "b", "FENCE", "DETECT", "inside", "BOUNDS", 0, 0, 1, 1)
    try:
        stream.read_line()
        server.client().execute_command("SET", "b", "x", "FIELD", "a", 1, "POINT", 0.5, 0.25)
        raw = stream.bulk()
        doc = orjson.loads(raw)
        assert raw == (b'{"command":"set","group":"' + doc["group"].encode()
                       + b'","detect":"inside","key":"b","time":"' + doc["time"].encode()
                       + b'","id":"x","object":{"type":"Point","coordinates":[0.25,0.5]},"fields":{"a":1}}')
    finally:
        stream.close()


def test_input_ends_a_live_fence_and_the_server_keeps_serving(server: GeoServer) -> None:
    stream = EventStream(server, "NEARBY", "q", "FENCE", "POINT", 1, 1, 10)
    assert stream.read_line() == b"+OK"
    stream.sock.sendall(b"QUIT\r\n")
    with pytest.raises(ConnectionError):
        stream.read_line()
    stream.close()
    assert server.client().ping()


def test_http_chunked_stream(server: GeoServer) -> None:
    """Over HTTP the fence answers with a chunked response: one JSON line per event."""
    sock = socket.create_connection((server.host, server.port), timeout=10)
    try:
        sock.sendall(b"GET /WITHIN+h+FENCE+BOUNDS+0+0+1+1 HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = b""
        while b'"live":true' not in buf:
            buf += sock.recv(4096)
        assert b"Transfer-Encoding: chunked" in buf
        server.client().execute_command("SET", "h", "x", "POINT", 0.5, 0.5)
        while buf.count(b'"detect"') < 2:
            buf += sock.recv(4096)
        body = buf.split(b"\r\n\r\n", 1)[1]
        lines = [orjson.loads(line) for line in _unchunk(body).splitlines() if line.strip()]
        assert lines[0] == {"ok": True, "live": True}
        assert [e["detect"] for e in lines[1:3]] == ["enter", "inside"]
    finally:
        sock.close()


def _unchunk(body: bytes) -> bytes:
    out = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out += rest[:n]
        body = rest[n + 2:]
    return out


BAD = [
    (["NEARBY", "k", "FENCE", "DETECT", "inside,bogus", "POINT", 1, 1, 10],
     "invalid argument 'inside,bogus'"),
    (["NEARBY", "k", "FENCE", "DETECT", "inside,inside", "POINT", 1, 1, 10], "duplicate argument 'INSIDE'"),
    (["NEARBY", "k", "FENCE", "COMMANDS", "set,nope", "POINT", 1, 1, 10], "invalid argument 'nope'"),
    (["NEARBY", "k", "FENCE", "FENCE", "POINT", 1, 1, 10], "duplicate argument 'FENCE'"),
    (["NEARBY", "k", "CURSOR", 5, "FENCE", "POINT", 1, 1, 10],
     "CURSOR is not allowed when FENCE is specified"),
    (["NEARBY", "k", "FENCE", "POINT", 1, 1, -5], "invalid argument '-5'"),
    (["WITHIN", "k", "BUFFER", 10, "FENCE", "CIRCLE", 1, 1, 10],
     "BUFFER is not supported when FENCE is specified"),
    (["NEARBY", "k", "SPARSE", 2, "FENCE", "POINT", 1, 1, 10],
     "SPARSE is not supported when FENCE is specified"),
    (["NEARBY", "k", "FENCE", "BOUNDS", 1, 1, 2, 2], "invalid argument 'BOUNDS'"),
    (["WITHIN", "k", "FENCE", "CIRCLE", 1, 1], None),  # too short
    (["NEARBY", "k", "FENCE", "ROAM", "k", "*"], None),
]


@pytest.mark.parametrize("argv,err", BAD, ids=[" ".join(map(str, a)) for a, _ in BAD])
def test_bad_fences_are_refused_and_the_connection_stays(server: GeoServer, argv: list,
                                                         err: str | None) -> None:
    reply = server.json(*argv)
    assert reply["ok"] is False
    if err is not None:
        assert reply["err"] == err
    assert server.client().ping()


async def test_websocket_stream(server: GeoServer) -> None:
    """ws://host:port/WITHIN+...+FENCE+...: Tile38's WebSocket form, one text frame per event;
    a SUBSCRIBE works the same way; the client's close frame ends it."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        base = f"http://{server.host}:{server.port}"
        async with session.ws_connect(base + "/WITHIN+w+FENCE+BOUNDS+0+0+1+1") as ws:
            assert orjson.loads((await ws.receive(timeout=10)).data) == {"ok": True, "live": True}
            server.client().execute_command("SET", "w", "x", "POINT", 0.5, 0.5)
            got = [orjson.loads((await ws.receive(timeout=10)).data)["detect"] for _ in range(2)]
            assert got == ["enter", "inside"]
        async with session.ws_connect(base + "/SUBSCRIBE+wsch") as ws:
            assert orjson.loads((await ws.receive(timeout=10)).data)["command"] == "subscribe"
            server.client().publish("wsch", '{"hello":1}')
            assert orjson.loads((await ws.receive(timeout=10)).data) == {"hello": 1}
        async with session.ws_connect(base + "/PING") as ws:
            assert orjson.loads((await ws.receive(timeout=10)).data)["ping"] == "pong"
    assert server.client().ping()
