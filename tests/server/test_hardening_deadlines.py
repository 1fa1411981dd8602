"""Request deadlines (issue 9, slow-loris): a RESP or inline request trickled a byte at a time
is disconnected after `request-timeout`, an HTTP request after `http-request-timeout`, both by
the once-a-second sweep; a client that sends complete requests slowly is never touched.
Real geoserver, real sockets; the deadlines are 1 s so the tests stay short (no timing is
asserted beyond "closed within a generous bound" and "still served")."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from helpers import GeoServer
from wire import Wire

BOUND = 15.0  # seconds a trickling connection may live at most here (deadline 1 s + sweep)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    srv = GeoServer(tmp_path_factory.mktemp("deadlines") / "data",
                    args=["--request-timeout", "1", "--http-request-timeout", "1"]).start()
    yield srv
    srv.kill9()


def trickle(port: int, head: bytes, byte: bytes = b"x") -> float:
    """Send `head`, then one byte every 0.2 s until the server closes the connection; the
    seconds it lived. Fails if it is still open after BOUND."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=BOUND) as sock:
        sock.sendall(head)
        sock.settimeout(0.2)
        while time.monotonic() - started < BOUND:
            try:
                if sock.recv(1 << 16) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            except ConnectionResetError:
                return time.monotonic() - started
            try:
                sock.sendall(byte)
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
    raise AssertionError(f"a trickled request {head!r} was still open after {BOUND} s")


def test_resp_trickle_is_disconnected(server: GeoServer) -> None:
    trickle(server.port, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n")
    assert "request not complete within 1 s" in server.log()
    assert server.json("PING")["ok"]


def test_inline_trickle_is_disconnected(server: GeoServer) -> None:
    trickle(server.port, b"SET k a STRING ")
    assert server.json("PING")["ok"]


def test_http_trickle_is_disconnected(server: GeoServer) -> None:
    trickle(server.port, b"GET /PING HTTP/1.1\r\nHost: x\r\n", b"X")
    assert "HTTP request not complete within 1 s" in server.log()


def test_slow_complete_requests_are_kept(server: GeoServer) -> None:
    """Complete requests spread over several deadlines, and a request whose tail arrives
    within its deadline after a complete one in the same read: all served."""
    with Wire(server.port) as w:
        for _ in range(6):
            assert w.call("PING") == "PONG"
            time.sleep(0.4)
        w.send(b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPI")
        time.sleep(0.5)
        w.send(b"NG\r\n")
        assert w.read_frame() == b"+PONG\r\n" and w.read_frame() == b"+PONG\r\n"
        time.sleep(1.5)  # idle with nothing half-sent: not a trickle (`timeout` is 0)
        assert w.call("PING") == "PONG"


def test_deadlines_are_config_properties(server: GeoServer) -> None:
    c = server.client()
    assert c.execute_command("CONFIG", "GET", "request-timeout") == [b"request-timeout", b"1"]
    assert c.execute_command("CONFIG", "GET", "http-request-timeout") == [b"http-request-timeout", b"1"]
    c.execute_command("CONFIG", "SET", "request-timeout", "3")
    assert c.execute_command("CONFIG", "GET", "request-timeout")[1] == b"3"
    with pytest.raises(Exception, match=r"(?i)invalid|argument"):
        c.execute_command("CONFIG", "SET", "request-timeout", "soon")
    c.execute_command("CONFIG", "SET", "request-timeout", "1")
