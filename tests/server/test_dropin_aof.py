"""Tile38's tests/aof_test.go `loading` and `migrate` cases as black-box tables against real
geoserver processes, and the record types Tile38 1.30-1.37 writes (RESP and inline lines mixed)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from geoserver.protocol.resp import encode_command
from helpers import GeoServer, wait_until


def rec(*args: object) -> bytes:
    return encode_command([a if isinstance(a, bytes) else str(a).encode() for a in args])


def legacy(line: str) -> bytes:
    data = line.encode()
    return struct.pack("<I", len(data)) + data + struct.pack("<I", len(data)) + b"\0"


# Tile38 tests/aof_legacy, byte for byte: two `set` records in the pre-RESP format.
AOF_LEGACY = legacy("set 1 2 point 10 20") + legacy("set 2 3 point 10 20")


def start_with(make_server, aof: bytes, name: str = "aof", filename: str = "appendonly.aof") -> GeoServer:
    server = make_server(name, start=False)
    server.dir.mkdir(parents=True)
    (server.dir / filename).write_bytes(aof)
    server.start(wait=False)
    return server


def loaded(server: GeoServer) -> None:
    """Ready and done loading (PING answers while the AOF loads; HEALTHZ only after)."""
    server.wait_ready()
    wait_until(lambda: server.json("HEALTHZ")["ok"], message="AOF loaded")


def failed_start(server: GeoServer) -> str:
    assert server.proc is not None
    assert server.proc.wait(30) == 1
    log = server.log()
    assert "Traceback" not in log
    return log


# aof_loading_test: (AOF bytes, the error Tile38 stops with, or None when it loads)
LOADING = [
    pytest.param(b"asdfasdf\r\n", "unknown command 'asdfasdf'", id="invalid command"),
    pytest.param(b"set fleet truck point 10 10\r\nasdfasdf", None, id="incomplete command"),
    pytest.param(b"".join(b"SET fleet truck%d POINT 10 10\r\n" % i for i in range(10000)), None,
                 id="big aof file"),
    pytest.param(b"".join((b"\0" * 100 if i % 10 == 0 else b"") + b"SET fleet truck%d POINT 10 10\r\n" % i
                          for i in range(1000)) + b"\0" * 5000, None, id="extra zeros"),
    pytest.param(b"*2\r\n$1\r\nh\r\n+OK\r\n", "Protocol error: expected '$', got '+'", id="bad protocol"),
]


@pytest.mark.parametrize(("aof", "error"), LOADING)
def test_tile38_aof_loading(make_server, aof: bytes, error: str | None) -> None:
    server = start_with(make_server, aof)
    if error is not None:
        log = failed_start(server)
        assert f"byte offset 0: {error}" in log
        return
    loaded(server)
    assert server.json("SCAN", "fleet", "LIMIT", 1)["objects"][0]["object"] == {
        "type": "Point", "coordinates": [10, 10]}


def test_unknown_command_names_its_offset(make_server) -> None:
    first = b"SET fleet a POINT 1 2\r\n" + rec("SET", "fleet", "b", "POINT", 3, 4)
    log = failed_start(start_with(make_server, first + b"FANCY fleet\r\n" + rec("DEL", "fleet", "a")))
    assert f"byte offset {len(first)}: unknown command 'FANCY'" in log


def test_tile38_aof_migrate(make_server) -> None:
    """aof_migrate_test: 10000 copies of the legacy records load; the file becomes RESP."""
    server = start_with(make_server, AOF_LEGACY * 10000, filename="aof")
    loaded(server)
    assert server.json("GET", "1", "2")["object"] == {"type": "Point", "coordinates": [20, 10]}
    assert server.aof_path.read_bytes().startswith(rec("set", 1, 2, "point", 10, 20))
    assert server.json("SERVER")["stats"]["num_objects"] == 2


@pytest.mark.parametrize("aof", [AOF_LEGACY[:-1], AOF_LEGACY[1:]], ids=["last byte cut", "first byte cut"])
def test_tile38_aof_migrate_truncated(make_server, aof: bytes) -> None:
    log = failed_start(start_with(make_server, aof, filename="aof"))
    assert "unexpected EOF" in log


def test_every_record_tile38_writes(make_server, tmp_path: Path) -> None:
    """The write records of Tile38 1.30-1.37 (client args verbatim, AOFSHRINK's lower-case
    rewrites, expiry's `del`), RESP and inline lines mixed in one file."""
    aof = b"".join([
        rec("SET", "fleet", "truck1", "FIELD", "speed", 90, "POINT", 33, -115),
        b"SET fleet truck2 POINT 33.5 -115.5\r\n",
        rec("set", "fleet", "truck3", "field", "speed", "10", "object",
            '{"type":"Point","coordinates":[-112,33]}'),
        b'set fleet truck4 ex 1000 object {"type":"Point","coordinates":[-111,34]}\r\n',
        rec("SET", "fleet", "truck5", "NX", "POINT", 1, 1),
        rec("SET", "fleet", "truck5", "XX", "POINT", 2, 2),
        rec("FSET", "fleet", "truck2", "speed", 55),
        rec("EXPIRE", "fleet", "truck2", 1000),
        rec("PERSIST", "fleet", "truck2"),
        rec("SET", "props", "house", "STRING", "white"),
        rec("JSET", "user", "901", "name", "Tom"),
        rec("SET", "gone", "x", "POINT", 1, 1),
        rec("DROP", "gone"),
        rec("SET", "tmp", "a", "POINT", 1, 1),
        rec("SET", "tmp", "b", "POINT", 1, 1),
        rec("PDEL", "tmp", "a*"),
        rec("del", "tmp", "b"),
        rec("SET", "old", "o", "POINT", 5, 5),
        rec("RENAME", "old", "new"),
        rec("SET", "a1", "o", "POINT", 5, 5),
        rec("RENAMENX", "a1", "a2"),
        rec("DEL", "fleet", "missing"),  # Tile38 ignores `id not found` while loading
    ])
    server = start_with(make_server, aof)
    loaded(server)
    assert server.json("GET", "fleet", "truck1", "WITHFIELDS")["fields"] == {"speed": 90}
    assert server.json("GET", "fleet", "truck2", "POINT")["point"] == {"lat": 33.5, "lon": -115.5}
    assert server.json("FGET", "fleet", "truck2", "speed")["value"] == 55
    assert server.json("TTL", "fleet", "truck2")["ttl"] == -1
    assert 0 < server.json("TTL", "fleet", "truck4")["ttl"] <= 1000
    assert server.json("GET", "fleet", "truck5", "POINT")["point"] == {"lat": 2, "lon": 2}
    assert server.json("GET", "props", "house")["object"] == "white"
    assert server.json("JGET", "user", "901", "name")["value"] == "Tom"
    assert server.json("KEYS", "*")["keys"] == ["a2", "fleet", "new", "props", "user"]
    assert server.json("SCAN", "tmp", "COUNT")["count"] == 0  # PDEL and del emptied it
    assert server.json("SERVER")["stats"]["aof_size"] == len(aof)
