"""Issue 9's classes that had no concurrent canary yet: pre-auth limits, the output hard limit,
GeoJSON limits with the acknowledged => loadable invariant, binary keys, CSRF, a hostile FOLLOW,
a silent leader link and a leader back empty. Each attack runs against real geoserver processes
on 127.0.0.1 while a canary connection (tests/server/canary.py) PINGs every 5 ms on the server
whose data is at stake; after it the canary got every reply, the attacker got a clear refusal,
and the data is intact.

The canary's bound (STALL, as in test_hardening.py) is not a latency target: it only tells a
stall of seconds (what these attacks did before) from scheduling noise on a loaded 2-core
machine. bench/attack_canary.py measures the real round trips (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
from collections.abc import Callable

from canary import Canary
from helpers import GeoServer, wait_until
from test_replication_safety import Proxy, in_sync, load
from wire import Wire, encode

STALL = 3.0  # seconds; see the module docstring
PASSWORD = "s3cret"
MB = 1 << 20


def settle(canary: Canary, more: int = 5) -> None:
    """Inside the canary's block, after the attack: wait for `more` further round trips (the
    server answers after the attack too, and a quick attack still gets a canary to judge)."""
    seen = len(canary.rtts)
    wait_until(lambda: len(canary.rtts) >= seen + more or canary.errors, 30, message="canary pings")


def served(canary: Canary) -> None:
    """The canary PINGed throughout and every PING got its PONG, none after a stall."""
    assert not canary.errors, canary.errors
    assert len(canary.rtts) >= 5, len(canary.rtts)
    assert canary.worst < STALL, canary.worst


def refused(port: int, payload: bytes, read_for: float = 5.0) -> bytes:
    """Send bytes, read until the server closes; the reply (the server must close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload)
        sock.settimeout(read_for)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def rss(server: GeoServer, password: str | None = None) -> int:
    return server.json("SERVER", password=password)["stats"]["mem_alloc"]


def locked(make_server: Callable[..., GeoServer], name: str, args: list[str] | None = None) -> GeoServer:
    s = make_server(name, args=args, start=False)
    s.env["GEOSERVER_REQUIREPASS"] = PASSWORD
    s.start(wait=False)
    wait_until(lambda: s.json("PING", password=PASSWORD)["ok"], message="locked server")
    return s


# --- pre-auth limits ----------------------------------------------------------------------

def test_preauth_attacks_leave_an_authenticated_canary_served(make_server) -> None:
    s = locked(make_server, "preauth")
    load(s, 50, password=PASSWORD)
    before = rss(s, PASSWORD)
    with Canary(s.port, password=PASSWORD) as canary:
        assert refused(s.port, b"*3000000000\r\n").startswith(
            b"-ERR Protocol error: too many arguments (3000000000, limit 10)")
        # ten strangers each announcing a 10 MB AUTH argument: refused at the header, so
        # nothing near 100 MB is ever buffered
        socks = [socket.create_connection(("127.0.0.1", s.port), timeout=10) for _ in range(10)]
        try:
            for sock in socks:
                sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n" % (10 * MB))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    sock.sendall(b"x" * MB)
            for sock in socks:
                sock.settimeout(10)
                try:
                    reply = sock.recv(200)
                except ConnectionResetError:
                    reply = b"<reset>"
                assert reply.startswith(
                    b"-ERR Protocol error: argument too large (10485760 bytes, limit 16384)"), reply
            grown = rss(s, PASSWORD) - before
        finally:
            for sock in socks:
                sock.close()
        assert refused(s.port, b"AUTH " + b"x" * 20000 + b"\r\n").startswith(
            b"-ERR Protocol error: too big inline request (limit 16384 bytes)")
        settle(canary)
    served(canary)
    assert grown < 50 * MB, grown
    assert s.json("SCAN", "fleet", "COUNT", password=PASSWORD)["count"] == 50


# --- output buffers -----------------------------------------------------------------------

