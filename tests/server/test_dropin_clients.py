"""Tile38's tests/client_test.go, timeout_test.go (no-script cases), monitor_test.go and the
CONFIG keys of internal/server/config.go, as black-box tables against a real geoserver, with
redis-py, raw sockets and pyle38."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from helpers import GeoServer
from pyle38 import Tile38


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(tmp_path_factory.mktemp("clients") / "s").start()
    yield server
    server.kill9()


class Conn:
    """One connection speaking RESP; `json()` sends with OUTPUT json around the command."""

    def __init__(self, port: int) -> None:
        self.r = redis.Redis(port=port, protocol=2, socket_timeout=10, single_connection_client=True)
        self.r.response_callbacks.clear()  # replies as the server sends them (no SCAN parsing)

    def do(self, *args: object) -> object:
        try:
            reply = self.r.execute_command(*args)
        except redis.RedisError as exc:
            return f"ERR {exc}"
        return "OK" if reply is True or reply == b"OK" else reply  # redis-py maps some OKs

    def json(self, *args: object) -> dict:
        self.r.execute_command("OUTPUT", "json")
        try:
            doc = orjson.loads(self.r.execute_command(*args))
        finally:
            self.r.execute_command("OUTPUT", "resp")
        doc.pop("elapsed", None)  # as Tile38's harness does
        return doc


def raw_exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send bytes, read until the server closes (or 3 s); returns (reply, closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except TimeoutError:
            return out, False
        return out, True


def test_client_output(shared: GeoServer) -> None:
    """client_OUTPUT_test, case by case."""
    c = Conn(shared.port)
    assert c.do("OUTPUT", "json", "yaml") == "ERR wrong number of arguments for 'output' command"
    json_ok = c.do("OUTPUT", "json")
    assert orjson.loads(json_ok)["ok"] is True and set(orjson.loads(json_ok)) == {"ok", "elapsed"}
    assert {k: v for k, v in orjson.loads(c.do("OUTPUT")).items() if k != "elapsed"} == {
        "ok": True, "output": "json"}
    assert c.do("OUTPUT", "resp") == "OK"
    assert c.do("OUTPUT") == b"resp"
    assert c.do("OUTPUT", "yaml") == "ERR invalid argument 'yaml'"
    assert c.do("OUTPUT") == b"resp"
    assert c.json("OUTPUT") == {"ok": True, "output": "json"}
    listed = c.json("CLIENT", "list")
    assert listed["ok"] and isinstance(listed["list"], list)


def test_client_client(shared: GeoServer) -> None:
    """client_CLIENT_test: 21 connections, names, list in both outputs, every KILL form."""
    conns = [Conn(shared.port) for _ in range(21)]
    for conn in conns:
        conn.do("PING")
    conns[1].do("CLIENT", "setname", "cl1")
    conns[2].do("CLIENT", "setname", "cl2")
    mc = Conn(shared.port)
    listed = mc.json("CLIENT", "list")["list"]
    assert len(listed) >= 20
    assert {"cl1", "cl2"} <= {c["name"] for c in listed}
    assert all(set(c) >= {"id", "addr", "name", "age", "idle"} for c in listed)
    c13, c14, c15 = listed[13], listed[14], listed[15]
    assert len(mc.do("CLIENT", "list").decode().strip().split("\n")) >= 20
    table = [
        (("CLIENT",), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "hello"), "ERR Syntax error, try CLIENT (LIST | KILL | GETNAME | SETNAME)"),
        (("CLIENT", "list", "arg3"), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "getname", "arg3"), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "getname"), b""),
        (("CLIENT", "setname", "abc"), "OK"),
        (("CLIENT", "getname"), b"abc"),
        (("CLIENT", "setname", "abc", "efg"), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "setname", " abc "),
         "ERR Client names cannot contain spaces, newlines or special characters."),
        (("CLIENT", "setname", "abcd"), "OK"),
        (("CLIENT", "kill", "name", "abcd"), "ERR No such client"),
        (("CLIENT", "getname"), b"abcd"),
        (("CLIENT", "kill"), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "kill", ""), "ERR No such client"),
        (("CLIENT", "kill", "abcd"), "ERR No such client"),
        (("CLIENT", "kill", "id", c13["id"]), "OK"),
        (("CLIENT", "kill", "id"), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "kill", c14["addr"]), "OK"),
        (("CLIENT", "kill", c14["addr"], "yikes"), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "kill", "addr"), "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "kill", "addr", c15["addr"]), "OK"),
        (("CLIENT", "kill", "addr", c14["addr"], "yikes"),
         "ERR wrong number of arguments for 'client' command"),
        (("CLIENT", "kill", "id", "1000"), "ERR No such client"),
    ]
    got = [(args, mc.do(*args)) for args, _ in table]
    assert got == [(args, want) for args, want in table]
    assert mc.json("CLIENT", "getname") == {"ok": True, "name": "abcd"}
    assert mc.json("CLIENT", "setname", "x") == {"ok": True}
    assert isinstance(mc.do("CLIENT", "ID"), int)


def test_quit_closes_without_a_reply_in_json(shared: GeoServer) -> None:
    """tile38-ts's close test: in JSON output QUIT gets no reply, only the close; in RESP
    output `+OK` (Tile38); commands pipelined after QUIT are not run."""
    reply, closed = raw_exchange(shared.port, b"OUTPUT json\r\nQUIT\r\nPING\r\n")
    assert closed and reply.startswith(b"$") and reply.count(b"\r\n") == 2  # OUTPUT's reply only
    assert orjson.loads(reply.split(b"\r\n")[1])["ok"] is True
    assert raw_exchange(shared.port, b"QUIT\r\nPING\r\n") == (b"+OK\r\n", True)
    assert raw_exchange(shared.port, b"*1\r\n$4\r\nquit\r\n") == (b"+OK\r\n", True)


def test_hello_stays_and_setname(shared: GeoServer) -> None:
    c = Conn(shared.port)
    reply = c.do("HELLO", "2", "SETNAME", "via-hello")
    assert b"tile38" in reply
    assert c.do("CLIENT", "GETNAME") == b"via-hello"


def test_timeout_no_writes(shared: GeoServer) -> None:
    """timeout_no_writes_test, and Tile38's argument errors."""
    c = Conn(shared.port)
    assert c.do("SET", "mykey", "myid", "STRING", "foo") == "OK"
    assert c.do("TIMEOUT", 1, "SET", "mykey", "myid", "STRING", "foo") == \
        "ERR timeout not supported for 'set'"
    assert c.do("TIMEOUT", 1) == "ERR wrong number of arguments for 'timeout' command"
    assert c.do("TIMEOUT", "x", "GET", "mykey", "myid") == "ERR invalid argument 'x'"
    assert c.do("TIMEOUT", "-1", "GET", "mykey", "myid") == "ERR invalid argument '-1'"
    assert c.do("TIMEOUT", 5, "GET", "mykey", "myid") == b"foo"


