"""A WITHIN / INTERSECTS over a complex area, under the 10^8 edge-test cap but seconds of GEOS,
is located in slices (commands/slices.points_in_steps): other clients are served meanwhile,
the hits are those shapely finds in one go, and writes that interleave are seen safely.
Real geoserver, real sockets; the assertions are on ordering (a PONG before the search's reply),
not on timings."""

from __future__ import annotations

import time
from collections.abc import Iterator

import orjson
import pytest
import shapely
from helpers import GeoServer
from wire import Wire, encode, parse

TEETH = 2_000  # saw teeth on the top edge: a scan line at lat 0.9..1.0 crosses ~4000 edges
POINTS = 5_000


def saw() -> dict:
    top = [[10 - i * 10 / TEETH, 1.0 if i % 2 else 0.9] for i in range(TEETH + 1)]
    ring = [[0, 0], [10, 0], *top, [0, 0]]
    return {"type": "Polygon", "coordinates": [ring]}


def coord(i: int) -> tuple[float, float]:
    return 0.9 + (i * 7919 % 1000) / 10_000, (i * 104_729 % 100_000) / 10_000  # lat, lon


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    srv = GeoServer(tmp_path_factory.mktemp("area") / "data").start()
    c = srv.client()
    pipe = c.pipeline(transaction=False)
    for i in range(POINTS):
        lat, lon = coord(i)
        pipe.execute_command("SET", "pts", f"p{i:05d}", "POINT", lat, lon)
    pipe.execute()
    yield srv
    srv.kill9()


def expected() -> list[str]:
    poly = shapely.geometry.shape(saw())
    return sorted(f"p{i:05d}" for i in range(POINTS)
                  if shapely.intersects_xy(poly, coord(i)[1], coord(i)[0]))


def search(cmd: str = "WITHIN") -> list[object]:
    return [cmd, "pts", "LIMIT", 100_000, "IDS", "OBJECT", orjson.dumps(saw()).decode()]


def test_sliced_area_search_gives_the_one_go_hits(server: GeoServer) -> None:
    want = expected()
    assert 0 < len(want) < POINTS
    with Wire(server.port) as w:
        for cmd in ("WITHIN", "INTERSECTS"):
            cursor, ids = w.call(*search(cmd))
            assert cursor == 0 and sorted(ids) == want
        assert w.call("WITHIN", "pts", "COUNT", "OBJECT", orjson.dumps(saw()).decode()) == len(want)


def test_others_are_served_while_an_area_is_located(server: GeoServer) -> None:
    """The search pipelined three times on one connection; a PING on another connection, sent
    once the searches are in, is answered before the last search's reply is there."""
    with Wire(server.port) as long, Wire(server.port) as canary:
        long.send(encode(*search()) * 3)
        time.sleep(0.05)  # the searches are read first
        assert canary.call("PING") == "PONG"
        long.sock.setblocking(False)
        got = b""
        try:
            while chunk := long.sock.recv(1 << 20):
                got += chunk
        except BlockingIOError:
            pass
        long.sock.setblocking(True)
        first_pong_before_all = got.count(b"*2\r\n:0\r\n") < 3
        replies = [long.read_frame() for _ in range(3 - got.count(b"*2\r\n:0\r\n"))]
        assert first_pong_before_all, "the PING waited for every search"
        assert all(r.startswith(b"*2\r\n:0\r\n") for r in replies)


def test_writes_interleaving_with_a_sliced_search(server: GeoServer) -> None:
    """Points deleted and moved while the area is located: no error, no deleted id reported
    once its DEL was acknowledged before the search began, the next search sees the writes."""
    want = expected()
    gone = want[:50]
    with Wire(server.port) as w, Wire(server.port) as writer:
        for oid in gone:
            assert writer.call("DEL", "pts", oid) == 1
        w.send(encode(*search()))
        for oid in want[50:100]:  # while it runs: moved far out of the area
            assert writer.call("SET", "pts", oid, "POINT", -45, -120) == "OK"
        cursor, ids = parse(w.read_frame())
        assert cursor == 0 and not set(gone) & set(ids) and set(ids) <= set(want)
        cursor, ids = w.call(*search())
        assert sorted(ids) == want[100:]
        for oid in want[:100]:  # put them back for the other tests
            lat, lon = coord(int(oid[1:]))
            assert writer.call("SET", "pts", oid, "POINT", lat, lon) == "OK"
