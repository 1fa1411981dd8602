"""Hook and channel definitions as data: HOOKS/CHANS output, AOF records (a Tile38-written
AOF loads), AOFSHRINK rewrites them, followers hold them, EX expiry, FLUSHDB, bad input; and
one hook delivering to a real HTTP receiver (the delivery layer's http:// endpoint)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import orjson
import pytest
from helpers import GeoServer, wait_until


def resp(*args: object) -> bytes:
    """One record as Tile38 writes it to its AOF (redcon.AppendArray + AppendBulkString)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(b), b)
    return out


def hooks(server: GeoServer, kind: str = "HOOKS") -> dict[str, dict]:
    return {h["name"]: h for h in server.json(kind, "*")["chans" if kind == "CHANS" else "hooks"]}


def test_hooks_output_json_and_resp(make_server) -> None:
    srv = make_server()
    c = srv.client(decode_responses=True)
    define = ("SETHOOK", "warehouse", "http://10.0.20.78/endpoint,http://10.0.20.79/endpoint",
              "META", "region", "west", "NEARBY", "fleet", "FENCE", "POINT", 33.5, -112.2, 500)
    assert c.execute_command(*define) == 1
    assert c.execute_command(*define) == 0  # the same definition: nothing changes, nothing logged
    assert hooks(srv)["warehouse"] == {
        "name": "warehouse", "key": "fleet", "ttl": -1,
        "endpoints": ["http://10.0.20.78/endpoint", "http://10.0.20.79/endpoint"],
        "command": ["NEARBY", "fleet", "FENCE", "POINT", "33.5", "-112.2", "500"], "meta": {"region": "west"}}
    assert c.execute_command("HOOKS", "ware*") == [[
        "warehouse", "fleet", ["http://10.0.20.78/endpoint", "http://10.0.20.79/endpoint"],
        ["NEARBY", "fleet", "FENCE", "POINT", "33.5", "-112.2", "500"], ["region", "west"]]]
    assert c.execute_command("HOOKS", "nope*") == []
    assert srv.stats()["num_hooks"] == 1
    c.execute_command("SETHOOK", "w2", "redis://127.0.0.1:1/ch", "WITHIN", "fleet", "FENCE",
                      "BOUNDS", 0, 0, 1, 1)
    assert c.execute_command("PDELHOOK", "w*") == 2
    assert c.execute_command("DELHOOK", "warehouse") == 0
    assert srv.stats()["num_hooks"] == 0


BAD = [
    (["SETHOOK", "h", "notaurl", "NEARBY", "fleet", "FENCE", "POINT", 1, 1, 10],
     "invalid argument 'notaurl': 'notaurl': unknown scheme (want http, https, redis, nats, mqtt or amqp)"),
    (["SETHOOK", "h", "kafka://10.0.0.1:9092/t", "NEARBY", "fleet", "FENCE", "POINT", 1, 1, 10], None),
    (["SETHOOK", "h", "http://x/y", "EX", "-5", "NEARBY", "fleet", "FENCE", "POINT", 1, 1, 10],
     "invalid argument '-5'"),
    (["SETHOOK", "h", "http://x/y", "EX", "soon", "NEARBY", "fleet", "FENCE", "POINT", 1, 1, 10],
     "invalid argument 'soon'"),
    (["SETHOOK", "h", "http://x/y", "SCAN", "fleet", "FENCE", "POINT"], "invalid argument 'SCAN'"),
    (["SETCHAN", "c", "NEARBY", "fleet", "FENCE", "DETECT", "in", "POINT", 1, 1, 10],
     "invalid argument 'in'"),
    (["SETCHAN", "c", "NEARBY", "fleet", "FENCE", "COMMANDS", "sett", "POINT", 1, 1, 10],
     "invalid argument 'sett'"),
    (["SETCHAN", "c", "META", "k", "NEARBY", "fleet", "FENCE", "POINT", 1, 1, 10], None),
]


@pytest.mark.parametrize("argv,err", BAD, ids=[" ".join(map(str, a[:5])) for a, _ in BAD])
def test_bad_definitions_are_refused(make_server, argv: list, err: str | None) -> None:
    srv = make_server()
    reply = srv.json(*argv)
    assert reply["ok"] is False, reply
    if err is not None:
        assert reply["err"] == err
    assert srv.json("SETCHAN", "same", "NEARBY", "k", "FENCE", "POINT", 1, 1, 10)["ok"]
    assert srv.json("SETHOOK", "same", "http://x/y", "NEARBY", "k", "FENCE", "POINT", 1, 1, 10)["err"] == \
        "hooks and channels cannot share the same name"
    assert srv.stats()["num_hooks"] == 1
    assert srv.aof_path.read_bytes().count(b"SETCHAN") == 1  # refused definitions are not logged