def test_client_over_the_hard_limit_is_cut_while_the_canary_is_served(make_server) -> None:
    s = make_server("hardcanary", args=["--client-output-buffer-limit", "normal 1mb 0 0"])
    with Wire(s.port) as w:
        w.send(b"".join(encode("SET", "big", f"id{i}", "STRING", "x" * 1000) for i in range(3000)))
        for _ in range(3000):
            w.read_frame()
    with Canary(s.port) as canary, Wire(s.port, timeout=30) as greedy:
        greedy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        greedy.send(b"".join(encode("SCAN", "big", "LIMIT", "3000") for _ in range(20)))  # ~60 MB
        assert greedy.closed_by_peer(timeout=20)
        settle(canary)
    served(canary)
    assert "over the hard limit 1048576" in s.log()
    with Wire(s.port) as w:
        assert len(w.call("SCAN", "big", "LIMIT", "500")[1]) == 500


# --- GeoJSON limits and acknowledged => loadable --------------------------------------------

def collection(depth: int) -> str:
    geometry = '{"type":"Point","coordinates":[1,2]}'
    for _ in range(depth):
        geometry = '{"type":"GeometryCollection","geometries":[' + geometry + "]}"
    return geometry


def ring(n: int) -> str:
    points = [f"[{i % 90},{(i * 7) % 90}]" for i in range(n)] + ["[0,0]"]
    return '{"type":"Polygon","coordinates":[[' + ",".join(["[0,0]", *points[1:]]) + "]]}"


def test_geojson_attacks_refused_and_everything_acknowledged_reloads(make_server) -> None:
    leader = make_server("gjleader", args=["--geojson-max-vertices", "5000"])
    follower = make_server("gjfollower", args=["--follow", f"127.0.0.1:{leader.port}", "--repl-timeout", "1"])
    bowtie = '{"type":"Polygon","coordinates":[[[0,0],[10,10],[10,0],[0,10],[0,0]]]}'
    accepted = {"at-depth-limit": collection(32), "bowtie": bowtie, "big-ring": ring(4000)}
    with Canary(leader.port) as leader_canary, Canary(follower.port) as follower_canary, \
            Wire(leader.port) as w:
        assert str(w.call("SET", "g", "deep", "OBJECT", collection(490))) == \
            "ERR invalid geojson: nested too deep (limit 32)"  # the issue's AOF breaker
        assert str(w.call("SET", "g", "many", "OBJECT", ring(6000))).startswith(
            "ERR invalid geojson: too many vertices")
        for oid, geojson in accepted.items():
            assert w.call("SET", "g", oid, "OBJECT", geojson) == "OK", oid
        expected = {oid: w.call("GET", "g", oid) for oid in accepted}
        wait_until(lambda: in_sync(leader, follower), 30, message="follower caught up")
        settle(leader_canary)
        settle(follower_canary)
    served(leader_canary)
    served(follower_canary)
    assert sorted(follower.json("SCAN", "g", "IDS")["ids"]) == sorted(accepted)
    leader.kill9()
    leader.start()  # the AOF with every acknowledged write loads
    with Wire(leader.port) as w:
        assert {oid: w.call("GET", "g", oid) for oid in accepted} == expected
        assert w.call("GET", "g", "deep") is None
    with Wire(follower.port) as w:
        assert {oid: w.call("GET", "g", oid) for oid in accepted} == expected


# --- binary keys --------------------------------------------------------------------------

def test_binary_keys_stay_apart_through_restart_and_follower(make_server) -> None:
    leader = make_server("binleader")
    follower = make_server("binfollower", args=["--follow", f"127.0.0.1:{leader.port}",
                                                 "--repl-timeout", "1"])
    with Canary(leader.port) as canary:
        client = leader.client()
        assert client.execute_command("SET", b"\xff", "a", "STRING", "first") is True
        assert client.execute_command("SET", b"\xfe", "a", "STRING", "second") is True
        assert sorted(client.execute_command("KEYS", "*")) == [b"\xfe", b"\xff"]
        settle(canary)
    served(canary)
    wait_until(lambda: in_sync(leader, follower), 30, message="follower caught up")
    leader.kill9()
    leader.start()
    for server in (leader, follower):
        client = server.client()
        assert client.execute_command("GET", b"\xff", "a") == b"first"
        assert client.execute_command("GET", b"\xfe", "a") == b"second"


