"""Bad input gets Tile38's error reply or a closed connection, never a crash: after each case
another client is served and the data acknowledged before it is intact."""

from __future__ import annotations

import random
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import GeoServer
from wire import Wire, encode

MAX_REQUEST = 64 * 1024


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(Path(tmp_path_factory.mktemp("bad")) / "data",
                       args=["--max-request-size", str(MAX_REQUEST)]).start()
    with Wire(server.port) as w:
        assert w.call("SET", "known", "t1", "FIELD", "speed", 42, "POINT", 33, -115) == "OK"
        assert w.call("SET", "known", "t2", "STRING", "hello") == "OK"
    yield server
    server.kill9()


def assert_intact(server: GeoServer) -> None:
    """A new client is served and the acknowledged data is unchanged."""
    with Wire(server.port) as w:
        assert w.call("PING") == "PONG"
        assert w.call("GET", "known", "t1", "WITHFIELDS", "POINT") == [["33", "-115"], ["speed", "42"]]
        assert w.call("GET", "known", "t2") == "hello"
        assert w.call("KEYS", "*") == ["known"]


def raw_exchange(server: GeoServer, payload: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send bytes, read until the server closes or goes quiet; (reply bytes, closed?)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            return b"", True
        data = b""
        sock.settimeout(1.0)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return data, True
                data += chunk
        except ConnectionResetError:
            return data, True
        except TimeoutError:
            return data, False


# --- malformed RESP ---------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b"*2\r\n$3\r\nfoo\r\n+OK\r\n",       # a simple string where a bulk string must be
    b"*2\r\n$3\r\nfoo\r\n:12\r\n",        # an integer inside a request
    b"*x\r\n",                            # bad array length
    b"*1\r\n$x\r\nPING\r\n",              # bad bulk length
    b"*1\r\n$4\r\nPINGXX\r\n",            # bulk longer than declared
    b"*1\r\n*1\r\n$4\r\nPING\r\n",         # nested array
], ids=["simple-in-array", "int-in-array", "bad-array-len", "bad-bulk-len", "bulk-overrun", "nested"])
def test_malformed_resp_gets_error_then_close(shared: GeoServer, payload: bytes) -> None:
    reply, closed = raw_exchange(shared, encode("SET", "known", "t3", "POINT", 1, 2) + payload)
    assert reply.startswith(b"+OK\r\n"), reply
    # hiredis does not check the CRLF after a bulk: an overrun fails at the next element
    assert reply.endswith(b"\r\n") and b"\r\n-ERR Protocol error" in reply, reply
    assert closed
    assert_intact(shared)
    with Wire(shared.port) as w:  # the command before the garbage was applied
        assert w.call("GET", "known", "t3", "POINT") == ["1", "2"]
        assert w.call("DEL", "known", "t3") == 1


def test_empty_array_is_ignored_or_refused(shared: GeoServer) -> None:
    reply, _ = raw_exchange(shared, b"*0\r\n" + encode("PING"))
    assert reply in (b"+PONG\r\n",) or reply.startswith(b"-ERR"), reply
    assert_intact(shared)


# --- command-level errors keep the connection -----------------------------------------------

