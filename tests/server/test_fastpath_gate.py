"""The fast path's cached gate (fastpath.modes, Client.fast_gate): what one connection may run
in C++ is cached until something it depends on changes. Changes made by another connection, by
a background loop or by the clock alone must reach a connection that sends nothing else but
fast-path-shaped requests; and the output limits hold when replies come straight from a read
(fastpath.serve). Real geoserver processes, raw sockets and redis-py."""

from __future__ import annotations

import socket
import time
import urllib.request

import psutil
import pytest
import redis
from helpers import GeoServer
from wire import Wire, encode


def ask(w: Wire, data: bytes, replies: int) -> bytes:
    """Send `data` and return the next `replies` reply frames, joined."""
    w.send(data)
    return b"".join(w.read_frame() for _ in range(replies))


def test_another_connections_config_set_requirepass_reaches_a_fast_connection(server: GeoServer) -> None:
    w = Wire(server.port)
    assert ask(w, encode("SET", "fleet", "a", "POINT", 33, -115), 1) == b"+OK\r\n"
    assert ask(w, encode("SET", "fleet", "b", "POINT", 33, -115), 1) == b"+OK\r\n"  # the fast path's
    server.client().config_set("requirepass", "pw")
    got = ask(w, encode("SET", "fleet", "c", "POINT", 33, -115), 1)
    assert got.startswith(b"-") and b"auth" in got.lower()
    assert ask(w, encode("GET", "fleet", "a"), 1).startswith(b"-")
    assert ask(w, encode("AUTH", "pw") + encode("GET", "fleet", "a", "POINT"), 2) == \
        b"+OK\r\n*2\r\n$2\r\n33\r\n$4\r\n-115\r\n"


def test_memory_sampler_turns_fast_writes_into_oom(server: GeoServer) -> None:
    """over_maxmemory flips in the 100 ms sampler, not in a command: the connection's next
    SET must be refused even though nothing else ran on the server."""
    c = server.client()
    c.execute_command("SET", "fleet", "seed", "POINT", 1, 1)
    rss = server.stats()["mem_alloc"]
    c.config_set("maxmemory", str(rss + 40 * 1024 * 1024))
    w = Wire(server.port)
    pad = "x" * 300
    refused = b""
    for batch in range(400):  # ~400 B an object: past the limit within ~100k objects
        data = b"".join(encode("SET", "fleet", f"{pad}{batch}-{i}", "POINT", 33, -115) for i in range(500))
        got = ask(w, data, 500)
        if b"-" in got:
            refused = got
            break
        time.sleep(0.01)  # the sampler's turn
    assert b"OOM" in refused, "the fast path kept taking writes over maxmemory"
    assert c.execute_command("GET", "fleet", "seed", "POINT") == [b"1", b"1"]  # reads still served


def test_lease_given_by_another_connection_lapses_for_a_fast_connection(server: GeoServer) -> None:
    """The lease is granted on one connection and lapses on the clock alone; the writer's own
    connection sends only SETs."""
    w = Wire(server.port)
    assert ask(w, encode("SET", "fleet", "a", "POINT", 33, -115), 1) == b"+OK\r\n"
    server.client().execute_command("LEASE", 1, 400)
    assert ask(w, encode("SET", "fleet", "b", "POINT", 33, -115), 1) == b"+OK\r\n"
    time.sleep(0.5)
    got = ask(w, encode("SET", "fleet", "c", "POINT", 33, -115), 1)
    assert got.startswith(b"-LEASE"), got
    server.client().execute_command("LEASE", 2, 10_000)
    assert ask(w, encode("SET", "fleet", "c", "POINT", 33, -115), 1) == b"+OK\r\n"


def test_fast_connections_commands_are_counted(server: GeoServer) -> None:
    """The core counts what it runs into metrics.CoreCounts: INFO and /metrics see them."""
    c = server.client()
    before = c.info("stats")["total_commands_processed"]  # counted once it has replied
    w = Wire(server.port)
    ask(w, encode("SET", "fleet", "a", "POINT", 33, -115), 1)  # a new key: the table's
    ask(w, b"".join(encode("GET", "fleet", "a", "POINT") for _ in range(25)), 25)
    ask(w, b"".join(encode("PING") for _ in range(10)), 10)
    assert c.info("stats")["total_commands_processed"] - before == 1 + 1 + 25 + 10
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
        assert 'tile38_cmd_total{cmd="get",result="ok"} 25.0' in r.read().decode()


