"""Tile38's tests/aof_test.go `AOF`, `AOFMD5`, `AOFSHRINK` and `READONLY` subtests as black-box
tables against a real geoserver process (`loading` and `migrate` are in test_dropin_aof.py).

Tile38 fills `fleet` with 10000 random points through redigo; here a redis-py pipeline does, and
the follower side of `AOF pos` is a raw socket read with hiredis, as Tile38's follower reads it.
Tile38's AOFSHRINK subtest uses MASSINSERT, a `--dev` command geoserver does not build: the same
10000 points per key go in through a pipeline of SETs (docs/migration.md).
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis
from geoserver.protocol.resp import encode_command
from helpers import GeoServer, wait_until


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GeoServer, list[str]]]:
    """One server with Tile38's 10000 random `SET fleet <id> POINT lat lon` (AOF and AOFMD5 read
    it, neither writes)."""
    server = GeoServer(tmp_path_factory.mktemp("aofcmds") / "data").start()
    rng = random.Random(38)
    ids = [str(rng.getrandbits(62)) for _ in range(10000)]
    pipe = server.client().pipeline(transaction=False)
    for oid in ids:
        pipe.execute_command("SET", "fleet", oid, "POINT", rng.uniform(-90, 90), rng.uniform(-180, 180))
    assert all(r is True for r in pipe.execute())
    yield server, ids
    server.kill9()


def do(server: GeoServer, *args: Any) -> Any:
    """One command on a fresh RESP connection: the reply, or the error text."""
    try:
        return server.client().execute_command(*args)
    except redis.ResponseError as exc:
        return f"ERR {exc}"


class Follower:
    """The leader side of `AOF pos` seen as Tile38's follower sees it: +OK, then RESP commands."""

    def __init__(self, server: GeoServer, pos: int = 0) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.reader = hiredis.Reader()
        self.send("AOF", pos)
        assert self.receive() == b"OK"

    def send(self, *args: Any) -> None:
        self.sock.sendall(encode_command([str(a).encode() for a in args]))

    def receive(self) -> Any:
        while (item := self.reader.gets()) is False:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("EOF")
            self.reader.feed(data)
        return item

    def read_until_closed(self) -> str:
        """Tile38: any command a follower sends on the stream ends it (redigo reads `EOF`)."""
        try:
            while True:
                self.receive()
        except EOFError as exc:
            return str(exc)
        finally:
            self.sock.close()


def read_fleet(follower: Follower, ids: list[str]) -> None:
    """Tile38's readAll: skip what precedes the first SET of `fleet`, then every id in order."""
    first = ids[0].encode()
    got: list[bytes] = []
    while len(got) < len(ids):
        args = follower.receive()
        if got or (len(args) == 6 and args[2] == first):
            got.append(args[2])
    assert got == [oid.encode() for oid in ids]


# --- AOF ------------------------------------------------------------------------------------

@pytest.mark.parametrize("then", ["fancy", "quit"])
def test_aof_streams_every_set_then_a_command_ends_it(filled, then: str) -> None:
    server, ids = filled
    follower = Follower(server)
    read_fleet(follower, ids)
    follower.send(then)
    assert follower.read_until_closed() == "EOF"
    assert server.json("PING")["ok"]  # the leader keeps serving


@pytest.mark.parametrize(("args", "error"), [
    (("AOF",), "wrong number of arguments for 'aof' command"),
    (("AOF", 0, 0), "wrong number of arguments for 'aof' command"),
    (("AOF", -1), "invalid argument '-1'"),
    (("AOF", 1000000000000), "pos is too big, must be less that the aof_size of leader"),
])
def test_aof_errors(filled, args: tuple[Any, ...], error: str) -> None:
    assert do(filled[0], *args) == f"ERR {error}"


# --- AOFMD5 ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("args", "error"), [
    (("AOFMD5",), "wrong number of arguments for 'aofmd5' command"),
    (("AOFMD5", 0), "wrong number of arguments for 'aofmd5' command"),
    (("AOFMD5", 0, 0, 1), "wrong number of arguments for 'aofmd5' command"),
    (("AOFMD5", -1, 0), "invalid argument '-1'"),
    (("AOFMD5", 1, -1), "invalid argument '-1'"),
    (("AOFMD5", 0, 100000000000), "EOF"),
])
def test_aofmd5_errors(filled, args: tuple[Any, ...], error: str) -> None:
    assert do(filled[0], *args) == f"ERR {error}"


