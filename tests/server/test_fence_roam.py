"""ROAM fences, black-box: tidwall/tile38 tests/fence_roaming_test.go (live, channel and
webhook variants, its data and its expected messages byte for byte once group, time and
hook are removed), plus NODWELL and SCAN."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import orjson
import pytest
from fencewire import EventStream
from helpers import GeoServer, wait_until

CAR1 = [(-111.93669319152832, 33.414750027566235), (-111.93051338195801, 33.414750027566235),
        (-111.92416191101074, 33.414750027566235), (-111.91789627075195, 33.414750027566235),
        (-111.9111156463623, 33.414750027566235), (-111.90510749816895, 33.414750027566235),
        (-111.89746856689453, 33.414750027566235)]
CAR2 = [(-111.89746856689453, 33.414750027566235), (-111.90519332885742, 33.414750027566235),
        (-111.91154479980467, 33.414750027566235), (-111.91781044006346, 33.414750027566235),
        (-111.92416191101074, 33.414750027566235), (-111.93059921264648, 33.414750027566235),
        (-111.93660736083984, 33.414750027566235)]
EXPECTED = [
    '{"command":"set","detect":"roam","key":"cars","id":"car1","object":{"type":"Point","coordinates":'
    '[-111.91789627075195,33.414750027566235]},"nearby":{"key":"cars","id":"car2","object":{"type":"Point",'
    '"coordinates":[-111.91154479980467,33.414750027566235]},"meters":589.512}}',
    '{"command":"set","detect":"roam","key":"cars","id":"car2","object":{"type":"Point","coordinates":'
    '[-111.91781044006346,33.414750027566235]},"nearby":{"key":"cars","id":"car1","object":{"type":"Point",'
    '"coordinates":[-111.91789627075195,33.414750027566235]},"meters":7.966}}',
    '{"command":"set","detect":"roam","key":"cars","id":"car1","object":{"type":"Point","coordinates":'
    '[-111.9111156463623,33.414750027566235]},"nearby":{"key":"cars","id":"car2","object":{"type":"Point",'
    '"coordinates":[-111.91781044006346,33.414750027566235]},"meters":621.377}}',
    '{"command":"set","detect":"roam","key":"cars","id":"car2","object":{"type":"Point","coordinates":'
    '[-111.92416191101074,33.414750027566235]},"faraway":{"key":"cars","id":"car1","object":{"type":"Point",'
    '"coordinates":[-111.9111156463623,33.414750027566235]},"meters":1210.89}}',
]


def clean(body: bytes | str) -> str:
    """Tile38's cleanMessage: drop group, time and hook."""
    doc = orjson.loads(body)
    for name in ("group", "time", "hook"):
        doc.pop(name, None)
    return orjson.dumps(doc).decode()


def drive(server: GeoServer, key: str = "cars") -> None:
    c = server.client()
    for (x1, y1), (x2, y2) in zip(CAR1, CAR2, strict=True):
        c.execute_command("SET", key, "car1", "POINT", y1, x1)
        c.execute_command("SET", key, "car2", "POINT", y2, x2)


@pytest.fixture
def server(make_server) -> GeoServer:
    return make_server()


def test_roaming_live(server: GeoServer) -> None:
    stream = EventStream(server, "NEARBY", "cars", "FENCE", "ROAM", "cars", "*", 1000)
    try:
        assert stream.read_line() == b"+OK"
        drive(server)
        assert [clean(stream.bulk()) for _ in EXPECTED] == EXPECTED
        server.client().execute_command("DROP", "cars")
        assert orjson.loads(stream.bulk())["command"] == "drop"  # nothing else came first
    finally:
        stream.close()


def test_roaming_channel(server: GeoServer) -> None:
    c = server.client(decode_responses=True)
    assert c.execute_command("SETCHAN", "carschan", "NEARBY", "cars", "FENCE", "ROAM", "cars", "*", 1000) == 1
    ps = c.pubsub()
    ps.psubscribe("carschan")
    ps.get_message(timeout=5)
    drive(server)
    got = []
    while len(got) < len(EXPECTED):
        msg = ps.get_message(timeout=10)
        assert msg is not None
        if msg["type"] == "pmessage":
            assert orjson.loads(msg["data"])["hook"] == "carschan"
            got.append(clean(msg["data"]))
    assert got == EXPECTED
    ps.close()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[bytes]]]:
    got: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK!\n")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", got
    httpd.shutdown()


def test_roaming_webhook(server: GeoServer, receiver) -> None:
    url, got = receiver
    assert server.client().execute_command("SETHOOK", "carshook", url, "NEARBY", "cars", "FENCE",
                                           "ROAM", "cars", "*", 1000) == 1
    drive(server)
    wait_until(lambda: len(got) >= len(EXPECTED), message="roam events delivered")
    assert [clean(body) for body in got] == EXPECTED


def test_nodwell_and_scan(server: GeoServer) -> None:
    """NODWELL: an object still near is not reported again; SCAN lists the matching objects
    of the nearby one's group (`id + pattern`)."""
    stream = EventStream(server, "NEARBY", "cars", "FENCE", "NODWELL", "ROAM", "cars", "car*", 1000,
                         "SCAN", ":*")
    try:
        assert stream.read_line() == b"+OK"
        c = server.client()
        c.execute_command("SET", "cars", "car2:door", "STRING", "x")  # not spatial: never in a scan
        c.execute_command("SET", "cars", "car2:trailer", "POINT", 0.0001, 0)  # nobody near yet
        c.execute_command("SET", "cars", "car2", "POINT", 0, 0)
        first = orjson.loads(stream.bulk())
        assert (first["id"], first["nearby"]["id"]) == ("car2", "car2:trailer")
        c.execute_command("SET", "cars", "car1", "POINT", 0, 0.001)
        events = [orjson.loads(stream.bulk()) for _ in range(2)]
        assert [e["nearby"]["id"] for e in events] == ["car2", "car2:trailer"]  # nearest first
        scan = events[0]["nearby"]["scan"]
        assert scan[0] == {"id": "car2", "self": True, "object": {"type": "Point", "coordinates": [0, 0]}}
        assert [s["id"] for s in scan[1:]] == ["car2:trailer"]
        c.execute_command("SET", "cars", "car1", "POINT", 0, 0.0011)  # still near: NODWELL, no event
        c.execute_command("SET", "cars", "car1", "POINT", 1, 1)  # gone: faraway from both
        far = [orjson.loads(stream.bulk()) for _ in range(2)]
        assert [e["faraway"]["id"] for e in far] == ["car2:trailer", "car2"]
        c.execute_command("DROP", "cars")
        assert orjson.loads(stream.bulk())["command"] == "drop"
    finally:
        stream.close()
