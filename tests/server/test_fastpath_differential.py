"""The compiled fast path (geoserver.fastpath, src/core/fastpath.cpp) against the Python path:
two real servers, one with GEOSERVER_FASTPATH=1 and one with 0, get the same random pipelined
byte streams (hot forms mixed with their near misses: options, bad numbers, non-canonical RESP,
inline lines, non-plain objects, binary ids, new keys) split at random points; every reply byte,
the AOF bytes and the dataset must be identical. Plus the state gates (auth, MONITOR, fences,
followers) and the core's framing decisions in process."""

from __future__ import annotations

import random
import re
import socket
import time
from itertools import chain
from pathlib import Path
from types import SimpleNamespace

import pytest
from geoserver import fastpath
from geoserver.store.collection import PLAIN, Item
from geoserver.store.collection import STORE_KINDS as KINDS
from geoserver.store.database import Database
from helpers import GeoServer, wait_until

pytestmark = pytest.mark.skipif(not fastpath.ENABLED, reason="the compiled core is not built")


def enc(*args: object) -> bytes:
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


KEYS = [b"fleet", b"fleet", b"other", b"\xff\xfekey", b"new"]
IDS = [b"a", b"b", b"truck1", b"x" * 30, b"\xff", "é".encode(), b"", b"id 1"]
NUMS = ["33", "33.5", "-115.25", "0", "-0", "0.0001", "1e-5", "0.00001234", "12.345678901234567",
        "1e1", "+33", ".5", "5.", "1_0", " 33", "inf", "nan", "1e400", "91", "-181", "180", "-90",
        "0x10", "33.0", "1E2", "abc", ""]


FIELD_NAMES = ["speed", "speed", "heading", "Speed", "a.b", "z", "LAT", "lon", "", "é", "x" * 40, "POINT"]
FIELD_VALUES = ["10", "55.5", "-3", "1e5", "1E-3", "2.5e+2", "0", "-0", "0.0", "0e3", "010", "1.", ".5",
                "+1", "1e400", "1e-400", "-1e400", "5e-324", " 5", "5 ", "inf", "NaN", "abc", "true", "null",
                '{"a":1}', '"quoted"', "[1, 2]", "", "12345678901234567890", "0.1", "-0.5"]


def field_options(rng: random.Random, clean: bool = False) -> list[str]:
    """1-9 FIELD pairs: numbers the core stores (all, when `clean`), with the near misses that
    are Python's (a zero, a string, JSON, a reserved name, a ninth pair, a typo)."""
    out: list[str] = []
    for _ in range(rng.choice([1, 1, 2, 2, 3, 8] if clean else [1, 1, 2, 2, 3, 8, 9])):
        if clean:
            out += [rng.choice(["FIELD", "field"]), rng.choice([*FIELD_NAMES[:5], "x" * 40]),
                    rng.choice(FIELD_VALUES[:6] + FIELD_VALUES[-2:])]
        else:
            out += [rng.choice(["FIELD", "FIELD", "field", "FIELDS"]), rng.choice(FIELD_NAMES),
                    rng.choice(FIELD_VALUES[:4] * 4 + FIELD_VALUES)]
    return out


def fset_options(rng: random.Random, clean: bool = False) -> list[str]:
    """FSET's `[XX] name value ...`: 1-8 pairs the core runs (all, when `clean`), with the near
    misses that are Python's (zero, strings, JSON, reserved names, a ninth pair, RETURN, odd arity)."""
    out = ["XX"] if rng.random() < 0.2 else []
    clean_names, clean_values = [*FIELD_NAMES[:5], "x" * 40], FIELD_VALUES[:6] + FIELD_VALUES[-2:]
    for _ in range(rng.choice([1, 1, 2, 3, 8] if clean else [1, 1, 2, 3, 8, 9])):
        if clean:
            out += [rng.choice(clean_names), rng.choice(clean_values)]
        else:
            out += [rng.choice([*FIELD_NAMES, "XX", "return"]),
                    rng.choice(FIELD_VALUES[:4] * 4 + FIELD_VALUES)]
    if not clean and rng.random() < 0.1:
        out += rng.choice([["RETURN", "POINT"], ["speed"], []])
    return out


