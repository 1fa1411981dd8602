"""Long commands run in slices (issue 9): the same replies as in one go, other clients served
while they run, and sliced writes that replay to the same dataset (restart, follower).

The data is written straight into an AOF (RESP records) and loaded at start: `big` holds
BIG points (above commands/slices.SLICE, so its commands run sliced) and KEYS small keys hold
PER_KEY points each (so KEYS, STATS and SERVER run sliced too). No timing thresholds: the
concurrency tests assert orderings (a PING answered while a long command still runs).
"""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from geoserver.protocol.resp import encode_command
from helpers import GeoServer, wait_until
from wire import Wire, encode

BIG = 30_000
KEYS = 12_000
PER_KEY = 3


def coord(i: int) -> tuple[float, float]:
    return -60 + (i * 7919 % 120_000) / 1000.0, -170 + (i * 104_729 % 340_000) / 1000.0


def write_aof(path: Path) -> None:
    records = []
    for i in range(BIG):
        lat, lon = coord(i)
        fields = [b"FIELD", b"speed", b"%d" % (i % 50)] if i % 3 == 0 else []
        records.append(encode_command([b"SET", b"big", b"id%d" % i, *fields, b"POINT",
                                       b"%.3f" % lat, b"%.3f" % lon]))
    for k in range(KEYS):
        for j in range(PER_KEY):
            records.append(encode_command([b"SET", b"k%05d" % k, b"o%d" % j, b"POINT", b"1", b"%d" % j]))
    path.write_bytes(b"".join(records))


def start_loaded(data_dir: Path, args: list[str] | None = None) -> GeoServer:
    data_dir.mkdir(parents=True)
    write_aof(data_dir / "appendonly.aof")
    server = GeoServer(data_dir, args=args).start()
    wait_until(lambda: server.json("SCAN", "big", "COUNT").get("count") == BIG, 60,
               message="dataset loaded")
    return server


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    """A read-only dataset shared by the read tests (nothing here writes to it)."""
    server = start_loaded(tmp_path_factory.mktemp("long") / "data")
    yield server
    server.kill9()


def all_ids() -> list[str]:
    return sorted(f"id{i}" for i in range(BIG))


def small_keys() -> list[str]:
    return [f"k{k:05d}" for k in range(KEYS)]


# ---- sliced reads give the one-go replies ------------------------------------------------------


def test_keys_sliced(loaded: GeoServer) -> None:
    c = loaded.client()
    assert [k.decode() for k in c.execute_command("KEYS", "*")] == sorted(["big", *small_keys()])
    keys = small_keys()
    assert [k.decode() for k in c.execute_command("KEYS", "k0*")] == [k for k in keys if k.startswith("k0")]
    assert [k.decode() for k in c.execute_command("KEYS", "k*7")] == [k for k in keys if k.endswith("7")]
    assert loaded.json("KEYS", "*")["keys"] == sorted(["big", *small_keys()])
    assert loaded.json("KEYS", "nothing*")["keys"] == []


def test_stats_and_server_sliced(loaded: GeoServer) -> None:
    keys = ["big", "missing", *small_keys()]
    reply = loaded.json("STATS", *keys)["stats"]
    assert len(reply) == len(keys) and reply[1] is None
    assert reply[0]["num_objects"] == BIG and reply[0]["num_points"] == BIG
    assert all(r["num_objects"] == PER_KEY for r in reply[2:])
    resp = loaded.client().execute_command("STATS", *keys)
    assert resp[1] is None and resp[2][resp[2].index(b"num_objects") + 1] == PER_KEY
    stats = loaded.stats()
    assert stats["num_collections"] == KEYS + 1
    assert stats["num_objects"] == stats["num_points"] == BIG + KEYS * PER_KEY
    assert loaded.json("INFO")["ok"]