def test_timeout_spatial_and_search(make_server) -> None:
    """timeout_spatial_test / timeout_search_test (1000 objects: the deadline is 1 µs)."""
    s = make_server("to")
    c = Conn(s.port)
    pipe = c.r.pipeline(transaction=False)
    for i in range(1000):
        pipe.execute_command("SET", "mykey", f"val:{i}", "FIELD", "foo", i / 1000, "POINT",
                             (i % 180) - 89.5, (i % 360) - 179.5)
    pipe.execute()
    assert c.do("SCAN", "mykey", "WHERE", "foo", -1, 2, "COUNT") == 1000
    for cmd in (("SCAN", "mykey", "WHERE", "foo", -1, 2, "COUNT"),
                ("INTERSECTS", "mykey", "WHERE", "foo", -1, 2, "COUNT", "BOUNDS", -90, -180, 90, 180),
                ("WITHIN", "mykey", "WHERE", "foo", -1, 2, "COUNT", "BOUNDS", -90, -180, 90, 180)):
        assert c.do(*cmd) == 1000
        assert c.do("TIMEOUT", "0.000001", *cmd) == "ERR timeout"
    assert c.do("TIMEOUT", "10", "SCAN", "mykey", "COUNT") == 1000
    pipe = c.r.pipeline(transaction=False)
    for i in range(1000):
        pipe.execute_command("SET", "strkey", f"val:{i}", "FIELD", "foo", i / 1000, "STRING", f"val:{i}")
    pipe.execute()
    assert c.do("SEARCH", "strkey", "MATCH", "val:*", "COUNT") == 1000
    assert c.do("TIMEOUT", "0.000001", "SEARCH", "strkey", "MATCH", "val:*", "COUNT") == "ERR timeout"


def test_monitor(shared: GeoServer) -> None:
    """follower_monitor_test: every command reaches MONITOR, in order, quoted as Go does."""
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as mon:
        mon.sendall(b"MONITOR\r\n")
        assert mon.recv(5) == b"+OK\r\n"
        c = Conn(shared.port)
        for i in range(1000):
            assert c.do("SET", "mykey", i, "POINT", 10, 10) == "OK"
        c.do("AUTH", "secret")  # never shown
        c.do("SET", "q", 'a"b', "STRING", "x\ny")
        want = [f'"mykey" "{i}"' for i in range(1000)] + ['"q" "a\\"b" "STRING" "x\\ny"']
        buf = b""
        while buf.count(b"\r\n") < len(want):
            buf += mon.recv(65536)
        lines = buf.decode().split("\r\n")[: len(want)]
        assert all(line.startswith("+") and " [0 127.0.0.1:" in line for line in lines)
        assert [w in line for w, line in zip(want, lines, strict=True)] == [True] * len(want)
        mon.sendall(b"QUIT\r\n")
        assert mon.recv(100).endswith(b"+OK\r\n")