def random_request(rng: random.Random) -> bytes:
    key, oid = rng.choice(KEYS), rng.choice(IDS)
    lat = rng.choice([*NUMS, repr(rng.uniform(-90, 90)), repr(rng.uniform(33, 33.01))])
    lon = rng.choice([*NUMS, repr(rng.uniform(-180, 180)), repr(rng.uniform(-115.01, -115))])
    r = rng.random()
    if r < 0.30:
        return enc(rng.choice([b"SET", b"set", b"Set"]), key, oid, rng.choice([b"POINT", b"point"]), lat, lon)
    if r < 0.36:
        return enc("SET", key, oid, "POINT", lat, lon, rng.choice(["1", "EX"]), "100")
    if r < 0.40:
        return enc("SET", key, oid, *field_options(rng), "POINT", lat, lon, *rng.choice([[]] * 8 + [
            ["FIELD", "speed", "7"], ["EX", "100"], ["XX"]]))
    if r < 0.43:
        return enc("SET", key, oid, "STRING", "hello")
    if r < 0.45:
        return enc("SET", key, oid, "BOUNDS", 1, 1, 2, 2)
    if r < 0.47:
        return enc("EXPIRE", key, oid, 100)
    if r < 0.49:
        return enc("FSET", key, oid, *fset_options(rng))
    if r < 0.62:
        return enc("GET", key, oid)
    if r < 0.70:
        return enc("GET", key, oid, rng.choice(["POINT", "point", "OBJECT", "BOUNDS", "WITHFIELDS", "HASH"]))
    if r < 0.72:
        return enc("GET", key)
    if r < 0.77:
        return enc(*rng.choice([("PING",), ("ping", "hello"), ("PING", "a", "b"), ("PING", b"\x00\xff")]))
    if r < 0.80:
        return enc(rng.choice(["DEL", "del"]), key, oid, *rng.choice([[], [], [], ["ERRON404"], ["x"]]))
    if r < 0.81:
        return enc("DROP", key)
    if r < 0.83:
        return enc("SCAN", key, *rng.choice([[], ["LIMIT", 5], ["LIMIT", 1000]]),
                   *rng.choice([[], ["IDS"], ["POINTS"], ["OBJECTS"], ["COUNT"], ["DESC"]]))
    if r < 0.84:
        return enc("STATS", key, "fleet")
    if r < 0.87:
        limit = rng.choice([[], ["LIMIT", 1], ["LIMIT", 3], ["LIMIT", "0"], ["LIMIT", "03"]])
        out = rng.choice([["IDS"], ["COUNT"], ["ids"], ["POINTS"], ["OBJECTS"], []])
        return enc("NEARBY", key, *limit, *out, "POINT",
                   rng.choice(["33.005", lat]), rng.choice(["-115.005", lon]),
                   rng.choice(["0", "500", "5000", "1e7", "-1", lat]))
    if r < 0.89:  # empty arrays: skipped by the framing, not requests
        return rng.choice([b"*0\r\n", b"*-1\r\n"])
    if r < 0.91:
        return b"PING\r\n" if rng.random() < 0.5 else b"SET fleet inl POINT 33 -115\r\n"
    if r < 0.93:
        return enc("SET", "new", oid, "POINT", 33, -115)  # a new key each time after DROP
    if r < 0.95:
        return enc("TIMEOUT", 1, "GET", key, oid)
    if r < 0.97:  # JSON replies over RESP (pyle38's mode): the core writes PING/SET/GET/DEL ones
        return enc("OUTPUT", rng.choice(["json", "JSON", "resp"]))
    return enc("SET", key, oid, "POINT", lat, lon, "z")  # arity / trailing token


_ELAPSED = re.compile(rb'\$\d+\r\n(\{"ok":[^\r\n]*?),"elapsed":"[0-9.]+(?:ns|\xc2\xb5s|ms|s)"\}\r\n')