def test_bounds(loaded: GeoServer) -> None:
    lats, lons = zip(*(coord(i) for i in range(BIG)), strict=True)
    lats = [round(x, 3) for x in lats]
    lons = [round(x, 3) for x in lons]
    box = loaded.json("BOUNDS", "big")["bounds"]["coordinates"][0]
    assert box[0] == [min(lons), min(lats)] and box[2] == [max(lons), max(lats)]


def test_scan_sliced(loaded: GeoServer) -> None:
    c = loaded.client()
    cursor, ids = c.execute_command("SCAN", "big", "LIMIT", 1_000_000, "IDS")
    assert cursor == 0 and [i.decode() for i in ids] == all_ids()
    cursor, ids = c.execute_command("SCAN", "big", "DESC", "LIMIT", 1_000_000, "IDS")
    assert [i.decode() for i in ids] == all_ids()[::-1]
    cursor, ids = c.execute_command("SCAN", "big", "CURSOR", 5, "LIMIT", 20_000, "IDS")
    assert cursor == 20_005 and [i.decode() for i in ids] == all_ids()[5:20_005]
    cursor, ids = c.execute_command("SCAN", "big", "MATCH", "id1*", "LIMIT", 1_000_000, "IDS")
    assert [i.decode() for i in ids] == [i for i in all_ids() if i.startswith("id1")]
    body = loaded.json("SCAN", "big", "LIMIT", 1_000_000)
    assert body["count"] == BIG and body["cursor"] == 0 and body["fields"] == ["speed"]
    first = body["objects"][0]
    assert first["id"] == "id0" and first["fields"] == [0]
    lat, lon = coord(0)
    assert first["object"] == {"type": "Point", "coordinates": [round(lon, 3), round(lat, 3)]}
    resp = c.execute_command("SCAN", "big", "LIMIT", 1_000_000, "POINTS")
    rows = {r[0]: r for r in resp[1]}
    assert len(resp[1]) == BIG and len(rows[b"id0"]) == 2 and rows[b"id3"][2] == [b"speed", b"3"]


def test_where_count_sliced(loaded: GeoServer) -> None:
    want = sum(1 for i in range(0, BIG, 3) if i % 50 == 10)
    with Wire(loaded.port) as w:
        assert w.call("SCAN", "big", "WHERE", "speed", 10, 10, "COUNT") == want
    assert loaded.json("SCAN", "big", "WHERE", "speed", 10, 10, "COUNT")["count"] == want


def test_within_and_intersects_sliced(loaded: GeoServer) -> None:
    inside = sorted(f"id{i}" for i in range(BIG)
                    if -40 <= round(coord(i)[0], 3) <= 40 and -130 <= round(coord(i)[1], 3) <= 130)
    assert len(inside) > 10_000
    for cmd in ("WITHIN", "INTERSECTS"):
        cursor, ids = loaded.client().execute_command(cmd, "big", "LIMIT", 1_000_000, "IDS",
                                                       "BOUNDS", -40, -130, 40, 130)
        assert cursor == 0 and [i.decode() for i in ids] == inside
    body = loaded.json("WITHIN", "big", "LIMIT", 11_000, "POINTS", "BOUNDS", -40, -130, 40, 130)
    assert [o["id"] for o in body["points"]] == inside[:11_000] and body["cursor"] > 0
    assert loaded.json("WITHIN", "big", "COUNT", "BOUNDS", -40, -130, 40, 130)["count"] == len(inside)