# --- CSRF and a hostile FOLLOW ------------------------------------------------------------

def browser_get(port: int, path: str) -> bytes:
    """A GET as a page on another site makes the browser send it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
                     b"Sec-Fetch-Site: cross-site\r\nConnection: close\r\n\r\n" % path.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        return data


def test_csrf_and_hostile_follow_leave_the_data_and_the_canary_alone(make_server) -> None:
    victim = make_server("victim")  # the defaults: no password, no CORS origins
    load(victim, 300)
    stranger = make_server("stranger")
    load(stranger, 5, key="attacker")
    with Canary(victim.port) as canary:
        reply = browser_get(victim.port, f"/FOLLOW+127.0.0.1+{stranger.port}")
        assert reply.startswith(b"HTTP/1.1 405") and b"admin commands over HTTP need POST" in reply
        reply = browser_get(victim.port, "/FLUSHDB")
        assert reply.startswith(b"HTTP/1.1 405")
        reply = browser_get(victim.port, "/SET+fleet+id1+POINT+0+0")
        assert reply.startswith(b"HTTP/1.1 403") and b"cross-site requests may not run" in reply
        assert b"Access-Control-Allow-Origin" not in reply
        assert not victim.stats().get("following")
        # FOLLOW sent by anyone who can reach the port: the stranger's 5 objects do not
        # replace our 300 (a full resync from a smaller stranger is refused)
        assert victim.json("FOLLOW", "127.0.0.1", stranger.port)["ok"]
        wait_until(lambda: victim.stats()["replication_state"] == "refused", 60, message="refusal")
        assert victim.stats()["num_objects"] == 300
        assert victim.json("GET", "fleet", "id1", "POINT")["point"] == {"lat": 33.00001, "lon": -115}
        settle(canary)
    served(canary)


# --- silent link, empty leader ----------------------------------------------------------------

def test_silent_link_is_noticed_while_the_follower_serves_its_canary(make_server) -> None:
    leader = make_server("sileader")
    proxy = Proxy(leader.port)
    try:
        follower = make_server("silfollower", args=["--follow", f"127.0.0.1:{proxy.port}",
                                                     "--repl-timeout", "1"])
        load(leader, 200)
        wait_until(lambda: in_sync(leader, follower), 30, message="sync")
        with Canary(follower.port) as canary:
            proxy.blackhole()
            load(leader, 10, key="later")
            wait_until(lambda: not follower.stats()["caught_up"], 60, message="the dead link noticed")
            assert follower.json("HEALTHZ")["err"] == "not caught up"
            assert follower.json("SCAN", "fleet", "COUNT")["count"] == 200  # reads go on
            settle(canary)
        served(canary)
        proxy.restore()
        wait_until(lambda: in_sync(leader, follower), 90, message="reconnected")
    finally:
        proxy.close()


def test_leader_back_empty_is_refused_while_the_follower_serves_its_canary(make_server) -> None:
    leader = make_server("emptyleader")
    load(leader, 300)
    follower = make_server("emptyfollower", args=["--follow", f"127.0.0.1:{leader.port}",
                                                   "--repl-timeout", "1"])
    wait_until(lambda: in_sync(leader, follower), 30, message="sync")
    kept = follower.aof_path.read_bytes()
    with Canary(follower.port) as canary:
        leader.kill9()
        shutil.rmtree(leader.dir)
        leader.start()
        wait_until(lambda: follower.stats()["replication_state"] == "refused", 60, message="refusal")
        assert follower.json("SCAN", "fleet", "COUNT")["count"] == 300
        settle(canary)
    served(canary)
    assert follower.aof_path.read_bytes() == kept