def without_elapsed(replies: bytes) -> bytes:
    """JSON bulks with their `elapsed` (and so their length) taken out: the rest must match."""
    return _ELAPSED.sub(lambda m: b"J" + m.group(1) + b"}\r\n", replies)


def exchange(sock: socket.socket, data: bytes, rng: random.Random) -> bytes:
    """Send `data` in random pieces, then a sentinel PING; the replies up to the sentinel's."""
    sentinel = b"$8\r\nsentinel\r\n"
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 3, 17, 64, 500, 5000, len(data)])
        sock.sendall(data[pos:pos + n])
        pos += n
        if rng.random() < 0.2:
            time.sleep(0.002)  # a read boundary inside a request
    sock.sendall(enc("PING", "sentinel"))
    got = b""
    while not got.endswith(sentinel):
        chunk = sock.recv(1 << 20)
        assert chunk, f"connection closed after {got[-300:]!r}"
        got += chunk
    return got[:-len(sentinel)]


def start(tmp_path: Path, name: str, fast: bool, args: list[str] | None = None) -> GeoServer:
    return GeoServer(tmp_path / name, args=args, env={"GEOSERVER_FASTPATH": "1" if fast else "0"}).start()


def dump_requests() -> bytes:
    """Every key's points, objects with their fields, and STATS (in_memory_size: the weight)."""
    keys = sorted(set(KEYS))
    return b"".join(enc("SCAN", k, "LIMIT", 1000, "POINTS") + enc("SCAN", k, "LIMIT", 1000) + enc("STATS", k)
                    for k in keys)


@pytest.mark.parametrize("seed", range(6))
def test_random_streams_match_the_python_path(tmp_path, seed):
    rng = random.Random(seed)
    stream = b"".join(random_request(rng) for _ in range(600)) + enc("OUTPUT", "resp")
    servers = [start(tmp_path, "fast", True), start(tmp_path, "slow", False)]
    try:
        replies = []
        for s in servers:
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(b"".join(enc("SET", k, "seed", "POINT", 33, -115)
                                  for k in (b"fleet", b"other", b"\xff\xfekey")))
            replies.append(exchange(sock, stream, random.Random(seed)))
            replies[-1] += exchange(sock, dump_requests(), random.Random(seed))
            sock.close()
        assert b'{"ok":true,"elapsed":"' in replies[0]  # JSON replies the core wrote
        assert without_elapsed(replies[0]) == without_elapsed(replies[1])
        assert b"+OK" in replies[0]
        for s in servers:
            s.stop()
        assert servers[0].aof_path.read_bytes() == servers[1].aof_path.read_bytes()
        # and the AOF the fast path wrote replays (through the loader's fast replay) to the same data
        for s in servers:
            s.start()
        dumps = [exchange(socket.create_connection(("127.0.0.1", s.port)), dump_requests(), random.Random(0))
                 for s in servers]
        assert dumps[0] == dumps[1]
    finally:
        for s in servers:
            s.kill9()


