"""Fuzz findings in request framing, against a real geoserver: an element of a request array
that is not a bulk string (RESP3 maps, sets, pushes, attributes, scalars; nested arrays) gets
Redis's `-ERR Protocol error: expected '$', got 'X'` and the connection closes, where a map with
an array key used to kill the connection without a reply (hiredis raised TypeError) and a
nested `*3000000000` made hiredis reserve 22 GiB (5 s to free it). The same bytes inside bulk
strings are data: stored and returned exactly, through redis-py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import GeoServer

GET = b"*3\r\n$3\r\nGET\r\n$5\r\nfleet\r\n"  # a request whose last element is the bad one


@pytest.fixture(scope="module", params=["fastpath", "python"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    env = {} if request.param == "fastpath" else {"GEOSERVER_FASTPATH": "0"}
    srv = GeoServer(Path(tmp_path_factory.mktemp("resp3")) / "data", env=env).start()
    assert srv.client().execute_command("SET", "fleet", "t1", "POINT", 33, -115) is True
    yield srv
    srv.kill9()


def exchange(server: GeoServer, payload: bytes, pieces: int = 1) -> tuple[bytes, bool]:
    """Send `payload` (in `pieces` writes), read until the server closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        size = max(1, -(-len(payload) // pieces))
        try:
            for i in range(0, len(payload), size):
                sock.sendall(payload[i:i + size])
        except (BrokenPipeError, ConnectionResetError):
            pass
        sock.settimeout(3)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            pass
        return data, True


def vm_peak_kb(server: GeoServer) -> int:
    assert server.proc is not None
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmPeak:")).split()[1])


def assert_serving(server: GeoServer) -> None:
    c = server.client()
    assert c.ping() is True
    assert c.execute_command("GET", "fleet", "t1", "POINT") == [b"33", b"-115"]


ELEMENTS = {  # type byte: one element of that type
    "*": b"*1\r\n$1\r\na\r\n",
    "%": b"%1\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n",  # the finding: an array as a map key
    "~": b"~1\r\n*1\r\n$1\r\na\r\n",
    ">": b">1\r\n$1\r\na\r\n",
    "|": b"|1\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
    "=": b"=5\r\ntxt:a\r\n",
    "(": b"(12345678901234567890\r\n",
    ",": b",1.5\r\n",
    "#": b"#t\r\n",
    "_": b"_\r\n",
    "!": b"!3\r\nabc\r\n",
    ":": b":1\r\n",
    "+": b"+OK\r\n",
    "-": b"-ERR x\r\n",
}


@pytest.mark.parametrize("byte", sorted(ELEMENTS))
def test_an_element_that_is_not_a_bulk_string_is_refused_with_its_type(server: GeoServer, byte: str) -> None:
    for pieces in (1, 3):
        reply, closed = exchange(server, b"*1\r\n$4\r\nPING\r\n" + GET + ELEMENTS[byte], pieces)
        assert reply == b"+PONG\r\n-ERR Protocol error: expected '$', got '" + byte.encode() + b"'\r\n", reply
        assert closed
    assert_serving(server)


@pytest.mark.parametrize("header", [b"*3000000000", b"~3000000000", b">4294967295", b"%3000000000"])
def test_a_nested_container_header_is_refused_before_anything_is_allocated(
        server: GeoServer, header: bytes) -> None:
    before = vm_peak_kb(server)
    reply, closed = exchange(server, GET + header + b"\r\n")
    assert reply == b"-ERR Protocol error: expected '$', got '" + header[:1] + b"'\r\n", reply
    assert closed
    assert vm_peak_kb(server) - before < 1 << 20  # under 1 GiB more: nothing near 22 GiB reserved
    assert_serving(server)


def test_the_same_bytes_inside_bulk_strings_are_data(server: GeoServer) -> None:
    values = [b"\r\n*3000000000\r\n", b"\r\n%1\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n", b"\n~9999999",
              b"\r\n>1\r\n|1\r\n=5\r\n", b"*1\r\n", b"\r\n*"]
    c = server.client()
    pipe = c.pipeline(transaction=False)
    for i, value in enumerate(values):
        pipe.execute_command("SET", b"blobs", b"\r\n*%d\r\n" % i, "STRING", value)
        pipe.execute_command("GET", b"blobs", b"\r\n*%d\r\n" % i)
    replies = pipe.execute()
    assert replies == [x for v in values for x in (True, v)]
    for i, value in enumerate(values):  # one request per read as well
        assert c.execute_command("GET", b"blobs", b"\r\n*%d\r\n" % i) == value
    ids = c.execute_command("SCAN", b"blobs", "IDS")
    assert list(ids) == [0, [b"\r\n*%d\r\n" % i for i in range(len(values))]]