def test_nearby_sliced(loaded: GeoServer) -> None:
    body = loaded.json("NEARBY", "big", "DISTANCE", "LIMIT", 1_000_000, "IDS", "POINT", 0, 0)
    assert sorted(x["id"] for x in body["ids"]) == all_ids() and body["count"] == BIG
    dists = [x["distance"] for x in body["ids"]]
    assert dists == sorted(dists)
    nearest = min(range(BIG), key=lambda i: _haversine(0, 0, *coord(i)))
    assert body["ids"][0]["id"] == f"id{nearest}"
    _cursor, rows = loaded.client().execute_command("NEARBY", "big", "LIMIT", 20_000, "IDS",
                                                    "POINT", 0, 0, 5_000_000)
    assert [r.decode() for r in rows] == [x["id"] for x in body["ids"] if x["distance"] <= 5e6][:20_000]


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlon = math.radians(lon2 - lon1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


def test_metrics_bounded(loaded: GeoServer) -> None:
    def scrape() -> str:
        with socket.create_connection((loaded.host, loaded.port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := sock.recv(1 << 20):
                data += chunk
        return data.decode()

    # above 10k keys the dataset figures come from a background sweep: the first scrape starts it
    def swept() -> str | None:
        text = scrape()
        return text if 'tile38_collection_objects{col="big"}' in text else None

    text = wait_until(swept, 10, message="a metrics sweep")
    assert f'tile38_collection_objects{{col="big"}} {float(BIG)}' in text
    assert text.count("tile38_collection_objects{") == 1000  # the largest collections only
    assert f"tile38_collections {float(KEYS + 1)}" in text


# ---- other clients are served while a long command runs ------------------------------------


def _served_during(server: GeoServer, *command: object, times: int = 4) -> bool:
    """Pipeline `command` `times` on one connection, then PING on another: True when the PONG
    came back before all of the long replies were there."""
    with Wire(server.port) as long, Wire(server.port) as canary:
        long.send(encode(*command) * times)
        time.sleep(0.02)  # the long connection's requests are read first
        assert canary.call("PING") == "PONG"
        long.sock.setblocking(False)
        got = b""
        try:
            while chunk := long.sock.recv(1 << 20):
                got += chunk
        except BlockingIOError:
            pass
        long.sock.setblocking(True)
        done = _frames(got) >= times
        long.sock.settimeout(30)
        while _frames(got) < times:  # the replies all arrive, in order
            got += long.sock.recv(1 << 20)
        return not done


def _frames(buf: bytes) -> int:
    from wire import frame_end

    n, i = 0, 0
    while i < len(buf) and (end := frame_end(buf, i)) is not None:
        n, i = n + 1, end
    return n


def test_ping_answered_during_keys(loaded: GeoServer) -> None:
    assert _served_during(loaded, "KEYS", "*", times=30)


def test_ping_answered_during_filtered_scan(loaded: GeoServer) -> None:
    assert _served_during(loaded, "SCAN", "big", "MATCH", "*7", "COUNT", times=10)


def test_ping_answered_during_stats(loaded: GeoServer) -> None:
    assert _served_during(loaded, "STATS", *small_keys(), times=5)


# ---- sliced writes: correct, held against other writes, replayed the same ----------------------


def _dataset(server: GeoServer) -> dict[str, list[object]]:
    """Every key's objects: (id, object, fields) in id order."""
    out = {}
    for key in server.json("KEYS", "*")["keys"]:
        body = server.json("SCAN", key, "LIMIT", 1_000_000)
        out[key] = [(o["id"], o["object"], o.get("fields")) for o in body["objects"]]
    return out


def restart(server: GeoServer) -> None:
    server.stop()
    server.start()
    wait_until(lambda: server.json("KEYS", "*")["ok"], 60, message="AOF loaded")


@pytest.fixture
def writable(tmp_path: Path) -> Iterator[GeoServer]:
    server = start_loaded(tmp_path / "data")
    yield server
    server.kill9()


def test_pdel_with_concurrent_sets_replays_the_same(writable: GeoServer, tmp_path: Path) -> None:
    follower = GeoServer(tmp_path / "follower").start()
    assert follower.json("FOLLOW", "127.0.0.1", writable.port)["ok"]
    matching = [i for i in all_ids() if i.startswith("id1")]
    assert len(matching) > 10_000  # sliced
    stop = threading.Event()
    acked: list[str] = []

    def writer() -> None:  # SETs of ids the PDEL matches, and of other keys, all along
        c = writable.client()
        n = 0
        while not stop.is_set() or n < 200:
            oid = f"id1new{n}" if n % 2 else matching[(n * 37) % len(matching)]
            c.execute_command("SET", "big", oid, "POINT", 10, 10)
            c.execute_command("SET", "other", f"x{n}", "POINT", 1, 1)
            acked.append(oid)
            n += 1

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.05)
    deleted = writable.client().execute_command("PDEL", "big", "id1*")
    stop.set()
    t.join()
    assert 0 < deleted <= len(matching) + len(acked)
    live = _dataset(writable)
    survivors = {oid for oid, _o, _f in live["big"] if oid.startswith("id1")}
    assert survivors <= set(acked)  # only re-SET ids survive the PDEL
    assert not set(matching[:100]) - set(acked) & survivors
    wait_until(lambda: follower.stats()["aof_size"] == writable.stats()["aof_size"], 30,
               message="follower caught up")
    assert _dataset(follower) == live
    restart(writable)
    assert _dataset(writable) == live
    follower.kill9()


def test_pdel_holds_writes_to_its_key_only(writable: GeoServer) -> None:
    """A SET to the PDEL's key sent while it runs is applied after it (it survives); a SET to
    another key is not held."""
    with Wire(writable.port) as pdel, Wire(writable.port) as same, Wire(writable.port) as other:
        pdel.send(encode("PDEL", "big", "*"))
        time.sleep(0.01)
        same.send(encode("SET", "big", "id5", "POINT", 1, 1))
        assert other.call("SET", "elsewhere", "a", "POINT", 1, 1) == "OK"
        assert pdel.read_frame() == b":%d\r\n" % BIG
        assert same.read_frame() == b"+OK\r\n"
    assert writable.json("SCAN", "big", "COUNT")["count"] == 1
    assert writable.json("GET", "big", "id5")["ok"]
    restart(writable)
    assert writable.json("SCAN", "big", "COUNT")["count"] == 1


def test_drop_and_flushdb_then_write(writable: GeoServer, tmp_path: Path) -> None:
    follower = GeoServer(tmp_path / "follower").start()
    assert follower.json("FOLLOW", "127.0.0.1", writable.port)["ok"]
    with Wire(writable.port) as w:
        w.send(encode("DROP", "big") + encode("SET", "big", "a", "POINT", 1, 2) + encode("GET", "big", "a")
               + encode("SCAN", "big", "COUNT"))
        point = b'{"type":"Point","coordinates":[2,1]}'
        assert [w.read_frame() for _ in range(4)][1:] == [b"+OK\r\n", b"$%d\r\n%s\r\n" % (len(point), point),
                                                          b":1\r\n"]
        assert w.call("STATS", "k00001")[0] is not None
        w.send(encode("FLUSHDB") + encode("SET", "k00001", "b", "POINT", 3, 4) + encode("KEYS", "*"))
        assert [w.read_frame() for _ in range(3)][1:] == [b"+OK\r\n", b"*1\r\n$6\r\nk00001\r\n"]
    assert writable.stats()["num_objects"] == 1
    wait_until(lambda: follower.stats()["aof_size"] == writable.stats()["aof_size"], 30,
               message="follower caught up")
    live = _dataset(writable)
    assert _dataset(follower) == live == {"k00001": [("b", {"type": "Point", "coordinates": [4, 3]}, None)]}
    restart(writable)
    assert _dataset(writable) == live
    follower.kill9()


def test_json_over_http_sliced(loaded: GeoServer) -> None:
    with socket.create_connection((loaded.host, loaded.port), timeout=10) as sock:
        sock.sendall(b"GET /KEYS+* HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    body = orjson.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["ok"] and body["keys"] == ["big", *small_keys()]
    assert body["elapsed"].endswith("s")