def test_gates_auth_monitor_fences_and_followers(tmp_path):
    """Each state in which the fast path must not run is served by the Python path."""
    s = start(tmp_path, "gates", True, ["--requirepass", "pw"])
    try:
        sock = socket.create_connection(("127.0.0.1", s.port))
        got = exchange(sock, enc("PING") + enc("SET", "fleet", "a", "POINT", 33, -115)
                       + enc("GET", "fleet", "a"), random.Random(1))
        assert got.startswith(b"+PONG\r\n-") and got.count(b"auth") + got.count(b"AUTH") >= 2
        got = exchange(sock, enc("AUTH", "pw") + enc("SET", "fleet", "a", "POINT", 33, -115)
                       + enc("SET", "fleet", "b", "POINT", 33, -115), random.Random(1))
        assert got == b"+OK\r\n+OK\r\n+OK\r\n"
        # MONITOR sees the commands the fast path would have run
        mon = socket.create_connection(("127.0.0.1", s.port))
        mon.sendall(enc("AUTH", "pw") + enc("MONITOR"))
        wait_until(lambda: b"OK\r\n+OK" in mon.recv(1000), 5, message="monitor")
        assert exchange(sock, enc("SET", "fleet", "b", "POINT", 34, -115), random.Random(1)) == b"+OK\r\n"
        seen = b""
        while b'"b"' not in seen:
            seen += mon.recv(1000)
        assert b'"fleet"' in seen and b'"34"' in seen
        mon.close()
        # a channel on the key hears fast-path-shaped writes
        sub = socket.create_connection(("127.0.0.1", s.port))
        assert exchange(sock, enc("SETCHAN", "ch", "NEARBY", "fleet", "FENCE", "POINT", 33, -115, 100000),
                        random.Random(1)).startswith(b":")
        sub.sendall(enc("AUTH", "pw") + enc("SUBSCRIBE", "ch"))
        wait_until(lambda: b"subscribe" in sub.recv(1000), 5, message="subscribed")
        assert exchange(sock, enc("SET", "fleet", "c", "POINT", 33.001, -115), random.Random(1)) == b"+OK\r\n"
        events = b""
        while b'"id":"c"' not in events:
            events += sub.recv(10000)
        sub.close()
    finally:
        s.kill9()


def test_follower_copies_the_fast_leaders_aof(tmp_path):
    leader = start(tmp_path, "leader", True)
    try:
        sock = socket.create_connection(("127.0.0.1", leader.port))
        exchange(sock, enc("SET", "fleet", "seed", "POINT", 1, 1), random.Random(0))
        follower = start(tmp_path, "follower", True, ["--follow", f"127.0.0.1:{leader.port}"])
        try:
            wait_until(lambda: follower.stats().get("caught_up"), 15, message="caught up")
            fsock = socket.create_connection(("127.0.0.1", follower.port))
            assert exchange(fsock, enc("SET", "fleet", "x", "POINT", 1, 1), random.Random(0)).startswith(b"-")
            stream = b"".join(enc("SET", "fleet", f"v{i}", "POINT", 33 + i * 1e-4, -115) for i in range(3000))
            assert exchange(sock, stream, random.Random(3)) == b"+OK\r\n" * 3000
            wait_until(lambda: follower.stats()["aof_size"] == leader.stats()["aof_size"], 15, message="sync")
            assert follower.aof_path.read_bytes() == leader.aof_path.read_bytes()
            assert exchange(fsock, enc("GET", "fleet", "v2999", "POINT"), random.Random(0)) == \
                exchange(sock, enc("GET", "fleet", "v2999", "POINT"), random.Random(0))
        finally:
            follower.kill9()
    finally:
        leader.kill9()


