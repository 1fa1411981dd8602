"""SCAN, NEARBY, WITHIN, INTERSECTS against a real geoserver: grammar, areas, outputs, cursor
paging, filters, distances (checked with an independent haversine) and bad input.

One server per module; each test writes its own keys."""

from __future__ import annotations

import fnmatch
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import mercantile
import orjson
import pygeohash
import pytest
import redis
from helpers import GeoServer

R = 6371e3


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.asin(math.sqrt(a))


def poly(*ring: tuple[float, float]) -> str:
    """A GeoJSON polygon from (lon, lat) corners; the ring is closed here."""
    coords = [list(p) for p in ring] + [list(ring[0])]
    return orjson.dumps({"type": "Polygon", "coordinates": [coords]}).decode()


def square(minlon: float, minlat: float, maxlon: float, maxlat: float) -> str:
    return poly((minlon, minlat), (maxlon, minlat), (maxlon, maxlat), (minlon, maxlat))


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(Path(tmp_path_factory.mktemp("search")) / "s").start()
    yield server
    server.kill9()


@pytest.fixture(scope="module")
def r(srv: GeoServer) -> redis.Redis:
    client = srv.client()
    client.response_callbacks.pop("SCAN", None)  # redis-py would parse Tile38's SCAN as Redis's
    return client


def run(r: redis.Redis, *args: object) -> object:
    return r.execute_command(*args)