ERRORS: list[tuple[str, str, str]] = [
    # command, RESP error, JSON error
    ("SET known", "wrong number of arguments for 'set' command", "invalid number of arguments"),
    ("GET known", "wrong number of arguments for 'get' command", "invalid number of arguments"),
    ("set known x", "wrong number of arguments for 'set' command", "invalid number of arguments"),
    ("SET known x POINT 1", "wrong number of arguments for 'set' command", "invalid number of arguments"),
    ("FOO bar", "unknown command 'FOO'", "unknown command 'FOO'"),
    ("SET known x POINT 91 0", "invalid latitude '91': must be within -90..90",
     "invalid latitude '91': must be within -90..90"),
    ("SET known x POINT 0 -181", "invalid longitude '-181': must be within -180..180",
     "invalid longitude '-181': must be within -180..180"),
    ("SET known x POINT abc 1", "invalid argument 'abc'", "invalid argument 'abc'"),
    ("SET known x POINT 1 1e", "invalid argument '1e'", "invalid argument '1e'"),
    ("SET known x POINT nan 1", "invalid argument 'nan'", "invalid argument 'nan'"),
    ("SET known x POINT 1 inf", "invalid argument 'inf'", "invalid argument 'inf'"),
    ("SET known x POINT -Infinity 1", "invalid argument '-Infinity'", "invalid argument '-Infinity'"),
    ("SET known x BOUNDS 1 1 0 0", "invalid bounds: min must not exceed max",
     "invalid bounds: min must not exceed max"),
    ("SET known x BOUNDS 1 1 95 2", "invalid latitude '95': must be within -90..90",
     "invalid latitude '95': must be within -90..90"),
    ("SET known x EX soon POINT 1 1", "invalid argument 'soon'", "invalid argument 'soon'"),
    ("SET known x HASH !!!", "invalid geohash '!!!'", "invalid geohash '!!!'"),
    ("SET known x FIELD speed", "wrong number of arguments for 'set' command", "invalid number of arguments"),
]

BAD_GEOJSON = [
    "{not json",
    "[1,2]",
    '{"type":"Circle","coordinates":[1,2]}',
    '{"coordinates":[1,2]}',
    '{"type":"Point","coordinates":[1]}',
    '{"type":"Point","coordinates":["a","b"]}',
    '{"type":"Point","coordinates":[0,95]}',
    '{"type":"Point"}',
    '{"type":"Polygon","coordinates":[[1,2]]}',
    '{"type":"Polygon","coordinates":[[[200,0],[201,0],[201,1],[200,0]]]}',
    '{"type":"LineString","coordinates":5}',
    '{"type":"Feature","geometry":{"type":"Nope"}}',
    '{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point","coordinates":[1]}}]}',
    '{"type":"Point","coordinates":[NaN,1]}',
]


@pytest.mark.parametrize("json", [False, True], ids=["resp", "json"])
def test_command_errors(shared: GeoServer, json: bool) -> None:
    with Wire(shared.port) as w:
        for line, resp_err, json_err in ERRORS:
            args = shlex.split(line)
            if json:
                doc = w.json(*args)
                assert doc["ok"] is False and doc["err"] == json_err, line
            else:
                reply = w.call(*args)
                assert isinstance(reply, Exception) and str(reply) == "ERR " + resp_err, (line, reply)
        for text in BAD_GEOJSON:
            if json:
                doc = w.json("SET", "known", "x", "OBJECT", text)
                assert doc["ok"] is False and doc["err"].startswith(("invalid", "missing type")), (text, doc)
            else:
                reply = w.call("SET", "known", "x", "OBJECT", text)
                refused = str(reply).startswith(("ERR invalid", "ERR missing type"))
                assert isinstance(reply, Exception) and refused, (text, reply)
        # nothing was stored and the connection still works
        got = w.json("GET", "known", "x") if json else w.call("GET", "known", "x")
        assert got is None or got["err"] == "id not found"
    assert_intact(shared)


def test_errors_over_http(shared: GeoServer) -> None:
    import urllib.request

    for path, err in [("/SET+known", "invalid number of arguments"),
                      ("/SET+known+x+POINT+nan+1", "invalid argument 'nan'"),
                      ("/FOO", "unknown command 'FOO'")]:
        with urllib.request.urlopen(f"http://127.0.0.1:{shared.port}{path}", timeout=10) as r:
            doc = orjson.loads(r.read())
        assert doc["ok"] is False and doc["err"] == err, path
    assert_intact(shared)


def test_malformed_http_request(shared: GeoServer) -> None:
    reply, closed = raw_exchange(shared, b"GET /PING HTTP/1.1\r\nthis is not a header\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400"), reply
    assert closed
    assert_intact(shared)