def test_core_framing_decisions_in_process():
    """Where execute_batch stops: incomplete, non-canonical, over a limit, an unknown form."""
    from collections import defaultdict

    from geoserver.metrics import CoreCounts, _CommandStats
    from geoserver.store.collection import Collection

    cols = {"fleet": Collection()}
    run = fastpath._execute
    modes = fastpath.PING | fastpath.READ | fastpath.WRITE | fastpath.RECORD
    counts = CoreCounts(fastpath.NAMES)

    def go(data: bytes, max_args: int = 100, max_bulk: int = 1000, max_request: int = 10000,
           budget: int = 1 << 20):
        return run(bytearray(data), 0, cols, KINDS, modes, max_args, max_bulk, max_request, budget, None)

    sets = enc("SET", "fleet", "a", "POINT", 33, -115)
    batch = bytearray(sets + enc("PING") + enc("GET", "fleet", "a") + enc("PING"))
    end, replies, aof, last, done = run(batch, 0, cols, KINDS, modes, 100, 1000, 10000, 1 << 20, counts.buf)
    assert end == len(batch) and done == 4
    assert replies == b'+OK\r\n+PONG\r\n$40\r\n{"type":"Point","coordinates":[-115,33]}\r\n+PONG\r\n'
    assert aof == sets and fastpath.NAMES[last] == "ping"
    stats: defaultdict[str, _CommandStats] = defaultdict(_CommandStats)
    counts.fold_into(stats)
    assert {name: (s.ok, sum(s.buckets)) for name, s in stats.items()} == \
        {"set": (1, 1), "ping": (2, 2), "get": (1, 1)}
    assert all(s.total_ns > 0 for s in stats.values())
    counts.fold_into(stats)  # folded once: the core's counters start again from zero
    assert stats["ping"].ok == 2
    with pytest.raises(TypeError):
        run(bytearray(enc("PING")), 0, cols, KINDS, modes, 100, 1000, 10000, 1 << 20, bytearray(8))
    assert go(sets[:-1])[0] == 0  # incomplete
    assert go(sets + enc("PING")[:-3])[0] == len(sets)
    assert go(b"*3\r\n$3\r\nGET\r\n$05\r\nfleet\r\n$1\r\na\r\n")[0] == 0  # leading zero
    assert go(b"*01\r\n$4\r\nPING\r\n")[0] == 0
    assert go(b"PING\r\n")[0] == 0  # inline
    assert go(enc("GET", "fleet", "a"), max_args=2)[0] == 0
    assert go(enc("GET", "fleet", "a"), max_bulk=4)[0] == 0
    assert go(enc("GET", "fleet", "a"), max_request=20)[0] == 0
    assert go(enc("PING") * 10, budget=14)[0] == 14 * 2  # stops once the replies reach the budget
    assert go(enc("SET", "new", "a", "POINT", 1, 1))[0] == 0  # a new key: Python creates it
    assert go(enc("SET", "fleet", "a", "POINT", "1_0", 1))[0] == 0
    assert go(enc("GET", "fleet", "a", "BOUNDS"))[0] == 0
    # JSON output (a RESP connection after OUTPUT json): PING, SET, GET of a found point, DEL
    json_batch = bytearray(enc("PING", "x") + sets + enc("GET", "fleet", "a")
                           + enc("GET", "fleet", "a", "POINT") + enc("DEL", "fleet", "nope")
                           + enc("GET", "fleet", "nope"))
    end, replies, aof, last, done = run(json_batch, 0, cols, KINDS, modes | fastpath.JSON, 100, 1000, 10000,
                                        1 << 20, None)
    assert done == 5 and fastpath.NAMES[last] == "del" and aof == sets  # a GET miss is an error: Python's
    assert without_elapsed(replies) == (b'J{"ok":true,"ping":"pong"}\r\nJ{"ok":true}\r\n'
                                        b'J{"ok":true,"object":{"type":"Point","coordinates":[-115,33]}}\r\n'
                                        b'J{"ok":true,"point":{"lat":33,"lon":-115}}\r\nJ{"ok":true}\r\n')
    end, replies, *_ = run(bytearray(enc("SCAN", "fleet", "POINTS")), 0, cols, KINDS,
                           modes | fastpath.SEARCH | fastpath.JSON, 100, 1000, 10000, 1 << 20, None)
    assert without_elapsed(replies) == \
        b'J{"ok":true,"points":[{"id":"a","point":{"lat":33,"lon":-115}}],"count":1,"cursor":0}\r\n'
    cols["fleet"].set('q"uote', cols["fleet"].get("a").obj, None, None)  # escaped by orjson: Python's
    json_search = modes | fastpath.SEARCH | fastpath.JSON
    assert run(bytearray(enc("SCAN", "fleet", "IDS")), 0, cols, KINDS, json_search, 100, 1000, 10000, 1 << 20,
               None)[0] == 0
    cols["fleet"].delete('q"uote')
    only_ping = run(bytearray(sets + enc("PING")), 0, cols, KINDS, fastpath.PING, 100, 1000, 10000, 1000,
                    None)
    assert only_ping[0] == 0
    assert len(cols["fleet"]) == 1 and cols["fleet"].weight == 17


def test_elapsed_text_matches_python():
    """The `elapsed` of the core's JSON replies is formatted as output.py elapsed_text does."""
    from geoserver.protocol.output import elapsed_text

    rng = random.Random(3)
    values = [0, 1, 999, 1000, 1001, 1500, 999_999, 1_000_000, 999_999_999, 10**9, 12_345_678_901]
    values += [rng.randrange(10**k) for k in range(1, 13) for _ in range(2000)]
    for ns in values:
        assert fastpath._core.elapsed_text(ns).decode() == elapsed_text(ns), ns