def test_fence_word_is_implied_in_sethook_and_setchan(make_server) -> None:
    """Tile38 parses SETHOOK/SETCHAN's search with FENCE already set (token.go `fromFence`):
    FENCE may be left out, or given, even twice; a live fence (NEARBY ... FENCE) still refuses two."""
    srv = make_server()
    assert srv.json("SETCHAN", "c1", "WITHIN", "fleet", "BOUNDS", 0, 0, 1, 1)["ok"]
    assert srv.json("SETHOOK", "h1", "http://x/y", "NEARBY", "fleet", "DETECT", "enter",
                    "POINT", 1, 1, 10)["ok"]
    assert srv.json("SETCHAN", "c2", "WITHIN", "fleet", "FENCE", "FENCE", "BOUNDS", 0, 0, 1, 1)["ok"]
    assert [c["name"] for c in srv.json("CHANS", "*")["chans"]] == ["c1", "c2"]
    live = srv.json("NEARBY", "fleet", "FENCE", "FENCE", "POINT", 1, 1, 10)
    assert live["err"] == "duplicate argument 'FENCE'"
    srv.json("SET", "fleet", "t1", "POINT", 0.5, 0.5)
    srv.json("SET", "other", "t1", "POINT", 0.5, 0.5)
    for cmd in ("RENAME", "RENAMENX"):  # a fenced key, as source or target, keeps its name (Tile38)
        assert srv.json(cmd, "fleet", "fleet2")["err"] == "key has hooks set"
        assert srv.json(cmd, "other", "fleet")["err"] == "key has hooks set"
    srv.json("DELHOOK", "h1")
    assert srv.json("RENAME", "fleet", "fleet2")["err"] == "key has channels set"
    assert srv.json("RENAME", "other", "other2")["ok"]


def test_tile38_aof_with_hooks_and_channels_loads(make_server) -> None:
    """Records exactly as Tile38 writes them: as clients sent them, and as its AOFSHRINK
    rewrites them (lowercase, endpoints joined, `ex` with one decimal)."""
    srv = make_server(start=False)
    srv.dir.mkdir(parents=True)
    srv.aof_path.write_bytes(
        resp("SET", "fleet", "truck1", "POINT", "33.5", "-112.2")
        + resp("SETHOOK", "warehouse", "http://10.0.20.78/endpoint", "NEARBY", "fleet", "FENCE", "POINT",
               "33.462", "-112.268", "6000")
        + resp("SETCHAN", "busstop", "META", "owner", "city", "NEARBY", "buses", "FENCE", "DETECT",
               "enter,exit", "POINT", "33.5123", "-112.2693", "100")
        + resp("sethook", "shrunk", "kafka://10.0.20.78:9092/warehouse,http://10.0.20.79/endpoint",
               "meta", "a", "b", "ex", "3600.0",
               "WITHIN", "fleet", "FENCE", "BOUNDS", "33", "-113", "34", "-112")
        + resp("setchan", "gone", "INTERSECTS", "fleet", "FENCE", "BOUNDS", "0", "0", "1", "1")
        + resp("delchan", "gone")
        + resp("SETHOOK", "pd1", "http://a/b", "NEARBY", "fleet", "FENCE", "ROAM", "fleet", "*", "100")
        + resp("PDELHOOK", "pd*"))
    srv.start()
    got = hooks(srv)
    assert sorted(got) == ["shrunk", "warehouse"]
    assert got["shrunk"]["endpoints"] == ["kafka://10.0.20.78:9092/warehouse", "http://10.0.20.79/endpoint"]
    assert 3500 < got["shrunk"]["ttl"] <= 3600 and got["shrunk"]["meta"] == {"a": "b"}
    assert list(hooks(srv, "CHANS")) == ["busstop"]
    assert srv.stats()["num_hooks"] == 3


