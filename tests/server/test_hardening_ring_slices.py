"""A big NEARBY ring, and the non-point objects of an area, located in slices (issue 9).

NEARBY over many objects puts its ring in order ~2 ms at a time (store/query.nearby_steps);
WITHIN / INTERSECTS test non-point objects ~2 ms of shapely at a time
(store/query.shapes_in_steps). The results must be those of the one-go path on the same data,
with NEARBY's LIMIT / CURSOR / nearest-first order.
In-process: the one-go and sliced paths of the same Server, the slice threshold lowered with
monkeypatch so a small dataset takes the sliced path (the code is the same; only the sizes that
choose it differ). Real process, redis-py: a sliced command against the same command run by a
Lua script (a script's commands never run sliced) and against pages small enough to run in one go.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import hiredis
import numpy as np
import orjson
import pytest
import shapely
from geoserver import dispatch
from geoserver.commands import slices
from geoserver.config import ServerConfig
from geoserver.protocol.resp import encode_command
from geoserver.server import Client, Server
from geoserver.store import query
from geoserver.store.index import PointIndex, ShapeBoxes
from helpers import GeoServer, wait_until


def coord(i: int) -> tuple[float, float]:
    """lat, lon; every 5th point sits on one spot (many equal distances: ties)."""
    if i % 5 == 0:
        return 10.0, 20.0
    return -60 + (i * 7919 % 120_000) / 1000.0, -170 + (i * 104_729 % 340_000) / 1000.0


def square(i: int, size: float = 0.5) -> bytes:
    lat, lon = coord(i * 13 + 1)
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return orjson.dumps({"type": "Polygon", "coordinates": [ring]})


# ---- the ring itself: query.nearby_steps against query.nearby ----------------------------------


@pytest.mark.parametrize("shapes", [0, 300])
@pytest.mark.parametrize("meters", [query.HALF_EARTH_M * 1.01, 2_500_000.0])
def test_ring_in_steps_equals_one_go(shapes: int, meters: float,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(query, "SORT_STEP", 500)  # many distance bands
    monkeypatch.setattr(query, "HAV_STEP", 1000)
    grid, boxes = PointIndex(), ShapeBoxes()
    for i in range(20_000):
        grid.insert(f"p{i}", *coord(i))
    for j in range(shapes):
        lat, lon = coord(j * 13 + 1)
        boxes.insert(f"s{j}", (20.0, 10.0, 20.0, 10.0) if j % 3 == 0 else (lon, lat, lon + 1, lat + 1))
    one = query.nearby(grid, boxes, 10.0, 20.0, meters)
    steps = query.nearby_steps(grid, boxes, 10.0, 20.0, meters)
    ring = slices.run(steps)
    n = len(one)
    assert n > 1000 and len(ring) == n
    assert ring.ids(0, n) == one.ids(0, n)  # ties included: the same stable order
    assert ring.dists(0, n) == one.dists(0, n)


# ---- whole commands in-process: sliced against one go ------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    srv = Server(ServerConfig(dir=tmp_path_factory.mktemp("ring"), appendonly=False))
    for i in range(6_000):
        lat, lon = coord(i)
        fields = [b"FIELD", b"speed", b"%d" % (i % 50)] if i % 2 else []
        dispatch.apply_record(srv, [b"SET", b"k", b"p%05d" % i, *fields, b"POINT",
                                    b"%.4f" % lat, b"%.4f" % lon])
    for j in range(400):
        dispatch.apply_record(srv, [b"SET", b"k", b"s%04d" % j, b"OBJECT", square(j)])
        dispatch.apply_record(srv, [b"SET", b"only", b"s%04d" % j, b"OBJECT", square(j)])
    return srv


AREA = orjson.dumps({"type": "Polygon", "coordinates": [[[-100, -40], [100, -40], [100, 50],
                                                         [0, 10], [-100, 50], [-100, -40]]]}).decode()
COMMANDS = [
    ["NEARBY", "k", "LIMIT", "100000", "IDS", "POINT", "10", "20"],
    ["NEARBY", "k", "DISTANCE", "LIMIT", "100000", "POINT", "10", "20"],
    ["NEARBY", "k", "LIMIT", "700", "IDS", "POINT", "10", "20", "3000000"],
    ["NEARBY", "k", "CURSOR", "1234", "LIMIT", "2000", "IDS", "POINT", "10", "20"],
    ["NEARBY", "k", "CURSOR", "100", "LIMIT", "50", "WHERE", "speed", "10", "20", "IDS", "POINT", "1", "2"],
    ["NEARBY", "k", "MATCH", "s*", "DISTANCE", "LIMIT", "100000", "POINTS", "POINT", "10", "20"],
    ["NEARBY", "k", "COUNT", "POINT", "10", "20", "5000000"],
    ["WITHIN", "k", "LIMIT", "100000", "IDS", "OBJECT", AREA],
    ["INTERSECTS", "k", "LIMIT", "100000", "IDS", "OBJECT", AREA],
    ["WITHIN", "k", "LIMIT", "100000", "IDS", "BOUNDS", "-50", "-120", "50", "120"],
    ["INTERSECTS", "k", "CURSOR", "10", "LIMIT", "100", "OBJECTS", "BOUNDS", "-50", "-120", "50", "120"],
    ["INTERSECTS", "k", "COUNT", "CIRCLE", "10", "20", "4000000"],
]


def _run(server: Server, argv: list[str], json: bool) -> bytes:
    client = Client(server)
    client.resp_conn = not json  # JSON as HTTP gets it (no bulk framing)
    reply = dispatch.execute(server, client, [a.encode() for a in argv], json)
    if not isinstance(reply, bytes):
        reply = asyncio.run(reply)  # type: ignore[arg-type]
    return b"".join(reply) if isinstance(reply, list) else reply


@pytest.mark.parametrize("json", [False, True], ids=["resp", "json"])
@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:6]))
def test_sliced_search_equals_one_go(server: Server, argv: list[str], json: bool,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slices, "SLICE", 10**9)
    monkeypatch.setattr(slices, "BUDGET", 10.0)  # slices.start finishes in one go
    whole = _run(server, argv, json)
    monkeypatch.setattr(slices, "SLICE", 0)
    monkeypatch.setattr(slices, "BUDGET", 0.0)  # every step is a loop turn
    monkeypatch.setattr(query, "SHAPES_FIRST", 16)
    monkeypatch.setattr(query, "STEP_SECONDS", 0.0)  # the smallest shape steps
    monkeypatch.setattr(query, "SORT_STEP", 300)
    pieces = _run(server, argv, json)
    if json:
        a, b = orjson.loads(whole), orjson.loads(pieces)
        a.pop("elapsed"), b.pop("elapsed")
        assert a == b and a["ok"]
        assert a.get("count", 0) > 10
    else:
        assert pieces == whole and (len(whole) > 20 or whole.startswith(b":"))


def test_shape_steps_refuse_as_one_go(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge-test cap counts every tested vertex, in steps as in one go."""
    monkeypatch.setattr(query, "MAX_EDGE_TESTS", 1000)
    monkeypatch.setattr(query, "SHAPES_FIRST", 16)
    monkeypatch.setattr(query, "STEP_SECONDS", 0.0)
    argv = ["INTERSECTS", "only", "IDS", "OBJECT", AREA]
    monkeypatch.setattr(slices, "BUDGET", 10.0)
    assert b"area too complex" in _run(server, argv, False)
    monkeypatch.setattr(slices, "BUDGET", 0.0)
    assert b"area too complex" in _run(server, argv, False)
    monkeypatch.setattr(query, "MAX_EDGE_TESTS", 10**8)
    assert _run(server, argv, False).startswith(b"*2\r\n:100\r\n*100\r\n")  # LIMIT 100 of them