def test_number_formats_match_python():
    """GET's two renderings of coordinates against Python's (orjson of num(), format_float)."""
    from geoserver.commands.replies import point_resp
    from geoserver.protocol.output import encode_resp
    from geoserver.store.collection import Collection
    from geoserver.store.geometry import make_point

    rng = random.Random(7)
    values = [rng.uniform(-90, 90) for _ in range(3000)] + [round(rng.uniform(-90, 90), k)
                                                            for k in range(8) for _ in range(50)]
    values += [0.0001, -0.0001, 0.00012345, 89.99999999999999, 1e-4 + 1e-19, 45.0, -0.5]
    col = Collection()
    cols = {"k": col}
    for i, v in enumerate(values):
        col.set(str(i), make_point(v, v * 2 if abs(v) <= 90 else 0), None, None)
    for i, v in enumerate(values):
        item = col.get(str(i))
        want = encode_resp(item.obj.json_text()) + encode_resp(point_resp(item.obj))
        data = bytearray(enc("GET", "k", i) + enc("GET", "k", i, "POINT"))
        end, got, *_ = fastpath._execute(data, 0, cols, KINDS, fastpath.READ, 10, 100, 1000, 1 << 20, None)
        if end == len(data):
            assert got == want, v
        else:  # stopped (|v| < 1e-4): what it did answer is right
            assert want.startswith(got), v


def test_replay_of_plain_sets_matches_the_python_loader(tmp_path):
    """aof/loader.py's fast replay (fastpath.replayer) against apply_record: runs of plain SETs
    and DELs mixed with other records, moves, a new key mid-run, a torn final record."""
    rng = random.Random(11)
    records = [enc("SET", "fleet", "seed", "POINT", 1, 1)]
    for i in range(5000):
        oid = f"v{rng.randrange(800)}"
        r = rng.random()
        if r < 0.8:
            lat, lon = repr(rng.uniform(-90, 90)), repr(rng.uniform(-180, 180))
            records.append(enc("set", "fleet", oid, "POINT", lat, lon))
        elif r < 0.85:  # fields: merged into an old point's, zero (deletes), a string
            pairs = [("FIELD", rng.choice("fgh"), rng.choice([i, 0, 1.5, "x"]))
                     for _ in range(rng.randrange(3))]
            records.append(enc("SET", "fleet", oid, "FIELD", "f", i, *chain(*pairs), "POINT", 1, 2))
        elif r < 0.87:  # FSET of a plain point, an item with fields, a miss, a string
            records.append(enc("FSET", "fleet", oid, "f", rng.choice([i, 0, 1.5, "x"]),
                               *rng.choice([[], ["g", 2], ["f", i]])))
        elif r < 0.9:  # a plain point, a miss, another kind, or a small key's last object
            records.append(enc(rng.choice(["DEL", "del"]), rng.choice(["fleet", "fleet", f"k{i % 7}"]), oid))
        elif r < 0.95:
            records.append(enc("SET", f"k{i % 7}", oid, "POINT", 3, 4))
        else:
            records.append(enc("SET", "fleet", oid, "STRING", "s"))
    data = b"".join(records) + enc("SET", "fleet", "torn", "POINT", 5, 5)[:-4]
    dumps = []
    for fast in (True, False):
        s = GeoServer(tmp_path / f"r{fast}", env={"GEOSERVER_FASTPATH": "1" if fast else "0"})
        s.dir.mkdir(parents=True)
        s.aof_path.write_bytes(data)
        s.start()
        try:
            keys = [b"fleet", *(b"k%d" % i for i in range(7))]
            reads = b"".join(enc("SCAN", k, "LIMIT", 10000, "WITHFIELDS", "OBJECTS") for k in keys)
            reads += b"".join(enc("STATS", k) for k in keys)
            dumps.append(exchange(socket.create_connection(("127.0.0.1", s.port)), reads, random.Random(0)))
            assert s.aof_path.read_bytes() == b"".join(records)  # the torn tail cut off
        finally:
            s.kill9()
    assert dumps[0] == dumps[1]