@pytest.mark.parametrize(("start", "size"), [(0, 0), (0, 1), (0, 100), (1002, 4321)])
def test_aofmd5_is_the_md5_of_that_range(filled, start: int, size: int) -> None:
    server, _ = filled
    data = server.aof_path.read_bytes()
    assert do(server, "AOFMD5", start, size) == hashlib.md5(data[start:start + size]).hexdigest().encode()


def test_aofmd5_json(filled) -> None:
    reply = filled[0].json("AOFMD5", 0, 0)
    reply.pop("elapsed")  # Tile38's test harness drops it too
    assert reply == {"ok": True, "md5": "d41d8cd98f00b204e9800998ecf8427e"}


# --- AOFSHRINK ------------------------------------------------------------------------------

class _Count(BaseHTTPRequestHandler):
    hits = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).hits += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def mass_insert(server: GeoServer, keys: int, objects: int, seed: int) -> None:
    """Tile38's MASSINSERT keys objects: `mi:<k>` gets `objects` random world points."""
    rng = random.Random(seed)
    pipe = server.client().pipeline(transaction=False)
    for k in range(keys):
        for i in range(objects):
            pipe.execute_command("SET", f"mi:{k}", i, "POINT", rng.uniform(-90, 90), rng.uniform(-180, 180))
    assert all(r is True for r in pipe.execute())


def test_aofshrink_keeps_hooks_channels_and_data(make_server) -> None:
    handler = type("Count", (_Count,), {"hits": 0})
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        server = make_server("shrink")
        url = f"http://127.0.0.1:{http.server_address[1]}/"
        # Tile38 implies FENCE in SETHOOK/SETCHAN; geoserver wants it (docs/migration.md)
        fence = ("INTERSECTS", "mi:0", "FENCE", "BOUNDS", -10, -10, 10, 10)
        assert do(server, "SETCHAN", "mychan", *fence) == 1
        assert do(server, "SETHOOK", "myhook", url, *fence) == 1
        mass_insert(server, 5, 10000, seed=1)
        assert do(server, "AOFSHRINK") == b"OK"
        mass_insert(server, 5, 10000, seed=2)
        wait_until(lambda: handler.hits > 0, 30, message="hook posts")
        wait_until(lambda: server.stats()["last_shrink_result"], 30, message="shrink done")
        assert server.stats()["last_shrink_result"] == "ok"
        # Beyond Tile38's subtest: the shrunk file alone gives back hooks, channels and points.
        server.kill9()
        server.start()
        wait_until(lambda: server.json("HEALTHZ")["ok"], message="AOF loaded")
        assert [h["name"] for h in server.json("HOOKS", "*")["hooks"]] == ["myhook"]
        assert [c["name"] for c in server.json("CHANS", "*")["chans"]] == ["mychan"]
        assert [server.json("STATS", f"mi:{k}")["stats"][0]["num_objects"] for k in range(5)] == [10000] * 5
    finally:
        http.shutdown()
        http.server_close()


# --- READONLY -------------------------------------------------------------------------------

READONLY_TABLE = [
    (("SET", "mykey", "myid", "POINT", "10", "10"), True),
    (("READONLY", "yes"), True),
    (("SET", "mykey", "myid", "POINT", "10", "10"), "ERR read only"),
    (("READONLY", "no"), True),
    (("SET", "mykey", "myid", "POINT", "10", "10"), True),
    (("READONLY",), "ERR wrong number of arguments for 'readonly' command"),
    (("READONLY", "maybe"), "ERR invalid argument 'maybe'"),
]


def test_readonly_table(server: GeoServer) -> None:
    assert [do(server, *args) for args, _ in READONLY_TABLE] == [want for _, want in READONLY_TABLE]


def test_readonly_survives_restart(make_server, tmp_path: Path) -> None:
    """Beyond Tile38's subtest: READONLY is written to the config file, as Tile38 does."""
    server = make_server("ro")
    assert do(server, "READONLY", "yes") is True
    server.stop()
    server.start()
    assert do(server, "SET", "k", "i", "POINT", 1, 1) == "ERR read only"
    assert do(server, "GET", "k", "i") is None
