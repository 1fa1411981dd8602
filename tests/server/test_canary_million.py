"""Long commands at 1M objects (issue 9) against a concurrent canary: a real geoserver loads an
AOF of 1,000,000 points (key `big` 400k, `big2` 100k, 100,000 small keys), and each long command
runs on its own connection while a canary connection PINGs every 5 ms. Each reply is checked
(counts, not just "some bytes"), and the canary got every reply, none after a stall.

The bound (STALL, as in test_hardening.py) is a stall detector, not a latency target: before
the slicing, one such command held every client for up to 2-3 s (docs/benchmarks.md, "Long
commands"); bench/long_commands.py measures the real round trips.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import hiredis
import pytest
from canary import Canary
from geoserver.protocol.resp import encode_command
from helpers import GeoServer, wait_until
from wire import encode

STALL = 3.0  # seconds; see the module docstring
BIG, BIG2, KEYS, PER_KEY = 400_000, 100_000, 100_000, 5
WORLD = ["BOUNDS", "-90", "-180", "90", "180"]

pytestmark = pytest.mark.timeout(900)


def write_aof(path: Path) -> None:
    with open(path, "wb") as out:
        def put(key: bytes, oid: bytes, i: int) -> bytes:
            lat = -60 + (i * 7919 % 120_000) / 1000.0
            lon = -170 + (i * 104_729 % 340_000) / 1000.0
            return encode_command([b"SET", key, oid, b"POINT", b"%.5f" % lat, b"%.5f" % lon])

        out.write(b"".join(put(b"big", b"id%d" % i, i) for i in range(BIG)))
        out.write(b"".join(put(b"big2", b"id%d" % i, BIG + i) for i in range(BIG2)))
        out.write(b"".join(put(b"k%06d" % k, b"o%d" % j, k * PER_KEY + j)
                           for k in range(KEYS) for j in range(PER_KEY)))


@pytest.fixture(scope="module")
def million(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    data = tmp_path_factory.mktemp("million") / "data"
    data.mkdir()
    write_aof(data / "appendonly.aof")
    server = GeoServer(data).start(wait=False)
    server.wait_ready(timeout=600)
    wait_until(lambda: server.json("SERVER")["stats"]["num_objects"] == BIG + BIG2 + KEYS * PER_KEY,
               600, interval=0.5, message="1M objects loaded")
    yield server
    server.kill9()


def call(server: GeoServer, *args: str) -> object:
    """One command on its own connection, the whole reply read and parsed."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(encode(*args))
        reader = hiredis.Reader()
        while (reply := reader.gets()) is False:
            data = sock.recv(1 << 20)
            assert data, "closed"
            reader.feed(data)
        return reply


def http(server: GeoServer, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=120) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
        return data


def canary_served(canary: Canary) -> None:
    assert not canary.errors, canary.errors
    assert len(canary.rtts) >= 5, len(canary.rtts)
    assert canary.worst < STALL, canary.worst


def settle(canary: Canary) -> None:
    seen = len(canary.rtts)
    wait_until(lambda: len(canary.rtts) >= seen + 5 or canary.errors, 30, message="canary pings")


def test_long_reads_at_a_million_objects_leave_the_canary_served(million: GeoServer) -> None:
    small = [f"k{k:06d}" for k in range(KEYS)]
    with Canary(million.port) as canary:
        keys = call(million, "KEYS", "*")
        assert len(keys) == KEYS + 2
        stats = call(million, "STATS", "big", "big2", *small)
        assert len(stats) == KEYS + 2
        scan = call(million, "SCAN", "big", "LIMIT", "1000000", "IDS")
        assert scan[0] == 0 and len(scan[1]) == BIG
        assert call(million, "SCAN", "big", "LIMIT", "1000000", "COUNT") == BIG
        within = call(million, "WITHIN", "big", "LIMIT", "1000000", "IDS", *WORLD)
        assert len(within[1]) == BIG
        nearby = call(million, "NEARBY", "big", "LIMIT", "1000000", "IDS", "POINT", "0", "0")
        assert len(nearby[1]) == BIG
        metrics = http(million, "/metrics")
        assert metrics.startswith(b"HTTP/1.1 200") and b"tile38_aof_size" in metrics
        settle(canary)
    canary_served(canary)


def test_long_writes_at_a_million_objects_leave_the_canary_served(million: GeoServer) -> None:
    with Canary(million.port) as canary:
        assert call(million, "PDEL", "big2", "*") == BIG2
        assert call(million, "DROP", "big") == 1
        settle(canary)
        assert call(million, "FLUSHDB") == b"OK"
        settle(canary)
    canary_served(canary)
    assert million.json("SERVER")["stats"]["num_objects"] == 0