@pytest.mark.parametrize("seed", range(3))
def test_set_and_fset_with_fields_match_the_command_table_in_process(seed):
    """SET ... FIELD ... POINT and FSET in the core against commands/keys.py cmd_set and
    cmd_fset on a twin database: over nothing, plain points, items with fields (merged), with z,
    with an expiry (also expired and not yet swept), strings; every reply and AOF record the
    core gives, the stored items, the id order and the weight must be the command table's, and
    most must run in C++."""
    from geoserver.commands.base import Ctx
    from geoserver.commands.keys import cmd_fset, cmd_set
    from geoserver.config import ServerConfig
    from geoserver.errors import CommandError

    rng = random.Random(seed)
    server = SimpleNamespace(config=ServerConfig())  # what cmd_set reads of it: the GeoJSON limits
    twins, now = [], time.time()
    for _ in range(2):
        db = Database()
        db.get_or_create("k")
        twins.append((db, Ctx(server, object(), False, now, db)))  # type: ignore[arg-type]
    shapes = [[b"POINT", b"1", b"2"], [b"POINT", b"1", b"2", b"3"], [b"STRING", b"s"],
              [b"EX", b"1000", b"FIELD", b"f", b"1", b"POINT", b"1", b"2"],
              [b"BOUNDS", b"1", b"1", b"2", b"2"], [b"FIELD", b"f", b"0", b"POINT", b"1", b"2"],
              [b"EX", b"5", b"FIELD", b"g", b"2", b"POINT", b"1", b"2"]]  # expired, not swept, 5 steps on
    ran = {b"SET": 0, b"FSET": 0}
    for step in range(4000):
        for _db, ctx in twins:  # the clock moves a second a step: EX 5 objects expire, unswept
            ctx.now = now + step
        oid = b"id%d" % rng.randrange(300)
        r = rng.random()
        if r < 0.5:
            fields = field_options(rng, clean=rng.random() < 0.7)
            argv = [b"SET", b"k", oid, *(w.encode() for w in fields), b"POINT",
                    repr(rng.uniform(-90, 90)).encode(), repr(rng.uniform(-180, 180)).encode()]
        elif r < 0.75:
            argv = [b"FSET", b"k", oid, *(w.encode() for w in fset_options(rng, clean=rng.random() < 0.7))]
        else:  # what the fast SET and FSET meet: plain points, z, an expiry, a string, a shape
            argv = [b"SET", b"k", oid, *rng.choice(shapes)]
        mode = fastpath.WRITE | fastpath.RECORD
        end, got, aof, *_ = fastpath._execute(bytearray(enc(*argv)), 0, twins[0][0].collections, KINDS,
                                              mode, 40, 1000, 10000, 1 << 30, None)
        replies = []
        for _db, ctx in twins[bool(end):]:
            ctx.dirty, ctx.record = False, None  # per command, as dispatch makes a Ctx per request
            try:
                replies.append((cmd_set if argv[0] == b"SET" else cmd_fset)(ctx, argv))
            except CommandError:  # Python's to answer (the core stopped): both twins skip it
                assert not end, argv
                continue
            if end:  # the core's reply and AOF record are the command table's
                assert got == (b"+OK\r\n" if argv[0] == b"SET" else b":%d\r\n" % replies[0]), argv
                assert aof == (enc(*(ctx.record or argv)) if ctx.dirty else b""), argv
        ran[argv[0]] += bool(end)
    assert ran[b"SET"] > 500 and ran[b"FSET"] > 250, ran  # the numeric forms ran in the core
    fast, slow = (db.collections["k"] for db, _ in twins)
    assert list(fast.items) == list(slow.items) and fast.weight == slow.weight
    for oid in slow.items:
        a, b = fast.items.raw(oid), slow.items.raw(oid)
        if b is PLAIN or a is PLAIN:
            assert a is b, oid
            continue
        # an FSET of a plain point stores Python's PointItem (an Item that stored itself), the
        # core's an Item: the same value
        assert isinstance(a, Item) and isinstance(b, Item), oid
        assert (a.fields, list(a.fields or ()), a.expires_at) == \
            (b.fields, list(b.fields or ()), b.expires_at), oid
        assert (a.obj.kind, a.obj.lat, a.obj.lon, a.obj.z, a.obj.bbox, a.obj.text) == \
            (b.obj.kind, b.obj.lat, b.obj.lon, b.obj.z, b.obj.bbox, b.obj.text), oid
        assert fast.points.point(oid) == slow.points.point(oid)


