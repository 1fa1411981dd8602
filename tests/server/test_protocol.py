"""The wire: RESP pipelining, inline (telnet) lines, HTTP GET/POST on the same port, output
switching, the HELLO handshake of RESP3-era clients, QUIT, AUTH and CONFIG, and the server
commands (SERVER, INFO, HEALTHZ, GC, /metrics) with real values."""

from __future__ import annotations

import json as jsonlib
import os
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from helpers import GeoServer, wait_until
from wire import Wire, encode, frame_end, parse


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(Path(tmp_path_factory.mktemp("proto")) / "data").start()
    yield server
    server.kill9()


def read_replies(sock: socket.socket, n: int) -> list[object]:
    buf = b""
    out: list[object] = []
    while len(out) < n:
        end = frame_end(buf) if buf else None
        if end is None:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("closed")
            buf += data
            continue
        out.append(parse(buf[:end]))
        buf = buf[end:]
    return out


def http(server: GeoServer, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}{path}", data=body,
                                 headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def raw_http(server: GeoServer, request: bytes) -> tuple[bytes, bytes]:
    """Send request bytes as written (no client library in between); (head, body) of the reply."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


# --- RESP framing -------------------------------------------------------------------------

def test_many_pipelined_commands_in_one_write(shared: GeoServer) -> None:
    n = 2000
    payload = b"".join(encode("SET", "pipe", f"id{i}", "POINT", 33 + i * 1e-4, -115) for i in range(n))
    payload += encode("STATS", "pipe")
    payload += b"".join(encode("GET", "pipe", f"id{i}", "POINT") for i in range(0, n, 100))
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(payload)
        replies = read_replies(sock, n + 1 + n // 100)
    assert replies[:n] == ["OK"] * n
    stats = replies[n]
    assert stats[0][2:4] == ["num_objects", n]  # type: ignore[index]
    points = replies[n + 1 :]
    assert [float(p[0]) for p in points] == [33 + i * 1e-4 for i in range(0, n, 100)]  # type: ignore[index]


def test_pipeline_split_at_every_byte(shared: GeoServer) -> None:
    """Commands arriving one byte at a time are reassembled."""
    payload = encode("SET", "bytes", "a", "POINT", 1, 2) + encode("GET", "bytes", "a")
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(payload)):
            sock.send(payload[i : i + 1])
        assert read_replies(sock, 2) == ["OK", '{"type":"Point","coordinates":[2,1]}']


def test_inline_telnet_lines(shared: GeoServer) -> None:
    lines = (b"SET tel t1 POINT 33 -115\r\n"
             b"set tel t2 FIELD name 'big truck' POINT 34 -116\n"
             b"GET tel t2 WITHFIELDS\r\n"
             b'SET tel t3 OBJECT {"type":"Point","coordinates":[-117,35]}\r\n'
             b"GET tel t3\r\n"
             b"\r\n"
             b"PING\r\n")
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(lines)
        replies = read_replies(sock, 6)
    assert replies == ["OK", "OK", ['{"type":"Point","coordinates":[-116,34]}', ["name", "big truck"]],
                       "OK", '{"type":"Point","coordinates":[-117,35]}', "PONG"]


def test_inline_get_is_a_command_not_an_http_request(shared: GeoServer) -> None:
    """Found in review: `GET fleet t1` typed as the first line of a telnet session was taken for
    HTTP and never answered. Tile38's rule: HTTP only when the line ends in ` HTTP/x.y`."""
    shared.client().execute_command("SET", "tel", "t1", "POINT", 33, -115)
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(b"GET tel t1\r\n")
        assert read_replies(sock, 1) == ['{"type":"Point","coordinates":[-115,33]}']


def test_inline_connection_with_quotes_and_blank_lines(shared: GeoServer) -> None:
    """A connection's first byte picks its protocol; an inline one stays inline."""
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        sock.sendall(b"PING\r\n\r\nECHO \"two words\"\r\nECHO there\n")
        assert read_replies(sock, 3) == ["PONG", "two words", "there"]


# --- HTTP on the same port -------------------------------------------------------------------

def test_http_get_command_in_path(shared: GeoServer) -> None:
    status, headers, body = http(shared, "/SET+fleet+t1+POINT+33+-115")
    assert status == 200
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert "Access-Control-Allow-Origin" not in headers  # CORS off by default (test_hardening_http)
    doc = orjson.loads(body)
    assert doc["ok"] is True and set(doc) == {"ok", "elapsed"}
    _, _, body = http(shared, "/GET+fleet+t1")
    assert orjson.loads(body)["object"] == {"type": "Point", "coordinates": [-115, 33]}
    _, _, body = http(shared, "/GET+fleet+t1+POINT")
    assert orjson.loads(body)["point"] == {"lat": 33, "lon": -115}