def test_definitions_survive_restart_shrink_and_replicate(make_server) -> None:
    leader = make_server("leader")
    c = leader.client()
    c.execute_command("SETCHAN", "c1", "META", "m", "v", "WITHIN", "fleet", "FENCE", "DETECT", "enter",
                      "BOUNDS", 0, 0, 1, 1)
    c.execute_command("SETHOOK", "h1", "http://127.0.0.1:9/x", "EX", 3600, "NEARBY", "fleet", "FENCE",
                      "POINT", 1, 1, 10)
    c.execute_command("SETHOOK", "h2", "http://127.0.0.1:9/x", "NEARBY", "fleet", "FENCE", "POINT", 1, 1, 10)
    c.execute_command("DELHOOK", "h2")
    for i in range(50):
        c.execute_command("SET", "fleet", f"t{i}", "POINT", 40, -100)
    before = hooks(leader), hooks(leader, "CHANS")
    follower = make_server("follower")
    assert follower.json("FOLLOW", leader.host, leader.port)["ok"]
    wait_until(lambda: hooks(follower) and hooks(follower, "CHANS"), message="definitions on the follower")
    assert hooks(follower)["h1"]["command"] == before[0]["h1"]["command"]

    size = leader.stats()["aof_size"]
    assert leader.json("AOFSHRINK")["ok"]
    wait_until(lambda: leader.stats()["aof_size"] < size and not leader.stats()["aof_shrinking"],
               message="shrink done")
    aof = leader.aof_path.read_bytes()
    assert aof.count(b"sethook") == 1 and aof.count(b"setchan") == 1 and b"h2" not in aof
    leader.stop()
    leader.start()
    after = hooks(leader), hooks(leader, "CHANS")
    assert after[1] == before[1]
    assert after[0]["h1"]["command"] == before[0]["h1"]["command"]
    assert 3000 < after[0]["h1"]["ttl"] <= 3600
    # the follower re-syncs from the shrunk file and still holds them
    wait_until(lambda: follower.stats().get("caught_up") and hooks(follower) and hooks(follower, "CHANS"),
               timeout=20, message="follower resynced")


def test_ex_expires_hooks_on_leader_and_followers(make_server) -> None:
    leader = make_server("leader")
    follower = make_server("follower")
    assert follower.json("FOLLOW", leader.host, leader.port)["ok"]
    leader.client().execute_command("SETCHAN", "brief", "EX", 1, "NEARBY", "fleet", "FENCE",
                                    "POINT", 1, 1, 10)
    wait_until(lambda: not hooks(leader, "CHANS"), message="expired on the leader")
    wait_until(lambda: b"delchan" in leader.aof_path.read_bytes(), message="DELCHAN logged, as Tile38 does")
    wait_until(lambda: not hooks(follower, "CHANS"), message="expired on the follower")


def test_flushdb_deletes_hooks(make_server) -> None:
    srv = make_server()
    srv.client().execute_command("SETCHAN", "c", "NEARBY", "fleet", "FENCE", "POINT", 1, 1, 10)
    assert srv.json("FLUSHDB")["ok"]
    assert hooks(srv, "CHANS") == {}
    srv.stop()
    srv.start()
    assert hooks(srv, "CHANS") == {}


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict]]]:
    """A real HTTP server on 127.0.0.1 collecting POSTed events."""
    got: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append(orjson.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK!")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", got
    httpd.shutdown()


def test_hook_posts_events_to_http(make_server, receiver) -> None:
    url, got = receiver
    srv = make_server()
    c = srv.client()
    assert c.execute_command("SETHOOK", "wh", url, "META", "k", "v", "WITHIN", "fleet", "FENCE",
                             "DETECT", "enter,exit", "BOUNDS", 0, 0, 1, 1) == 1
    c.execute_command("SET", "fleet", "t", "POINT", 0.5, 0.5)
    c.execute_command("SET", "fleet", "t", "POINT", 5, 5)
    wait_until(lambda: len(got) >= 2, message="two events delivered")
    assert [(e["detect"], e["hook"], e["meta"], e["id"]) for e in got] == [
        ("enter", "wh", {"k": "v"}, "t"), ("exit", "wh", {"k": "v"}, "t")]


def _metric(server: GeoServer, name: str) -> float:
    import urllib.request

    body = urllib.request.urlopen(f"http://{server.host}:{server.port}/metrics", timeout=10).read().decode()
    values = [float(line.split()[-1]) for line in body.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


def test_a_follower_never_fires_a_hook(make_server, receiver) -> None:
    """Both members hold the hook and apply the same writes; only the leader produces events."""
    url, got = receiver
    leader = make_server("leader")
    follower = make_server("follower")
    assert follower.json("FOLLOW", leader.host, leader.port)["ok"]
    leader.client().execute_command("SETHOOK", "wh", url, "WITHIN", "fleet", "FENCE", "DETECT", "enter",
                                    "BOUNDS", 0, 0, 1, 1)
    leader.client().execute_command("SET", "fleet", "t", "POINT", 0.5, 0.5)
    wait_until(lambda: follower.json("GET", "fleet", "t").get("ok"), message="write replicated")
    wait_until(lambda: len(got) == 1, message="the leader's event delivered")
    assert _metric(leader, "geoserver_fence_events_total") == 1
    assert _metric(follower, "geoserver_fence_events_total") == 0
    assert hooks(follower)["wh"]["endpoints"] == [url]