@pytest.mark.parametrize("seed", range(3))
def test_nearby_matches_cmd_nearby_in_process(seed):
    """NEARBY and SCAN ... [IDS|COUNT|OBJECTS|POINTS] in the core against commands/search.py
    cmd_nearby and cmd_scan on the same collection, in RESP and in JSON output: dense cells,
    exact duplicates (ties), a sparse spread, the knn rings' radii, LIMIT above and below the
    collection's size."""
    from geoserver.commands.base import Ctx
    from geoserver.commands.search import cmd_nearby, cmd_scan
    from geoserver.protocol.output import render
    from geoserver.store.database import Database
    from geoserver.store.geometry import make_point

    rng = random.Random(seed)
    db = Database()
    col = db.get_or_create("k")
    for i in range(rng.choice([0, 1, 50, 3000])):
        r = rng.random()
        lat, lon = ((33.005, -115.005) if r < 0.2 else
                    (rng.uniform(33, 33.03), rng.uniform(-115.03, -115)) if r < 0.8 else
                    (rng.uniform(-89.9, 89.9), rng.uniform(-180, 180)))
        col.set(f"id{i}", make_point(lat, lon), None, None)
    ctxs = [Ctx(None, object(), json, time.time(), db) for json in (False, True)]  # type: ignore[arg-type]
    for _ in range(300):
        json = rng.random() < 0.4
        ctx, mode = ctxs[json], fastpath.SEARCH | (fastpath.JSON if json else 0)
        lat = rng.choice([33.005, 33.0, rng.uniform(32.99, 33.04), rng.uniform(-90, 90), 90.0, -90.0])
        lon = rng.choice([-115.005, rng.uniform(-115.04, -114.99), rng.uniform(-180, 180), 180.0])
        meters = rng.choice([0, 1, 50, 300, 1000, 3000, 20000, 2e6, 3e7])
        limit = rng.choice([None, 1, 2, 5, 100, 1000])
        out = rng.choice([[b"IDS"], [b"COUNT"], [b"OBJECTS"], [b"POINTS"], []])
        argv = [b"NEARBY", b"k", *([b"LIMIT", b"%d" % limit] if limit else []), *out, b"POINT",
                repr(lat).encode(), repr(lon).encode(), repr(float(meters)).encode()]
        want = render(cmd_nearby(ctx, argv), json, 0, True)
        end, got, *_ = fastpath._execute(bytearray(enc(*argv)), 0, db.collections, KINDS,
                                         mode, 10, 1000, 10000, 1 << 30, None)
        assert end, argv
        assert without_elapsed(got) == without_elapsed(want), argv
        scan = [b"SCAN", rng.choice([b"k", b"none"]), *([b"LIMIT", b"%d" % limit] if limit else []), *out]
        want = render(cmd_scan(ctx, scan), json, 0, True)
        end, got, *_ = fastpath._execute(bytearray(enc(*scan)), 0, db.collections, KINDS,
                                         mode, 10, 1000, 10000, 1 << 30, None)
        assert end and without_elapsed(got) == without_elapsed(want), scan
    empty = fastpath._execute(bytearray(enc("NEARBY", "none", "IDS", "POINT", 1, 1, 1)), 0, db.collections,
                              KINDS, fastpath.SEARCH, 10, 1000, 10000, 1 << 30, None)
    assert empty[1] == b"*2\r\n:0\r\n*0\r\n"