def dec(value: object) -> object:
    """Decode a RESP reply (bytes -> str) recursively."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list | tuple):  # redis-py parses SCAN replies into a tuple
        return [dec(v) for v in value]
    return value


# ---- SCAN and cursors -----------------------------------------------------------------------


def test_scan_order_outputs_and_missing_key(srv: GeoServer, r: redis.Redis) -> None:
    for i in (3, 1, 2):
        run(r, "SET", "sc", f"id{i}", "FIELD", "n", i, "POINT", 33 + i, -115)
    run(r, "SET", "sc", "s1", "STRING", "hello")
    assert dec(run(r, "SCAN", "sc", "IDS")) == [0, ["id1", "id2", "id3", "s1"]]
    assert dec(run(r, "SCAN", "sc", "DESC", "IDS")) == [0, ["s1", "id3", "id2", "id1"]]
    assert run(r, "SCAN", "sc", "COUNT") == 4
    assert run(r, "SCAN", "sc", "CURSOR", 1, "COUNT") == 3
    assert dec(run(r, "SCAN", "sc", "LIMIT", 2, "DESC", "IDS")) == [2, ["s1", "id3"]]
    assert dec(run(r, "SCAN", "sc", "MATCH", "s*")) == [0, [["s1", "hello"]]]
    assert dec(run(r, "SCAN", "sc", "LIMIT", 1)) == [
        1, [["id1", '{"type":"Point","coordinates":[-115,34]}', ["n", "1"]]]]
    assert strip(srv.json("SCAN", "sc", "MATCH", "s*")) == {
        "ok": True, "objects": [{"id": "s1", "object": "hello"}], "count": 1, "cursor": 0}
    assert dec(run(r, "SCAN", "nokey")) == [0, []]
    assert run(r, "SCAN", "nokey", "COUNT") == 0
    assert strip(srv.json("SCAN", "nokey", "IDS")) == {"ok": True, "ids": [], "count": 0, "cursor": 0}
    assert strip(srv.json("SCAN", "nokey", "COUNT")) == {"ok": True, "count": 0, "cursor": 0}


def strip(reply: dict) -> dict:
    """A JSON reply without its `elapsed`."""
    assert isinstance(reply.pop("elapsed"), str)
    return reply


def test_cursor_counts_iterated_items_like_tile38(r: redis.Redis) -> None:
    # tests/keys_search_test.go: 9 ids, CURSOR 3 LIMIT 1 WHERE foo 8 9 -> [8 [id8]]
    for i in range(1, 10):
        run(r, "SET", "cur", f"id{i}", "FIELD", "foo", i, "POINT", 33, -115 + i / 100)
    assert dec(run(r, "SCAN", "cur", "CURSOR", 3, "LIMIT", 1, "WHERE", "foo", 8, 9, "IDS")) == [8, ["id8"]]
    # LIMIT reached exactly at the end still returns a cursor; the next page is empty
    assert dec(run(r, "SCAN", "cur", "CURSOR", 5, "LIMIT", 4, "IDS")) == [9, ["id6", "id7", "id8", "id9"]]
    assert dec(run(r, "SCAN", "cur", "CURSOR", 9, "LIMIT", 4, "IDS")) == [0, []]
    assert dec(run(r, "SCAN", "cur", "CURSOR", 100, "IDS")) == [0, []]


@pytest.mark.parametrize("cmd", [
    ("SCAN", "page"),
    ("NEARBY", "page", "POINT", 40, -100, 100000),
    ("NEARBY", "page", "POINT", 40, -100),
    ("WITHIN", "page", "BOUNDS", 39, -101, 41, -99),
    ("INTERSECTS", "page", "CIRCLE", 40, -100, 100000),
])
def test_cursor_paging_visits_every_item_once(r: redis.Redis, cmd: tuple) -> None:
    rnd = random.Random(7)
    for i in range(53):
        lat, lon = 40 + rnd.uniform(-0.3, 0.3), -100 + rnd.uniform(-0.3, 0.3)
        run(r, "SET", "page", f"p{i:02d}", "POINT", lat, lon)
    key, rest = cmd[:2], cmd[2:]
    seen: list[str] = []
    cursor, pages = 0, 0
    while True:
        cursor, ids = dec(run(r, *key, "CURSOR", cursor, "LIMIT", 10, "IDS", *rest))
        seen += ids
        pages += 1
        if cursor == 0:
            break
        assert cursor == 10 * pages
    assert pages == 6 and len(seen) == 53 and sorted(seen) == sorted(set(seen))
    all_ids = dec(run(r, *key, "LIMIT", 1000, "IDS", *rest))[1]
    assert seen == all_ids


# ---- NEARBY ---------------------------------------------------------------------------------


def _city(r: redis.Redis, key: str, n: int, seed: int = 1) -> dict[str, tuple[float, float]]:
    rnd = random.Random(seed)
    pts = {f"c{i}": (33 + rnd.uniform(0, 0.2), -115 + rnd.uniform(0, 0.2)) for i in range(n)}
    pipe = r.pipeline(transaction=False)
    for oid, (lat, lon) in pts.items():
        pipe.execute_command("SET", key, oid, "POINT", lat, lon)
    pipe.execute()
    return pts


def test_nearby_radius_orders_by_distance_with_exact_distances(srv: GeoServer, r: redis.Redis) -> None:
    pts = _city(r, "near", 400)
    lat, lon, meters = 33.1, -114.9, 3000
    want = sorted((haversine(lat, lon, a, b), oid) for oid, (a, b) in pts.items())
    want = [(d, oid) for d, oid in want if d <= meters]
    assert 10 < len(want) < 100
    cursor, got = dec(run(r, "NEARBY", "near", "DISTANCE", "IDS", "POINT", lat, lon, meters))
    assert cursor == 0
    assert [oid for oid, _ in got] == [oid for _, oid in want]
    for (_oid, dist), (d, _) in zip(got, want, strict=True):
        assert float(dist) == pytest.approx(d, rel=1e-9, abs=1e-6)
    body = strip(srv.json("NEARBY", "near", "DISTANCE", "POINT", lat, lon, meters))
    assert [o["id"] for o in body["objects"]] == [oid for _, oid in want]
    assert body["objects"][0]["distance"] == pytest.approx(want[0][0], rel=1e-9)
    nearest = pts[want[0][1]]
    assert body["objects"][0]["object"] == {"type": "Point", "coordinates": [nearest[1], nearest[0]]}
    assert run(r, "NEARBY", "near", "COUNT", "POINT", lat, lon, meters) == len(want)
    # without DISTANCE no distances are shown
    assert all(isinstance(x, bytes) for x in run(r, "NEARBY", "near", "IDS", "POINT", lat, lon, meters)[1])
    assert "distance" not in srv.json("NEARBY", "near", "LIMIT", 1, "POINT", lat, lon, meters)["objects"][0]


def test_nearby_exact_tile38_example_shape(srv: GeoServer, r: redis.Redis) -> None:
    run(r, "SET", "ex", "6", "POINT", 52, 13)
    run(r, "SET", "ex", "7", "POINT", 53, 14)
    assert dec(run(r, "NEARBY", "ex", "LIMIT", 10, "DISTANCE", "POINT", 52, 13, 100)) == [
        0, [["6", '{"type":"Point","coordinates":[13,52]}', "0"]]]
    assert strip(srv.json("NEARBY", "ex", "LIMIT", 10, "DISTANCE", "POINT", 52, 13, 100)) == {
        "ok": True, "count": 1, "cursor": 0,
        "objects": [{"id": "6", "object": {"type": "Point", "coordinates": [13, 52]}, "distance": 0}]}


def test_nearby_knn_without_radius(r: redis.Redis) -> None:
    pts = _city(r, "knn", 300, seed=3)
    rnd = random.Random(5)
    for i in range(50):  # scattered over the world: the search must widen far for these
        lat, lon = rnd.uniform(-80, 80), rnd.uniform(-179, 179)
        pts[f"w{i}"] = (lat, lon)
        run(r, "SET", "knn", f"w{i}", "POINT", lat, lon)
    for lat, lon, limit in ((33.1, -114.9, 5), (33.1, -114.9, 120), (-60, 100, 7), (10, 0, 340)):
        want = sorted((haversine(lat, lon, a, b), oid) for oid, (a, b) in pts.items())[:limit]
        cursor, got = dec(run(r, "NEARBY", "knn", "LIMIT", limit, "DISTANCE", "IDS", "POINT", lat, lon))
        assert [oid for oid, _ in got] == [oid for _, oid in want]
        assert [float(d) for _, d in got] == pytest.approx([d for d, _ in want], rel=1e-9)
        assert cursor == (limit if limit < len(pts) else 0)
    assert run(r, "NEARBY", "knn", "COUNT", "POINT", 0, 0) == len(pts)
    # paging KNN results continues in distance order
    first = dec(run(r, "NEARBY", "knn", "LIMIT", 10, "IDS", "POINT", 0, 0))
    second = dec(run(r, "NEARBY", "knn", "CURSOR", first[0], "LIMIT", 10, "IDS", "POINT", 0, 0))
    assert first[1] + second[1] == dec(run(r, "NEARBY", "knn", "LIMIT", 20, "IDS", "POINT", 0, 0))[1]


def test_nearby_includes_shapes_by_distance_to_their_bounds(r: redis.Redis) -> None:
    run(r, "SET", "ns", "pt", "POINT", 10.0, 10.002)
    run(r, "SET", "ns", "sq", "OBJECT", square(10.01, 9.99, 10.02, 10.01))  # ~1.1 km east
    run(r, "SET", "ns", "str", "STRING", "not spatial")
    _cursor, got = dec(run(r, "NEARBY", "ns", "DISTANCE", "IDS", "POINT", 10, 10))
    assert [oid for oid, _ in got] == ["pt", "sq"]
    assert float(got[1][1]) == pytest.approx(haversine(10, 10, 10, 10.01), rel=1e-9)
    assert dec(run(r, "NEARBY", "ns", "IDS", "POINT", 10, 10.015, 10)) == [0, ["sq"]]


# ---- outputs --------------------------------------------------------------------------------


def _fleet(r: redis.Redis) -> None:
    run(r, "SET", "out", "a", "FIELD", "speed", 50, "FIELD", "age", 2, "POINT", 33, -115)
    run(r, "SET", "out", "b", "FIELD", "speed", 10, "POINT", 33.001, -115.001, 12)
    run(r, "SET", "out", "c", "POINT", 33.002, -115.002)
    run(r, "SET", "out", "d", "FIELD", "name", "truck", "OBJECT", square(-115.004, 33.003, -115.003, 33.004))


def test_outputs_resp(r: redis.Redis) -> None:
    _fleet(r)
    area = ("BOUNDS", 32, -116, 34, -114)
    assert run(r, "WITHIN", "out", "COUNT", *area) == 4
    assert dec(run(r, "WITHIN", "out", "IDS", *area)) == [0, ["a", "b", "c", "d"]]
    assert dec(run(r, "WITHIN", "out", *area)) == [0, [
        ["a", '{"type":"Point","coordinates":[-115,33]}', ["age", "2", "speed", "50"]],
        ["b", '{"type":"Point","coordinates":[-115.001,33.001,12]}', ["speed", "10"]],
        ["c", '{"type":"Point","coordinates":[-115.002,33.002]}'],
        ["d", square(-115.004, 33.003, -115.003, 33.004), ["name", "truck"]],
    ]]
    assert dec(run(r, "WITHIN", "out", "NOFIELDS", "POINTS", *area)) == [0, [
        ["a", ["33", "-115"]], ["b", ["33.001", "-115.001", "12"]], ["c", ["33.002", "-115.002"]],
        ["d", ["33.0035", "-115.0035"]]]]
    assert dec(run(r, "WITHIN", "out", "NOFIELDS", "BOUNDS", "BOUNDS", 32, -116, 34, -114))[1][3] == [
        "d", [["33.003", "-115.004"], ["33.004", "-115.003"]]]
    hashes = dec(run(r, "WITHIN", "out", "NOFIELDS", "HASHES", 7, *area))[1]
    assert hashes[0] == ["a", pygeohash.encode(33, -115, 7)]
    assert all(len(h) == 7 for _, h in hashes)
    got = dec(run(r, "NEARBY", "out", "DISTANCE", "POINTS", "POINT", 33, -115, 200))[1]
    assert got[0] == ["a", ["33", "-115"], ["age", "2", "speed", "50"], "0"]
    assert float(got[1][3]) == pytest.approx(haversine(33, -115, 33.001, -115.001), rel=1e-9)


def test_outputs_json(srv: GeoServer, r: redis.Redis) -> None:
    _fleet(r)
    area = ("BOUNDS", 32, -116, 34, -114)
    assert strip(srv.json("WITHIN", "out", "COUNT", *area)) == {"ok": True, "count": 4, "cursor": 0}
    assert strip(srv.json("WITHIN", "out", "LIMIT", 2, "IDS", *area)) == {
        "ok": True, "ids": ["a", "b"], "count": 2, "cursor": 2}
    body = strip(srv.json("WITHIN", "out", *area))
    assert body["fields"] == ["age", "name", "speed"]
    assert body["objects"][0] == {"id": "a", "object": {"type": "Point", "coordinates": [-115, 33]},
                                  "fields": [2, 0, 50]}
    assert body["objects"][2] == {"id": "c", "object": {"type": "Point", "coordinates": [-115.002, 33.002]},
                                  "fields": [0, 0, 0]}
    assert body["objects"][3]["fields"] == [0, "truck", 0]
    assert body["objects"][3]["object"]["type"] == "Polygon"
    assert list(body) == ["ok", "fields", "objects", "count", "cursor"]
    body = strip(srv.json("WITHIN", "out", "MATCH", "c", *area))
    assert "fields" not in body and "fields" not in body["objects"][0]
    body = strip(srv.json("WITHIN", "out", "NOFIELDS", "POINTS", *area))
    assert "fields" not in body
    assert body["points"][1] == {"id": "b", "point": {"lat": 33.001, "lon": -115.001, "z": 12}}
    body = strip(srv.json("WITHIN", "out", "MATCH", "d", "BOUNDS", *area))
    assert body["bounds"] == [{"id": "d", "bounds": {"sw": {"lat": 33.003, "lon": -115.004},
                                                      "ne": {"lat": 33.004, "lon": -115.003}},
                               "fields": ["truck"]}]
    assert body["fields"] == ["name"]
    body = strip(srv.json("WITHIN", "out", "MATCH", "a", "HASHES", 5, *area))
    assert body["hashes"] == [{"id": "a", "hash": pygeohash.encode(33, -115, 5), "fields": [2, 50]}]
    body = strip(srv.json("NEARBY", "out", "DISTANCE", "IDS", "POINT", 33, -115, 150))
    assert body["ids"][0] == {"id": "a", "distance": 0}
    assert body["ids"][1]["id"] == "b"


# ---- filters --------------------------------------------------------------------------------


def test_where_wherein_match(r: redis.Redis) -> None:
    for i in range(1, 11):
        run(r, "SET", "flt", f"t{i}", "FIELD", "speed", i * 10, "FIELD", "kind", i % 3,
            "POINT", 33, -115 + i / 1000)
    run(r, "SET", "flt", "bus", "POINT", 33, -115)

    def ids(*opts: object) -> list[str]:
        return sorted(dec(run(r, "NEARBY", "flt", *opts, "IDS", "POINT", 33, -115, 5000))[1])

    assert ids("WHERE", "speed", 30, 50) == ["t3", "t4", "t5"]
    assert ids("WHERE", "speed", "(30", "(50") == ["t4"]
    assert ids("WHERE", "speed", "-inf", 20) == ["bus", "t1", "t2"]  # a missing field is 0
    assert ids("WHERE", "speed", "(90", "+inf") == ["t10"]
    assert ids("WHERE", "speed", 20, 80, "WHERE", "kind", 1, 1) == ["t4", "t7"]
    assert ids("WHERE", "speed", ">", 80) == ["t10", "t9"]
    assert ids("WHEREIN", "kind", 1, 2) == ["t2", "t5", "t8"]
    assert ids("WHEREIN", "speed", 3, 10, 30, 999) == ["t1", "t3"]
    assert ids("MATCH", "t1*") == ["t1", "t10"]
    assert ids("MATCH", "t1", "MATCH", "b?s") == ["bus", "t1"]
    assert ids("MATCH", "zzz", "MATCH", "*") == ids()
    assert run(r, "SCAN", "flt", "WHERE", "speed", 0, 45, "COUNT") == 5
    assert run(r, "WITHIN", "flt", "WHEREIN", "kind", 2, 0, 2, "COUNT", "CIRCLE", 33, -115, 5000) == 7


def test_expired_objects_are_skipped(r: redis.Redis) -> None:
    run(r, "SET", "exp", "gone", "EX", 0.2, "POINT", 33, -115)
    run(r, "SET", "exp", "kept", "POINT", 33, -115)
    assert run(r, "NEARBY", "exp", "COUNT", "POINT", 33, -115, 10) == 2
    time.sleep(0.4)
    assert dec(run(r, "NEARBY", "exp", "IDS", "POINT", 33, -115, 10)) == [0, ["kept"]]
    assert dec(run(r, "WITHIN", "exp", "IDS", "CIRCLE", 33, -115, 10)) == [0, ["kept"]]
    assert dec(run(r, "SCAN", "exp", "IDS")) == [0, ["kept"]]


# ---- areas ----------------------------------------------------------------------------------


def _shapes(r: redis.Redis) -> None:
    """Area under test: the square lon 0..10, lat 0..10."""
    run(r, "SET", "geo", "inside", "OBJECT", square(2, 2, 4, 4))
    run(r, "SET", "geo", "crossing", "OBJECT", square(8, 8, 12, 12))
    run(r, "SET", "geo", "outside", "OBJECT", square(20, 20, 22, 22))
    run(r, "SET", "geo", "line_in", "OBJECT", '{"type":"LineString","coordinates":[[1,1],[3,5]]}')
    run(r, "SET", "geo", "line_across", "OBJECT", '{"type":"LineString","coordinates":[[5,5],[15,5]]}')
    run(r, "SET", "geo", "p_in", "POINT", 5, 5)
    run(r, "SET", "geo", "p_edge", "POINT", 0, 5)
    run(r, "SET", "geo", "p_out", "POINT", 5, 15)
    # bbox overlaps the area, but the L-shape itself stays outside it
    run(r, "SET", "geo", "l_shape", "OBJECT", poly((11, -1), (13, -1), (13, 13), (9, 13), (9, 11), (11, 11)))


AREA_IN = {"inside", "line_in", "p_in", "p_edge"}
AREA_TOUCH = AREA_IN | {"crossing", "line_across"}


@pytest.mark.parametrize("area", [
    ("BOUNDS", 0, 0, 10, 10),
    ("OBJECT", square(0, 0, 10, 10)),
    ("OBJECT", orjson.dumps({"type": "Feature", "properties": {},
                             "geometry": orjson.loads(square(0, 0, 10, 10))}).decode()),
    ("GET", "areas", "sq"),
])
def test_within_vs_intersects_polygons(r: redis.Redis, area: tuple) -> None:
    _shapes(r)
    run(r, "SET", "areas", "sq", "OBJECT", square(0, 0, 10, 10))
    within = set(dec(run(r, "WITHIN", "geo", "IDS", *area))[1])
    touching = set(dec(run(r, "INTERSECTS", "geo", "IDS", *area))[1])
    assert within == AREA_IN
    assert touching == AREA_TOUCH
    assert run(r, "WITHIN", "geo", "COUNT", *area) == len(AREA_IN)


def test_large_result_sets_page_in_id_order(r: redis.Redis) -> None:
    """3,000 hits out of 3,100 objects: small pages over such sets are served by walking ids in
    order instead of sorting every hit. Pages, filters, shapes and strings must give exactly
    what sorting gives, and a page far into the set must be right too."""
    pipe = r.pipeline(transaction=False)
    rng = random.Random(5)
    inside: dict[str, int] = {}
    for i in range(3000):
        oid = f"v{rng.randrange(10**9):09d}"
        inside[oid] = i % 7
        lat, lon = rng.uniform(10, 11), rng.uniform(20, 21)
        pipe.execute_command("SET", "big", oid, "FIELD", "n", i % 7, "POINT", lat, lon)
    for i in range(50):  # outside the area
        pipe.execute_command("SET", "big", f"out{i}", "POINT", -10, -20)
    for i in range(30):  # shapes inside it, interleaved with points in id order
        oid = f"v{i:03d}shape"
        inside[oid] = 0
        pipe.execute_command("SET", "big", oid, "OBJECT", square(20.1, 10.1, 20.2, 10.2))
    for i in range(20):
        pipe.execute_command("SET", "big", f"str{i}", "STRING", "x")
    pipe.execute()
    want = sorted(inside)
    area = ("BOUNDS", 9, 19, 12, 22)
    for cmd in ("WITHIN", "INTERSECTS"):
        assert dec(run(r, cmd, "big", "LIMIT", 10, "IDS", *area)) == [10, want[:10]]
        assert dec(run(r, cmd, "big", "CURSOR", 2500, "LIMIT", 5, "IDS", *area)) == [2505, want[2500:2505]]
        assert dec(run(r, cmd, "big", "CURSOR", len(want) - 3, "LIMIT", 5, "IDS", *area)) == [0, want[-3:]]
        seen, cursor = [], 0
        while True:
            cursor, page = dec(run(r, cmd, "big", "CURSOR", cursor, "LIMIT", 700, "IDS", *area))
            seen += page
            if not cursor:
                break
        assert seen == want
        sixes = [oid for oid in want if inside[oid] == 6]
        assert dec(run(r, cmd, "big", "LIMIT", 4, "WHERE", "n", 6, 6, "IDS", *area))[1] == sixes[:4]
        assert run(r, cmd, "big", "COUNT", *area) == len(want)
        assert run(r, cmd, "big", "WHERE", "n", 6, 6, "COUNT", *area) == len(sixes)
        ones = [oid for oid in want if fnmatch.fnmatchcase(oid, "v1*0")]  # a walk of the "v1" range only
        assert dec(run(r, cmd, "big", "MATCH", "v1*0", "LIMIT", 1000, "IDS", *area)) == [0, ones]
        assert run(r, cmd, "big", "MATCH", "v1*0", "COUNT", *area) == len(ones)


def test_match_prefix_reads_only_its_id_range(r: redis.Redis) -> None:
    """SCAN with MATCH reads only the ids the pattern's literal prefix allows (Tile38's
    ScanRange: CURSOR positions count inside that range); every kind of pattern still
    matches exactly what fnmatch says, in both directions, and WITHIN agrees."""
    ids = [f"{p}{i}" for p in ("bus", "truck", "truckX", "tram", "trÿ", "tr\U0010ffffz") for i in range(12)]
    pipe = r.pipeline(transaction=False)
    for n, oid in enumerate(ids):
        pipe.execute_command("SET", "mp", oid, "POINT", 10 + n / 1000, 20)
    pipe.execute()
    every = sorted(ids)
    patterns = ["truck*", "truck1?", "tr*", "truckX1*", "bus[12]", "tram3", "nothing*", "trÿ*"]
    patterns.append("tr\U0010ffff*")  # the last code point: no range end above it
    for pattern in patterns:
        want = [oid for oid in every if fnmatch.fnmatchcase(oid, pattern)]
        assert dec(run(r, "SCAN", "mp", "MATCH", pattern, "LIMIT", 1000, "IDS"))[1] == want, pattern
        assert dec(run(r, "SCAN", "mp", "MATCH", pattern, "DESC", "LIMIT", 1000, "IDS"))[1] == want[::-1]
        got = dec(run(r, "WITHIN", "mp", "MATCH", pattern, "LIMIT", 1000, "IDS", "BOUNDS", 0, 0, 30, 30))[1]
        assert got == want, pattern
        assert run(r, "SCAN", "mp", "MATCH", pattern, "COUNT") == len(want)
    # two patterns: their common prefix "tr" bounds the range; either may match
    both = [oid for oid in every if fnmatch.fnmatchcase(oid, "truckX*") or fnmatch.fnmatchcase(oid, "tram*")]
    assert dec(run(r, "SCAN", "mp", "MATCH", "truckX*", "MATCH", "tram*", "LIMIT", 1000, "IDS"))[1] == both
    # the cursor counts ids inside the prefix range, as Tile38's ScanRange does
    trucks = [oid for oid in every if oid.startswith("truck")]
    assert dec(run(r, "SCAN", "mp", "MATCH", "truck*", "LIMIT", 5, "IDS")) == [5, trucks[:5]]
    assert dec(run(r, "SCAN", "mp", "MATCH", "truck*", "CURSOR", 20, "LIMIT", 5, "IDS")) == [0, trucks[20:]]
    assert run(r, "PDEL", "mp", "truckX*") == 12
    assert dec(run(r, "SCAN", "mp", "MATCH", "truck*", "COUNT")) == 12
    assert run(r, "PDEL", "mp", "nothing*") == 0


def test_circle_area(r: redis.Redis) -> None:
    _shapes(r)
    # a circle of 250 km around (5, 5) holds p_in only; the square `inside` (2..4) is ~190..470 km away
    meters = 250_000
    assert dec(run(r, "WITHIN", "geo", "IDS", "CIRCLE", 5, 5, meters))[1] == ["p_in"]
    assert haversine(5, 5, 4, 4) < meters and haversine(5, 5, 5, 3) < meters  # `inside`, `line_in` reach in
    assert haversine(5, 5, 8, 8) > meters and haversine(5, 5, 0, 5) > meters  # `crossing`, `p_edge` do not
    touching = set(dec(run(r, "INTERSECTS", "geo", "IDS", "CIRCLE", 5, 5, meters))[1])
    assert touching == {"p_in", "line_across", "inside", "line_in"}
    big = set(dec(run(r, "WITHIN", "geo", "IDS", "CIRCLE", 5, 5, 1_000_000))[1])
    assert {"inside", "p_in", "p_edge", "line_in"} <= big and "outside" not in big


def test_point_hash_tile_quadkey_areas(r: redis.Redis) -> None:
    _shapes(r)
    assert dec(run(r, "WITHIN", "geo", "IDS", "POINT", 5, 5))[1] == ["p_in"]
    assert set(dec(run(r, "INTERSECTS", "geo", "IDS", "POINT", 3, 3))[1]) == {"inside"}
    gh = pygeohash.encode(5, 5, 4)
    expected = {"p_in"}
    assert set(dec(run(r, "WITHIN", "geo", "IDS", "HASH", gh))[1]) == expected
    assert "line_across" in set(dec(run(r, "INTERSECTS", "geo", "IDS", "HASH", gh))[1])
    tile = mercantile.tile(5, 5, 6)  # lon, lat
    assert "p_in" in set(dec(run(r, "WITHIN", "geo", "IDS", "TILE", tile.x, tile.y, tile.z))[1])
    assert "p_in" not in set(dec(run(r, "WITHIN", "geo", "IDS", "TILE", tile.x + 1, tile.y, tile.z))[1])
    qk = mercantile.quadkey(tile)
    assert dec(run(r, "WITHIN", "geo", "IDS", "QUADKEY", qk)) == dec(
        run(r, "WITHIN", "geo", "IDS", "TILE", tile.x, tile.y, tile.z))
    world = set(dec(run(r, "WITHIN", "geo", "IDS", "TILE", 0, 0, 0))[1])
    assert world == {"inside", "crossing", "outside", "line_in", "line_across", "p_in", "p_edge", "p_out",
                     "l_shape"}


def test_missing_key_is_an_empty_result(srv: GeoServer, r: redis.Redis) -> None:
    assert dec(run(r, "NEARBY", "none", "POINT", 1, 2, 3)) == [0, []]
    assert dec(run(r, "WITHIN", "none", "IDS", "BOUNDS", 1, 2, 3, 4)) == [0, []]
    assert run(r, "INTERSECTS", "none", "COUNT", "CIRCLE", 1, 2, 3) == 0
    empty = {"ok": True, "objects": [], "count": 0, "cursor": 0}
    assert strip(srv.json("NEARBY", "none", "POINT", 1, 2)) == empty


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "err"), [
    (("NEARBY", "k", "POINT", "abc", 1, 2), "invalid argument 'abc'"),
    (("NEARBY", "k", "POINT", 91, 1, 2), "invalid argument '91'"),
    (("NEARBY", "k", "POINT", 1, 181), "invalid argument '181'"),
    (("NEARBY", "k", "POINT", 1, 2, -5), "invalid argument '-5'"),
    (("NEARBY", "k", "POINT", 1, 2, 3, 4), "invalid argument '4'"),
    (("NEARBY", "k", "BOUNDS", 1, 2, 3, 4), "invalid argument 'BOUNDS'"),
    (("NEARBY", "k", "DESC", "POINT", 1, 2), "DESC is not allowed for NEARBY"),
    (("NEARBY", "k", "LIMIT", 1, "LIMIT", 2, "POINT", 1, 2), "duplicate argument 'LIMIT'"),
    (("NEARBY", "k", "CURSOR", 1, "cursor", 2, "POINT", 1, 2), "duplicate argument 'CURSOR'"),
    (("NEARBY", "k", "LIMIT", 0, "POINT", 1, 2), "invalid argument '0'"),
    (("NEARBY", "k", "LIMIT", "x", "POINT", 1, 2), "invalid argument 'x'"),
    (("WITHIN", "k", "HASHES", 13, "POINT", 1, 2), "invalid argument '13'"),
    (("WITHIN", "k", "SQUARE", 1, 2), "invalid argument 'SQUARE'"),
    (("WITHIN", "k", "BOUNDS", 1, 2, 3, "x"), "invalid argument 'x'"),
    (("WITHIN", "k", "CIRCLE", 1, 2, "far"), "invalid argument 'far'"),
    (("WITHIN", "k", "WHERE", "f", "low", 2, "POINT", 1, 2), "invalid argument 'low'"),
    (("WITHIN", "k", "WHEREIN", "f", "two", 1, 2, "POINT", 1, 2), "invalid argument 'two'"),
    (("WITHIN", "k", "OBJECT", "{nope"), "invalid data"),
    (("WITHIN", "k", "QUADKEY", "0259"), "invalid argument '0259'"),
    (("WITHIN", "k", "TILE", 4, 0, 2), "invalid argument '4'"),
    (("WITHIN", "k", "HASH", "!!"), "invalid geohash '!!'"),
    (("WITHIN", "k", "GET", "nokey", "x"), "key not found"),
    (("SCAN", "k", "BOUNDS", 1, 2, 3, 4), "invalid argument '1'"),
    (("SCAN", "k", "NOFIELDS", "NOFIELDS"), "duplicate argument 'NOFIELDS'"),
    (("SCAN", "k", "FOO"), "invalid argument 'FOO'"),
])
def test_bad_input(srv: GeoServer, r: redis.Redis, args: tuple, err: str) -> None:
    with pytest.raises(redis.ResponseError) as exc:
        run(r, *args)
    assert str(exc.value) == err
    assert srv.json(*args)["err"] == err


def test_get_area_missing_id_and_arity(srv: GeoServer, r: redis.Redis) -> None:
    run(r, "SET", "areas2", "a", "POINT", 1, 1)
    with pytest.raises(redis.ResponseError, match=r"^id not found$"):
        run(r, "WITHIN", "k", "GET", "areas2", "zz")
    with pytest.raises(redis.ResponseError, match="wrong number of arguments for 'nearby' command"):
        run(r, "NEARBY", "k")
    assert srv.json("NEARBY", "k")["err"] == "invalid number of arguments"
    with pytest.raises(redis.ResponseError):
        run(r, "NEARBY", "k", "POINT", 1)
    assert run(r, "PING") is True  # the connection keeps serving


# ---- a Tile38 client ------------------------------------------------------------------------


async def test_pyle38_client(srv: GeoServer) -> None:
    from pyle38 import Tile38

    t = Tile38(url=f"redis://127.0.0.1:{srv.port}")
    try:
        await t.set("py", "truck1").fields({"speed": 20}).point(33, -115).exec()
        await t.set("py", "truck2").point(33.01, -115.01).exec()
        near = await t.nearby("py").point(33, -115, 1000).asObjects()
        assert near.ok and near.count == 1
        assert near.objects[0].id == "truck1"
        assert near.objects[0].object == {"type": "Point", "coordinates": [-115, 33]}
        dist = await t.nearby("py").distance().point(33, -115, 5000).asObjects()
        assert [o.id for o in dist.objects] == ["truck1", "truck2"]
        assert dist.objects[0].distance == 0
        assert dist.objects[1].distance == pytest.approx(haversine(33, -115, 33.01, -115.01), rel=1e-9)
        ids = await t.within("py").bounds(32, -116, 34, -114).asIds()
        assert ids.ids == ["truck1", "truck2"]
        count = await t.intersects("py").circle(33, -115, 2000).asCount()
        assert count.count == 2
        points = await t.scan("py").limit(1).asPoints()
        assert points.cursor == 1 and points.points[0].point.lat == 33
        where = await t.within("py").where("speed", 10, 30).bounds(32, -116, 34, -114).asIds()
        assert where.ids == ["truck1"]
    finally:
        await t.quit()