def test_redis_py_pipeline_interleaves_fast_and_table_commands(server: GeoServer) -> None:
    """A pipeline alternating fast forms with table-only commands that change the gate (OUTPUT,
    SETHOOK's absence, a new key) keeps every reply in order."""
    c: redis.Redis = server.client()
    c.execute_command("SET", "fleet", "a", "POINT", 33, -115)
    p = c.pipeline(transaction=False)
    for i in range(50):
        p.execute_command("SET", "fleet", f"id{i}", "POINT", 33, -115 + i * 1e-3)
        p.execute_command("SET", f"key{i}", "x", "POINT", 1, 1)  # a new key: the table's
        p.execute_command("GET", "fleet", f"id{i}", "POINT")
    replies = p.execute()
    assert replies[2::3] == [[b"33", repr(-115 + i * 1e-3).removesuffix(".0").encode()] for i in range(50)]


# --- output limits when the replies come straight from a read (fastpath.serve) ---------------

def _points(server: GeoServer, n: int) -> None:
    """n plain points in key `fleet` (a SCAN LIMIT 100 of them is a ~6 KB reply of the core)."""
    with Wire(server.port) as w:
        w.send(b"".join(encode("SET", "fleet", f"truck{i:05d}", "POINT", 33 + i * 1e-4, -115)
                        for i in range(n)))
        for _ in range(n):
            w.read_frame()


@pytest.mark.parametrize("scans", [300, 3000])  # ~1.8 MB: all of the read runs; ~18 MB: not
def test_fast_replies_over_the_hard_limit_disconnect(make_server, scans: int) -> None:
    s = make_server("fasthard", args=["--client-output-buffer-limit", "normal 1mb 0 0"])
    _points(s, 200)
    with Wire(s.port) as w:
        w.send(b"".join(encode("SCAN", "fleet", "LIMIT", "100") for _ in range(scans)))
        assert w.closed_by_peer()
    assert "over the hard limit 1048576" in s.log()
    with Wire(s.port) as w:
        assert len(w.call("SCAN", "fleet", "LIMIT", "100")[1]) == 100  # smaller batches are served


def test_fast_batch_pauses_while_replies_go_unread(make_server) -> None:
    """Pipelined fast-path replies the client does not read: the batch stops near the
    high-water mark (the core's budget) instead of building them all, then finishes in order."""
    s = make_server("fastpause", args=["--client-output-buffer-limit", "normal 0 0 0"])
    _points(s, 200)
    n = 20000  # ~120 MB of replies if the whole batch ran at once
    before = psutil.Process(s.proc.pid).memory_info().rss
    with Wire(s.port, timeout=60) as slow:
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        slow.send(b"".join(encode("SCAN", "fleet", "LIMIT", "100", "IDS") for _ in range(n)))
        time.sleep(1.0)
        grown = psutil.Process(s.proc.pid).memory_info().rss - before
        assert grown < 60 << 20, grown
        for _ in range(n):
            assert slow.read_frame().startswith(b"*2\r\n:100\r\n*100\r\n$10\r\ntruck00000")
        assert slow.call("PING") == "PONG"


def test_a_monitor_leaving_lets_others_run_fast_again() -> None:
    """In process (a Server and two Clients over a stub transport, no socket: the gate is
    internal state): MONITOR turns every connection's gate off, and its connection closing
    turns it back on although no command ran since."""
    import asyncio

    from geoserver import fastpath
    from geoserver.config import ServerConfig
    from geoserver.server import Client, Server

    class Transport(asyncio.Transport):
        def get_extra_info(self, name: str, default: object = None) -> object:
            return ("127.0.0.1", 1) if name == "peername" else default

        def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
            pass

    async def run() -> None:
        config = ServerConfig()
        config.appendonly = False
        server = Server(config)
        writer, monitor = Client(server), Client(server)
        for c in (writer, monitor):
            c.connection_made(Transport())
        assert fastpath.modes(server, writer) & fastpath.WRITE
        server.monitors.add(monitor)  # what MONITOR does, through the command table
        server.gate_version += 1
        assert fastpath.modes(server, writer) == 0
        monitor.connection_lost(None)
        assert fastpath.modes(server, writer) & fastpath.WRITE

    asyncio.run(run())
