"""Who may do what over HTTP (issue 9): a web page the user opens must not be able to take the
server over (`GET /FOLLOW+attacker+9851` replaced the data in 3 s with Tile38's defaults), while
curl and Tile38's HTTP clients keep working. Real geoserver processes, raw HTTP requests carrying
the headers browsers send (Origin, Sec-Fetch-Site)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from helpers import GeoServer, free_port, wait_until
from wire import Wire

EVIL = "http://evil.example"
GOOD = "https://dash.example"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(Path(tmp_path_factory.mktemp("web")) / "data", args=["--cors-origins", GOOD]).start()
    with Wire(server.port) as w:
        assert w.call("SET", "known", "t1", "POINT", 33, -115) == "OK"
    yield server
    server.kill9()


def request(server: GeoServer, path: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None,
            port: int | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{port or server.port}{path}", data=body,
                                 headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def known_intact(server: GeoServer) -> None:
    assert server.json("GET", "known", "t1", "POINT")["point"] == {"lat": 33, "lon": -115}


@pytest.mark.parametrize("path", ["/FLUSHDB", "/FOLLOW+127.0.0.1+1", "/CONFIG+SET+requirepass+x",
                                  "/AOFSHRINK", "/READONLY+yes"])
def test_admin_commands_need_post(web: GeoServer, path: str) -> None:
    status, _, body = request(web, path)
    assert status == 405
    assert orjson.loads(body) == {"ok": False, "err": "admin commands over HTTP need POST", "elapsed": "0s"}
    known_intact(web)
    assert not web.json("SERVER")["stats"].get("following")


@pytest.mark.parametrize("headers", [{"Origin": EVIL}, {"Sec-Fetch-Site": "cross-site"},
                                     {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}])
def test_writes_from_another_sites_page_are_refused(web: GeoServer, headers: dict[str, str]) -> None:
    for method, path, body in (("GET", "/SET+known+t1+POINT+1+1", None), ("POST", "/", b"DEL known t1"),
                               ("POST", "/", b"FLUSHDB")):
        status, reply_headers, reply = request(web, path, method, body, headers)
        assert status == 403, (method, path, reply)
        assert b"cross-site requests may not run write or admin commands" in reply
        assert "Access-Control-Allow-Origin" not in reply_headers
    known_intact(web)


def test_reads_from_another_site_run_without_cors_headers(web: GeoServer) -> None:
    status, headers, body = request(web, "/GET+known+t1+POINT", headers={"Origin": EVIL})
    assert status == 200 and orjson.loads(body)["ok"]
    assert "Access-Control-Allow-Origin" not in headers  # the page cannot read the reply


def test_an_allowed_origin_gets_cors_and_may_write(web: GeoServer) -> None:
    status, headers, body = request(web, "/SET+known+t2+POINT+1+2", headers={"Origin": GOOD})
    assert status == 200 and orjson.loads(body)["ok"]
    assert headers["Access-Control-Allow-Origin"] == GOOD and headers["Vary"] == "Origin"
    status, headers, _ = request(web, "/", "OPTIONS", headers={"Origin": GOOD,
                                                              "Access-Control-Request-Method": "POST"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == GOOD
    assert "POST" in headers["Access-Control-Allow-Methods"]
    status, headers, _ = request(web, "/", "OPTIONS", headers={"Origin": EVIL})
    assert status == 204 and "Access-Control-Allow-Origin" not in headers
    assert web.json("DEL", "known", "t2")["ok"]


def test_curl_and_tile38_http_clients_keep_working(web: GeoServer) -> None:
    """No Origin, no Sec-Fetch-*: writes by GET, admin commands by POST."""
    status, _, body = request(web, "/SET+known+t3+POINT+3+4")
    assert status == 200 and orjson.loads(body)["ok"]
    status, _, body = request(web, "/", "POST", b"CONFIG GET maxclients")
    assert status == 200 and orjson.loads(body)["properties"] == {"maxclients": "10000"}
    status, _, body = request(web, "/DEL+known+t3")
    assert status == 200 and orjson.loads(body)["ok"]


def test_cors_star_restores_tile38s_any_origin(make_server) -> None:
    s = make_server("star", args=["--cors-origins", "*"])
    status, headers, _ = request(s, "/SET+k+a+POINT+1+1", headers={"Origin": EVIL})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == EVIL


def test_metrics_on_the_client_port_need_the_password(make_server) -> None:
    metrics_port = free_port()
    s = make_server("metrics", args=["--metrics-addr", f"127.0.0.1:{metrics_port}"], start=False)
    s.env["GEOSERVER_REQUIREPASS"] = "pw"
    s.start(wait=False)
    wait_until(lambda: s.json("PING", password="pw")["ok"], message="start")
    status, _, body = request(s, "/metrics")
    assert status == 401 and orjson.loads(body)["err"] == "authentication required"
    status, _, body = request(s, "/metrics", headers={"Authorization": "wrong"})
    assert status == 401
    status, _, body = request(s, "/metrics", headers={"Authorization": "pw"})
    assert status == 200 and b"tile38_aof_size" in body
    status, _, body = request(s, "/metrics", port=metrics_port)  # the scrape port stays open
    assert status == 200 and b"tile38_aof_size" in body


def test_http_body_before_auth_is_small(make_server) -> None:
    s = make_server("httppw", start=False)
    s.env["GEOSERVER_REQUIREPASS"] = "pw"
    s.start(wait=False)
    wait_until(lambda: s.json("PING", password="pw")["ok"], message="start")
    body = b"SET k big STRING " + b"x" * 20000
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        reply = sock.recv(65536)
    assert reply.startswith(b"HTTP/1.1 400") and b"request too large (limit 16384 bytes)" in reply
    status, _, reply = request(s, "/", "POST", body, {"Authorization": "pw"})
    assert status == 200 and orjson.loads(reply)["ok"]


def test_config_get_redacts_passwords(make_server) -> None:
    s = make_server("redact", start=False)
    s.env["GEOSERVER_REQUIREPASS"] = "pw"
    s.env["GEOSERVER_LEADERAUTH"] = "lpw"
    s.start(wait=False)
    wait_until(lambda: s.json("PING", password="pw")["ok"], message="start")
    props = s.json("CONFIG", "GET", "*", password="pw")["properties"]
    assert props["requirepass"] == props["leaderauth"] == "********"
    assert "pw" not in orjson.dumps(props).decode().replace("********", "")
