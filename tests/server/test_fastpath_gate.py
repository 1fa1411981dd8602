"""The fast path's cached gate (fastpath.modes, Client.fast_gate): what one connection may run
in C++ is cached until something it depends on changes. Changes made by another connection, by
a background loop or by the clock alone must reach a connection that sends nothing else but
fast-path-shaped requests. Real geoserver processes, raw sockets and redis-py."""

from __future__ import annotations

import socket
import time
import urllib.request

import redis
from helpers import GeoServer


def enc(*args: object) -> bytes:
    parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def ask(sock: socket.socket, data: bytes, replies: int) -> bytes:
    """Send `data` and read until `replies` CRLF-ended simple replies arrived."""
    sock.sendall(data)
    got = b""
    while got.count(b"\r\n") < replies:
        chunk = sock.recv(65536)
        assert chunk, got
        got += chunk
    return got


def test_another_connections_config_set_requirepass_reaches_a_fast_connection(server: GeoServer) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port))
    assert ask(sock, enc("SET", "fleet", "a", "POINT", 33, -115), 1) == b"+OK\r\n"
    assert ask(sock, enc("SET", "fleet", "b", "POINT", 33, -115), 1) == b"+OK\r\n"  # the fast path's
    server.client().config_set("requirepass", "pw")
    got = ask(sock, enc("SET", "fleet", "c", "POINT", 33, -115), 1)
    assert got.startswith(b"-") and b"auth" in got.lower()
    assert ask(sock, enc("GET", "fleet", "a"), 1).startswith(b"-")
    assert ask(sock, enc("AUTH", "pw") + enc("GET", "fleet", "a", "POINT"), 6) == \
        b"+OK\r\n*2\r\n$2\r\n33\r\n$4\r\n-115\r\n"


def test_memory_sampler_turns_fast_writes_into_oom(server: GeoServer) -> None:
    """over_maxmemory flips in the 100 ms sampler, not in a command: the connection's next
    SET must be refused even though nothing else ran on the server."""
    c = server.client()
    c.execute_command("SET", "fleet", "seed", "POINT", 1, 1)
    rss = server.stats()["mem_alloc"]
    c.config_set("maxmemory", str(rss + 40 * 1024 * 1024))
    sock = socket.create_connection(("127.0.0.1", server.port))
    pad = "x" * 300
    refused = b""
    for batch in range(400):  # ~400 B an object: past the limit within ~100k objects
        data = b"".join(enc("SET", "fleet", f"{pad}{batch}-{i}", "POINT", 33, -115) for i in range(500))
        got = ask(sock, data, 500)
        if b"-" in got:
            refused = got
            break
        time.sleep(0.01)  # the sampler's turn
    assert b"OOM" in refused, "the fast path kept taking writes over maxmemory"
    assert c.execute_command("GET", "fleet", "seed", "POINT") == [b"1", b"1"]  # reads still served


def test_lease_given_by_another_connection_lapses_for_a_fast_connection(server: GeoServer) -> None:
    """The lease is granted on one connection and lapses on the clock alone; the writer's own
    connection sends only SETs."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    assert ask(sock, enc("SET", "fleet", "a", "POINT", 33, -115), 1) == b"+OK\r\n"
    server.client().execute_command("LEASE", 1, 400)
    assert ask(sock, enc("SET", "fleet", "b", "POINT", 33, -115), 1) == b"+OK\r\n"
    time.sleep(0.5)
    got = ask(sock, enc("SET", "fleet", "c", "POINT", 33, -115), 1)
    assert got.startswith(b"-LEASE"), got
    server.client().execute_command("LEASE", 2, 10_000)
    assert ask(sock, enc("SET", "fleet", "c", "POINT", 33, -115), 1) == b"+OK\r\n"


def test_fast_connections_commands_are_counted(server: GeoServer) -> None:
    """The core counts what it runs into metrics.CoreCounts: INFO and /metrics see them."""
    c = server.client()
    before = c.info("stats")["total_commands_processed"]  # counted once it has replied
    sock = socket.create_connection(("127.0.0.1", server.port))
    ask(sock, enc("SET", "fleet", "a", "POINT", 33, -115), 1)  # a new key: the table's
    ask(sock, b"".join(enc("GET", "fleet", "a", "POINT") for _ in range(25)), 25 * 5)
    ask(sock, b"".join(enc("PING") for _ in range(10)), 10)
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