# ---- a real server, redis-py -------------------------------------------------------------------

POINTS = 30_000
SHAPES = 3_000
LUA = "return tile38.call(unpack(ARGV))"


def script(c: object, *args: object) -> object:
    """The command run by a Lua script (never sliced); a reply the script got as encoded RESP
    bytes (IDS) is parsed."""
    got = c.execute_command("EVAL", LUA, 0, *args)  # type: ignore[attr-defined]
    if isinstance(got, bytes):
        reader = hiredis.Reader()
        reader.feed(got)
        got = reader.gets()
    return got


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    data = tmp_path_factory.mktemp("ring-live") / "data"
    data.mkdir()
    records = [encode_command([b"SET", b"pts", b"p%05d" % i, b"POINT", b"%.4f" % coord(i)[0],
                               b"%.4f" % coord(i)[1]]) for i in range(POINTS)]
    records += [encode_command([b"SET", b"pts", b"s%04d" % j, b"OBJECT", square(j, 1.0)])
                for j in range(SHAPES)]
    (data / "appendonly.aof").write_bytes(b"".join(records))
    srv = GeoServer(data).start()
    wait_until(lambda: srv.json("SCAN", "pts", "COUNT").get("count") == POINTS + SHAPES, 60,
               message="loaded")
    yield srv
    srv.kill9()


def test_live_nearby_sliced_equals_script_and_pages(live: GeoServer) -> None:
    c = live.client()
    near = ["NEARBY", "pts", "LIMIT", "50000", "IDS", "POINT", "10", "20"]
    cursor, ids = c.execute_command(*near)  # sliced: over 10,000 objects and rows
    assert cursor == 0 and len(ids) == POINTS + SHAPES
    assert script(c, *near) == [0, ids]  # a script's NEARBY: one go
    pages: list[bytes] = []
    for start in (0, 4000):  # pages small enough for the one-go path
        cur, page = c.execute_command("NEARBY", "pts", "CURSOR", start, "LIMIT", 4000, "IDS",
                                      "POINT", "10", "20")
        assert cur == start + 4000
        pages += page
    assert pages == ids[:8000]
    cur, tail = c.execute_command("NEARBY", "pts", "CURSOR", 8000, "LIMIT", 20_000, "IDS",
                                  "POINT", "10", "20")  # sliced, from a cursor
    assert cur == 28_000 and tail == ids[8000:28_000]
    _, rows = c.execute_command("NEARBY", "pts", "DISTANCE", "LIMIT", 50_000, "IDS", "POINT", "10", "20")
    dists = [float(d) for _oid, d in rows]
    assert [oid for oid, _d in rows] == ids
    assert np.all(np.diff(dists) >= -1e-6), "nearest first"


def test_live_area_shapes_sliced_equals_script_and_shapely(live: GeoServer) -> None:
    c = live.client()
    area = shapely.geometry.shape(orjson.loads(AREA))
    want = sorted(f"s{j:04d}" for j in range(SHAPES)
                  if shapely.intersects(shapely.geometry.shape(orjson.loads(square(j, 1.0))), area))
    assert 100 < len(want) < SHAPES
    for cmd in ("INTERSECTS", "WITHIN"):
        search = [cmd, "pts", "MATCH", "s*", "LIMIT", 100_000, "IDS", "OBJECT", AREA]
        cursor, ids = c.execute_command(*search)
        assert cursor == 0
        assert script(c, *search) == [0, ids]
        if cmd == "INTERSECTS":
            assert [i.decode() for i in ids] == want
        else:
            assert set(ids) <= {w.encode() for w in want}