CONFIG = [
    ("maxmemory", "434MB", "455081984"),
    ("maxmemory", "1gb", "1073741824"),
    ("protected-mode", "no", "no"),
    ("autogc", "60", "60"),
    ("keepalive", "30", "30"),
    ("logconfig", '{"encoding":"json"}', '{"encoding":"json"}'),
    ("replica-priority", "10", "10"),
    ("replica_announce_ip", "10.0.0.1", "10.0.0.1"),
    ("replica_announce_port", "9852", "9852"),
]


def test_config_tile38_keys(make_server) -> None:
    s = make_server("cfg")
    c = Conn(s.port)
    assert c.do("CONFIG", "GET", "replica-priority") == [b"replica-priority", b""]  # unset
    assert c.do("CONFIG", "GET", "keepalive") == [b"keepalive", b"300"]
    assert c.do("CONFIG", "GET", "protected-mode") == [b"protected-mode", b"yes"]
    for name, value, read in CONFIG:
        assert c.do("CONFIG", "SET", name, value) == "OK", name
        assert c.do("CONFIG", "GET", name) == [name.encode(), read.encode()]
    for name, bad in (("maxmemory", "lots"), ("protected-mode", "maybe"), ("keepalive", "-1"),
                      ("replica-priority", "-2"), ("replica_announce_port", "x")):
        assert c.do("CONFIG", "SET", name, bad) == f"ERR Invalid argument '{bad}' for CONFIG SET '{name}'"
    assert c.do("CONFIG", "SET", "requirepass") == "OK"  # Tile38: no value clears it
    assert c.do("config get", "keepalive") == [b"keepalive", b"30"]  # one token (node-tile38)
    assert c.do("config set", "keepalive", "31") == "OK"
    assert c.do("CONFIG", "REWRITE") == "OK"
    saved = orjson.loads((s.dir / "config").read_bytes())
    assert saved["keepalive"] == 31 and saved["replica_announce_ip"] == "10.0.0.1"
    s.stop()
    s.start()
    assert Conn(s.port).do("CONFIG", "GET", "replica-priority") == [b"replica-priority", b"10"]


def test_config_reads_tile38s_config_file(make_server, tmp_path: Path) -> None:
    """A Tile38 data directory's `config` (properties as strings, logconfig an object)."""
    s = make_server("t38cfg", start=False)
    s.dir.mkdir(parents=True)
    (s.dir / "config").write_text(orjson.dumps({
        "server_id": "0123456789abcdef0123456789abcdef", "maxmemory": "434mb",
        "keepalive": "60", "replica-priority": 3, "logconfig": {"encoding": "json"},
        "protected-mode": "no"}).decode())
    s.start()
    c = Conn(s.port)
    assert c.do("CONFIG", "GET", "maxmemory") == [b"maxmemory", str(434 << 20).encode()]
    assert c.do("CONFIG", "GET", "logconfig") == [b"logconfig", b'{"encoding":"json"}']
    assert s.stats()["id"] == "0123456789abcdef0123456789abcdef"


def test_pyle38_config_and_quit(shared: GeoServer) -> None:
    async def run() -> None:
        t38 = Tile38(f"redis://127.0.0.1:{shared.port}")
        try:
            assert (await t38.config_set("keepalive", "120")).ok
            assert (await t38.config_get("keepalive")).properties == {"keepalive": "120"}
            assert (await t38.config_rewrite()).ok
        finally:
            await t38.quit()

    asyncio.run(run())


def _keepalive_timer(server_port: int, client_port: int) -> bool:
    """Whether the server's end of a connection runs a keep-alive timer (/proc/net/tcp `tr` 2)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, timer = fields[1], fields[2], fields[5]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return timer.split(":")[0] == "02"
    raise AssertionError("connection not found in /proc/net/tcp")


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_keepalive_applies_to_new_connections(make_server) -> None:
    s = make_server("ka")
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as first:
        first.sendall(b"PING\r\n")
        assert first.recv(10) == b"+PONG\r\n"
        assert _keepalive_timer(s.port, first.getsockname()[1])  # default 300 s
        first.sendall(b"CONFIG SET keepalive 0\r\n")
        assert first.recv(10) == b"+OK\r\n"
        with socket.create_connection(("127.0.0.1", s.port), timeout=5) as second:
            second.sendall(b"PING\r\n")
            assert second.recv(10) == b"+PONG\r\n"
            assert not _keepalive_timer(s.port, second.getsockname()[1])