def test_http_head_has_the_headers_of_get_and_no_body(shared: GeoServer) -> None:
    """Found in review: a HEAD reply carried the body (HTTP says it must not)."""
    head, body = raw_http(shared, b"HEAD /PING HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: " in head and body == b""


def test_http_url_encoded_geojson(shared: GeoServer) -> None:
    geo = '{"type":"LineString","coordinates":[[-115,33],[-114,34]]}'
    path = "/SET+fleet+line+OBJECT+" + urllib.request.quote(geo)
    assert orjson.loads(http(shared, path)[2])["ok"] is True
    assert orjson.loads(http(shared, "/GET+fleet+line")[2])["object"] == orjson.loads(geo)


def test_http_post_body(shared: GeoServer) -> None:
    status, _, body = http(shared, "/", body=b"SET fleet t2 FIELD speed 70 POINT 34 -116")
    assert status == 200 and orjson.loads(body)["ok"] is True
    status, _, body = http(shared, "/", body=b"GET fleet t2 WITHFIELDS")
    doc = orjson.loads(body)
    assert doc["object"] == {"type": "Point", "coordinates": [-116, 34]}
    assert doc["fields"] == {"speed": 70}


def test_http_errors_are_json(shared: GeoServer) -> None:
    status, _, body = http(shared, "/NOPE+1")
    assert status == 200
    doc = orjson.loads(body)
    assert doc["ok"] is False and doc["err"] == "unknown command 'NOPE'"
    doc = orjson.loads(http(shared, "/SET+fleet")[2])
    assert doc["err"] == "invalid number of arguments"


def test_curl_like_clients(shared: GeoServer) -> None:
    """A bare HTTP/1.0 request (what curl, wget and health probes send) and curl itself."""
    head, body = raw_http(shared, b"GET /PING HTTP/1.0\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert orjson.loads(body)["ping"] == "pong"
    curl = shutil.which("curl")
    if curl:
        out = subprocess.run([curl, "-s", f"http://127.0.0.1:{shared.port}/SET+curl+c1+POINT+1+2"],
                             capture_output=True, timeout=10, check=True).stdout
        assert orjson.loads(out)["ok"] is True
        out = subprocess.run([curl, "-s", "-d", "GET curl c1 POINT", f"http://127.0.0.1:{shared.port}/"],
                             capture_output=True, timeout=10, check=True).stdout
        assert orjson.loads(out)["point"] == {"lat": 1, "lon": 2}


def test_metrics_over_http(shared: GeoServer) -> None:
    Wire(shared.port).call("SET", "m", "a", "POINT", 1, 2)
    status, headers, body = http(shared, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert "\ntile38_aof_size " in text
    assert 'tile38_cmd_duration_seconds_count{cmd="set"}' in text
    assert "# TYPE tile38_aof_size gauge" in text
    # Tile38's own names, so its dashboards work: `_bytes` gauges and per-collection series
    assert "\ntile38_aof_size_bytes " in text and "\ntile38_in_memory_size_bytes " in text
    assert 'tile38_collection_objects{col="m"} 1.0' in text
    assert 'tile38_collection_points{col="m"} 1.0' in text


def test_healthz_over_http_and_resp(shared: GeoServer) -> None:
    status, _, body = http(shared, "/HEALTHZ")
    assert status == 200 and orjson.loads(body)["ok"] is True
    with Wire(shared.port) as w:
        assert w.raw("HEALTHZ") == b"+OK\r\n"
        assert w.json("HEALTHZ")["ok"] is True


# --- output modes and handshakes -------------------------------------------------------------

def test_output_switching(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        assert w.raw("OUTPUT") == b"$4\r\nresp\r\n"
        assert w.raw("SET", "out", "a", "POINT", 1, 2) == b"+OK\r\n"
        reply = w.call("OUTPUT", "json")
        assert orjson.loads(reply)["ok"] is True
        doc = orjson.loads(w.call("OUTPUT"))
        assert doc["ok"] is True and doc["output"] == "json"
        doc = orjson.loads(w.call("GET", "out", "a"))
        assert doc["object"] == {"type": "Point", "coordinates": [2, 1]}
        assert w.raw("OUTPUT", "resp") == b"+OK\r\n"
        assert w.raw("GET", "out", "a", "POINT") == b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n"
        assert str(w.call("OUTPUT", "xml")) == "ERR invalid argument 'xml'"


def test_ping_echo(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        assert w.raw("PING") == b"+PONG\r\n"
        assert w.raw("PING", "hello") == b"$5\r\nhello\r\n"
        assert w.raw("ECHO", "hi there") == b"$8\r\nhi there\r\n"
        assert str(w.call("ECHO")) == "ERR wrong number of arguments for 'echo' command"
        doc = w.json("PING")
        assert doc["ok"] is True and doc["ping"] == "pong"
        assert w.json("ECHO", "hi")["ok"] is True


def test_hello3_lets_default_redis_py_work(shared: GeoServer) -> None:
    """redis-py's RESP3 client sends HELLO 3 first; plain commands then work."""
    c = redis.Redis(host="127.0.0.1", port=shared.port, protocol=3, socket_timeout=10)
    assert c.ping() is True
    assert c.execute_command("SET", "r3", "a", "POINT", 33, -115)
    assert c.execute_command("GET", "r3", "a") == b'{"type":"Point","coordinates":[-115,33]}'
    assert c.execute_command("GET", "r3", "a", "POINT") == [b"33", b"-115"]
    with pytest.raises(redis.ResponseError, match="unknown command 'NOPE'"):
        c.execute_command("NOPE")
    c.close()
    default = redis.Redis(host="127.0.0.1", port=shared.port, socket_timeout=10)
    assert default.execute_command("GET", "r3", "a", "POINT") == [b"33", b"-115"]
    default.close()
    with Wire(shared.port) as w:
        hello = w.call("HELLO", "3")
        assert isinstance(hello, dict) and hello["proto"] == 3
        assert str(w.call("HELLO", "4")).startswith("NOPROTO")
        assert w.call("HELLO", "2")[0:2] == ["server", "tile38"]


def test_quit_replies_then_closes(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        w.send(encode("QUIT") + encode("PING"))
        assert w.read_frame() == b"+OK\r\n"
        assert w.closed_by_peer()


def test_redis_py_client_basics(shared: GeoServer) -> None:
    c = shared.client()
    assert c.execute_command("SET", "rp", "a", "FIELD", "speed", 5, "POINT", 33, -115)
    assert c.execute_command("GET", "rp", "a", "WITHFIELDS", "POINT") == [[b"33", b"-115"], [b"speed", b"5"]]
    pipe = c.pipeline(transaction=False)
    for i in range(50):
        pipe.execute_command("SET", "rp", f"p{i}", "POINT", 33, -115)
    assert all(pipe.execute())
    assert c.execute_command("STATS", "rp")[0][3] == 51


# --- AUTH and CONFIG --------------------------------------------------------------------------

def test_requirepass_flag(make_server: Callable[..., GeoServer]) -> None:
    s = make_server("auth", args=["--requirepass", "s3cret"])
    with Wire(s.port) as w:
        assert str(w.call("SET", "a", "b", "POINT", 1, 2)) == "ERR authentication required"
        assert w.raw("PING") == b"+PONG\r\n"  # PING/ECHO before AUTH, as in Tile38
        assert str(w.call("AUTH", "wrong")) == "ERR invalid password"
        assert w.raw("AUTH", "s3cret") == b"+OK\r\n"
        assert w.raw("SET", "a", "b", "POINT", 1, 2) == b"+OK\r\n"
    assert s.json("GET", "a", "b", password="s3cret")["ok"] is True
    with Wire(s.port) as w:
        doc = w.json("GET", "a", "b")
        assert doc == {"ok": False, "err": "authentication required", "elapsed": doc["elapsed"]}
    assert orjson.loads(http(s, "/GET+a+b")[2])["err"] == "authentication required"
    _, _, body = http(s, "/GET+a+b", headers={"Authorization": "s3cret"})
    assert orjson.loads(body)["object"] == {"type": "Point", "coordinates": [2, 1]}
    c = s.client(password="s3cret")
    assert c.execute_command("GET", "a", "b", "POINT") == [b"1", b"2"]


def test_auth_without_password_set(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        assert str(w.call("AUTH", "x")) == "ERR invalid password"


def test_config_set_get_rewrite(make_server: Callable[..., GeoServer]) -> None:
    s = make_server("cfg")
    with Wire(s.port) as w:
        assert w.call("CONFIG", "GET", "requirepass") == ["requirepass", ""]
        assert w.call("CONFIG", "SET", "requirepass", "pw1") == "OK"
        # as in Tile38, the connection that set the password must AUTH like everyone else
        assert str(w.call("CONFIG", "GET", "requirepass")) == "ERR authentication required"
        assert w.call("AUTH", "pw1") == "OK"
        assert w.call("CONFIG", "GET", "requirepass") == ["requirepass", "********"]  # redacted
        assert str(w.call("CONFIG", "SET", "nosuch", "1")) == "ERR Unsupported CONFIG parameter: nosuch"
        assert str(w.call("CONFIG", "SET", "maxmemory", "lots")).startswith("ERR ")
        assert w.call("CONFIG", "SET", "maxmemory", "1073741824") == "OK"
        assert w.call("CONFIG", "REWRITE") == "OK"
        doc = w.json("CONFIG", "GET", "maxmemory")
        assert doc["properties"] == {"maxmemory": "1073741824"}
    with Wire(s.port) as w:
        assert str(w.call("GET", "a", "b")) == "ERR authentication required"
        assert w.call("AUTH", "pw1") == "OK"
    saved = jsonlib.loads((s.dir / "config").read_text())
    assert saved["requirepass"] == "pw1"
    assert int(saved["maxmemory"]) == 1073741824
    s.stop()
    s.start(wait=False)
    wait_until(lambda: s.json("PING", password="pw1")["ok"], message="restart")
    with Wire(s.port) as w:
        assert str(w.call("KEYS", "*")) == "ERR authentication required"
        assert w.call("AUTH", "pw1") == "OK"
        assert w.call("CONFIG", "GET", "maxmemory") == ["maxmemory", "1073741824"]
    # a manager that gives the password, even empty, wins over the saved one (found in review:
    # a password dropped from a GeoCluster lived on in the members' saved config)
    s.stop()
    s.env["GEOSERVER_REQUIREPASS"] = ""
    s.start()
    with Wire(s.port) as w:
        assert w.call("KEYS", "*") == []
    s.stop()
    s.env["GEOSERVER_REQUIREPASS"] = "pw2"
    s.start(wait=False)
    wait_until(lambda: s.json("PING", password="pw2")["ok"], message="restart with pw2")


# --- server commands -------------------------------------------------------------------------

def test_server_fields_are_real(make_server: Callable[..., GeoServer]) -> None:
    s = make_server("stats")
    before = s.stats()
    assert before["pid"] == s.proc.pid  # type: ignore[union-attr]
    assert before["num_objects"] == 0 and before["num_collections"] == 0
    assert len(before["id"]) == 32
    for name in ("version", "threads", "cpus", "mem_alloc", "heap_size", "in_memory_size",
                 "num_points", "num_strings", "aof_size", "avg_item_size", "pointer_size",
                 "read_only", "http_transport", "max_heap_size", "heap_released", "num_hooks"):
        assert name in before, name
    assert before["cpus"] == os.cpu_count()
    assert before["mem_alloc"] > 1 << 20
    c = s.client()
    c.execute_command("SET", "a", "1", "POINT", 1, 2)
    c.execute_command("SET", "a", "2", "STRING", "x")
    c.execute_command("SET", "b", "1", "POINT", 1, 2)
    after = s.stats()
    assert (after["num_objects"], after["num_collections"], after["num_points"], after["num_strings"]) \
        == (3, 2, 2, 1)
    assert after["in_memory_size"] > 0
    assert after["aof_size"] == s.aof_path.stat().st_size > 0
    assert after["id"] == before["id"]
    flat = c.execute_command("SERVER")
    resp = dict(zip(flat[::2], flat[1::2], strict=True))
    assert resp[b"pid"] == s.proc.pid and resp[b"num_objects"] == 3  # type: ignore[union-attr]


def test_info(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        text = w.call("INFO")
        assert text.startswith("# Server\r\n") and "# Replication\r\nrole:master" in text
        assert f"\r\nprocess_id:{shared.proc.pid}\r\n" in text  # type: ignore[union-attr]
        repl = w.call("INFO", "replication")
        assert "# Server" not in repl and "role:master" in repl
    assert shared.client().info()["role"] == "master"  # redis-py's INFO parser reads it
    info = shared.json("INFO")["info"]
    assert info["role"] == "master" and info["process_id"] == shared.proc.pid  # type: ignore[union-attr]


def test_gc(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        assert w.raw("GC") == b"+OK\r\n"
        assert w.json("GC")["ok"] is True


def test_maxmemory_refuses_growing_writes_but_not_deletes(server):
    """CONFIG SET maxmemory below the process's memory: SET/FSET get Tile38's OOM error, reads
    and DEL still work, and raising the limit lets writes through again."""
    c = server.client()
    c.execute_command("SET", "fleet", "a", "POINT", 1, 2)
    assert c.execute_command("CONFIG", "SET", "maxmemory", "1024")
    wait_until(lambda: "OOM" in server.json("SET", "fleet", "b", "POINT", 1, 2).get("err", ""), 5,
               message="OOM refusal")
    assert server.json("FSET", "fleet", "a", "speed", 1)["err"].startswith("OOM command not allowed")
    assert server.json("GET", "fleet", "a")["ok"]
    assert server.json("DEL", "fleet", "a")["ok"]
    assert c.execute_command("CONFIG", "SET", "maxmemory", "0")
    wait_until(lambda: server.json("SET", "fleet", "b", "POINT", 1, 2)["ok"], 5, message="writes again")