# --- size limits ------------------------------------------------------------------------------

def test_oversized_bulk_closes_the_connection(shared: GeoServer) -> None:
    big = MAX_REQUEST * 4
    head = b"*6\r\n$3\r\nSET\r\n$5\r\nknown\r\n$2\r\nt9\r\n$6\r\nSTRING\r\n$%d\r\n" % big
    with socket.create_connection(("127.0.0.1", shared.port), timeout=10) as sock:
        closed = False
        try:
            sock.sendall(head)
            for _ in range(big // 8192):
                sock.sendall(b"x" * 8192)
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        if not closed:
            sock.settimeout(5)
            try:
                data = sock.recv(65536)
                while data and not data.endswith(b"\r\n"):
                    data += sock.recv(65536)
                closed = not data or (data.startswith(b"-ERR") and not sock.recv(65536))
            except ConnectionResetError:
                closed = True
    assert closed
    assert_intact(shared)
    with Wire(shared.port) as w:
        assert w.call("EXISTS", "known", "t9") == 0


def test_oversized_inline_line_closes_the_connection(shared: GeoServer) -> None:
    reply, closed = raw_exchange(shared, b"SET known t9 STRING " + b"y" * (MAX_REQUEST * 2))
    assert closed
    assert reply == b"" or reply.startswith(b"-ERR"), reply[:100]
    assert_intact(shared)


def test_request_just_under_the_limit_is_served(shared: GeoServer) -> None:
    value = "v" * (MAX_REQUEST // 2)
    with Wire(shared.port) as w:
        assert w.call("SET", "big", "b1", "STRING", value) == "OK"
        assert w.call("GET", "big", "b1") == value
        assert w.call("DROP", "big") == 1


# --- garbage and rude clients -----------------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_binary_garbage(shared: GeoServer, seed: int) -> None:
    rnd = random.Random(seed)
    garbage = bytes(rnd.randrange(256) for _ in range(4096))
    if seed % 2:
        garbage = b"*3\r\n$3\r\nSET\r\n" + garbage  # garbage inside a RESP request
    raw_exchange(shared, garbage)
    assert_intact(shared)


def test_client_disconnects_mid_command(shared: GeoServer) -> None:
    cuts = (b"*6\r\n$3\r\nSET\r\n$5\r\nkno", b"SET known t1 POINT 0 0",
            b"GET /SET+known+t1+POINT+0+0 HTTP/1.1\r\nHo")
    for cut in cuts:
        with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
            sock.sendall(cut)
    assert_intact(shared)


def test_client_disconnects_without_reading_replies(shared: GeoServer) -> None:
    payload = b"".join(encode("GET", "known", "t1") for _ in range(20000))
    with socket.create_connection(("127.0.0.1", shared.port), timeout=5) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(payload)
    assert_intact(shared)


def test_many_bad_clients_while_a_good_one_writes(shared: GeoServer) -> None:
    with Wire(shared.port) as good:
        for i in range(20):
            raw_exchange(shared, b"*1\r\n$x\r\n", timeout=2)
            assert good.call("SET", "good", f"g{i}", "POINT", 33, -115) == "OK"
        assert good.call("STATS", "good")[0][3] == 20
        assert good.call("DROP", "good") == 1
    assert_intact(shared)


def test_long_lived_connection_with_long_arguments_is_not_cut_off(make_server):
    """The request-size limit bounds one incomplete request, not the sum of many: thousands of
    valid commands with 10+ byte arguments on one connection under a small limit all succeed."""
    s = make_server("long", args=["--max-request-size", "1000"])
    c = s.client()
    pipe = c.pipeline(transaction=False)
    for i in range(3000):
        pipe.execute_command("SET", "fleet-with-a-long-name", f"truck-number-{i:06d}",
                             "POINT", "33.1234567", "-115.1234567")
    assert all(pipe.execute())
    assert s.stats()["num_objects"] == 3000
