"""TLS on 127.0.0.1 with real clients (docs/security.md#tls): redis-py, redis-cli --tls, HTTPS
through urllib, a plaintext client on a TLS-only port, client certificates, a follower of a
TLS leader (and one with the wrong CA), certificate reload by SIGHUP and by file change."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import redis
from helpers import GeoServer, free_port, wait_until
from tlscerts import CA, Pair, serial_of

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "certs")


def tls_args(pair: Pair, *extra: str) -> list[str]:
    return ["--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key), *extra]


def client_context(ca: CA, pair: Pair | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if pair is not None:
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx


def served_serial(server: GeoServer, ctx: ssl.SSLContext, port: int | None = None) -> int:
    """The serial of the certificate a new connection is shown."""
    with socket.create_connection((server.host, port or server.port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server.host) as sock:
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return serial_of(der)


def tls_redis(server: GeoServer, ca: CA, port: int | None = None, **kw) -> redis.Redis:
    return redis.Redis(host=server.host, port=port or server.port, protocol=2, socket_timeout=5,
                       ssl=True, ssl_ca_certs=str(ca.path), **kw)


@pytest.fixture
def tls_server(make_server, ca: CA) -> tuple[GeoServer, Pair]:
    pair = ca.issue("server")
    return make_server("tls", args=tls_args(pair), tls=client_context(ca)), pair


def test_redis_py_over_tls(tls_server, ca):
    server, pair = tls_server
    r = tls_redis(server, ca)
    assert r.execute_command("SET", "fleet", "truck1", "POINT", 33, -115) is True
    assert orjson.loads(r.execute_command("GET", "fleet", "truck1")) == {
        "type": "Point", "coordinates": [-115, 33]}
    pipe = r.pipeline(transaction=False)
    for i in range(200):
        pipe.execute_command("SET", "fleet", f"t{i}", "POINT", 33, -115)
    assert pipe.execute() == [True] * 200
    assert server.json("GET", "fleet", "t7")["ok"] is True  # helpers' json() over TLS too
    assert served_serial(server, client_context(ca)) == pair.serial


def test_http_over_tls(tls_server, ca):
    server, _ = tls_server
    base = f"https://{server.host}:{server.port}"
    ctx = client_context(ca)
    with urllib.request.urlopen(f"{base}/SET+fleet+truck1+POINT+33+-115", context=ctx, timeout=5) as resp:
        assert orjson.loads(resp.read())["ok"] is True
    with urllib.request.urlopen(f"{base}/GET+fleet+truck1", context=ctx, timeout=5) as resp:
        assert orjson.loads(resp.read())["object"] == {"type": "Point", "coordinates": [-115, 33]}
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{base}/PING", context=ssl.create_default_context(), timeout=5)


def test_redis_cli_tls(tls_server, ca):
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    server, _ = tls_server
    base = [cli, "--tls", "--cacert", str(ca.path), "-h", server.host, "-p", str(server.port)]
    out = subprocess.run([*base, "SET", "fleet", "t1", "POINT", "33", "-115"],
                         capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "OK", out
    out = subprocess.run([*base, "PING"], capture_output=True, text=True, timeout=10)
    assert out.stdout.strip() == "PONG", out


def test_plaintext_client_refused_on_tls_port(tls_server, ca):
    server, _ = tls_server
    # RESP, inline and HTTP in plaintext: the handshake fails, the connection ends, no reply
    for payload in (b"*1\r\n$4\r\nPING\r\n", b"PING\r\n", b"GET /PING HTTP/1.1\r\nHost: x\r\n\r\n"):
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(payload)
            received = b""
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass
            assert b"PONG" not in received and b"ok" not in received
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host=server.host, port=server.port, socket_timeout=5).ping()
    assert tls_redis(server, ca).ping() is True  # still serving TLS clients
    assert server.proc is not None and server.proc.poll() is None


def test_tls_port_beside_plaintext(make_server, ca):
    pair = ca.issue("server")
    tls_port = free_port()
    server = make_server("both", args=tls_args(pair, "--tls-port", str(tls_port)))
    plain = server.client()
    assert plain.execute_command("SET", "k", "a", "POINT", 1, 2) is True  # --port: plaintext
    r = tls_redis(server, ca, port=tls_port)
    assert orjson.loads(r.execute_command("GET", "k", "a"))["coordinates"] == [2, 1]
    assert served_serial(server, client_context(ca), tls_port) == pair.serial


def test_tls_client_on_plaintext_port_fails_clearly(server, ca):
    with pytest.raises(redis.ConnectionError):
        tls_redis(server, ca).ping()
    assert server.client().ping() is True


def test_client_certificates(make_server, ca, tmp_path):
    pair = ca.issue("server")
    args = tls_args(pair, "--tls-ca-cert-file", str(ca.path), "--tls-auth-clients", "yes")
    client_pair = ca.issue("client")
    server = make_server("mtls", args=args, tls=client_context(ca, client_pair))
    assert tls_redis(server, ca, ssl_certfile=str(client_pair.cert),
                     ssl_keyfile=str(client_pair.key)).ping() is True
    with pytest.raises(redis.ConnectionError):
        tls_redis(server, ca).ping()  # no certificate
    stranger = CA(tmp_path / "other").issue("client")
    with pytest.raises(redis.ConnectionError):
        tls_redis(server, ca, ssl_certfile=str(stranger.cert), ssl_keyfile=str(stranger.key)).ping()
    assert server.json("PING")["ok"]


def test_optional_client_certificates(make_server, ca):
    pair = ca.issue("server")
    args = tls_args(pair, "--tls-ca-cert-file", str(ca.path), "--tls-auth-clients", "optional")
    server = make_server("opt", args=args, tls=client_context(ca))
    assert tls_redis(server, ca).ping() is True
    client_pair = ca.issue("client")
    assert tls_redis(server, ca, ssl_certfile=str(client_pair.cert),
                     ssl_keyfile=str(client_pair.key)).ping() is True


@pytest.mark.parametrize("args, message", [
    (["--tls-cert-file", "{cert}"], "needs both tls-cert-file and tls-key-file"),
    (["--tls-cert-file", "{cert}", "--tls-key-file", "{missing}"], "cannot set up TLS"),
    (["--tls-cert-file", "{cert}", "--tls-key-file", "{key}", "--tls-auth-clients", "yes"],
     "tls-auth-clients yes needs tls-ca-cert-file"),
])
def test_bad_tls_settings_stop_the_start(make_server, ca, tmp_path, args, message):
    pair = ca.issue("server")
    args = [a.format(cert=pair.cert, key=pair.key, missing=tmp_path / "nope.key") for a in args]
    server = make_server("bad", args=args, start=False)
    server.start(wait=False)
    assert server.proc is not None
    assert server.proc.wait(15) != 0
    server.stop()
    assert message in server.log()


def test_follower_of_a_tls_leader(make_server, ca):
    leader = make_server("leader", args=tls_args(ca.issue("leader")), tls=client_context(ca))
    r = tls_redis(leader, ca)
    for i in range(50):
        r.execute_command("SET", "fleet", f"t{i}", "POINT", 33, -115)
    follower = make_server("follower", args=[
        "--follow", f"{leader.host}:{leader.port}", "--tls-replication", "yes",
        "--tls-ca-cert-file", str(ca.path)])
    wait_until(lambda: follower.stats().get("caught_up"), message="follower caught up over TLS")
    r.execute_command("SET", "fleet", "late", "POINT", 1, 2)
    wait_until(lambda: follower.stats()["aof_size"] == leader.stats()["aof_size"],
               message="live stream over TLS")
    assert follower.json("GET", "fleet", "late")["object"]["coordinates"] == [2, 1]
    assert follower.stats()["replication_error"] == ""


def test_follower_with_the_wrong_ca(make_server, ca, tmp_path):
    leader = make_server("leader", args=tls_args(ca.issue("leader")), tls=client_context(ca))
    other = CA(tmp_path / "other")
    follower = make_server("follower", args=[
        "--follow", f"{leader.host}:{leader.port}", "--tls-replication", "yes",
        "--tls-ca-cert-file", str(other.path)])
    stats = wait_until(lambda: (s := follower.stats())["replication_error"] and s,
                       message="a replication_error")
    assert "CERTIFICATE_VERIFY_FAILED" in stats["replication_error"], stats
    assert stats["caught_up"] is False
    # FOLLOW at run time checks the leader over the same TLS, and says why it cannot
    with pytest.raises(redis.ResponseError, match="CERTIFICATE_VERIFY_FAILED"):
        follower.client().execute_command("FOLLOW", leader.host, leader.port)


def test_follower_without_tls_replication(make_server, ca):
    leader = make_server("leader", args=tls_args(ca.issue("leader")), tls=client_context(ca))
    follower = make_server("follower", args=["--follow", f"{leader.host}:{leader.port}"])
    stats = wait_until(lambda: (s := follower.stats())["replication_error"] and s,
                       message="a replication_error")
    assert stats["replication_error"] == "leader closed the connection"
    assert leader.json("PING")["ok"]


def test_follow_command_and_client_certificates(make_server, ca):
    """FOLLOW at run time to a leader that requires client certificates: the follower
    presents its own tls-cert-file."""
    leader = make_server("leader", args=tls_args(
        ca.issue("leader"), "--tls-ca-cert-file", str(ca.path), "--tls-auth-clients", "yes"),
        tls=client_context(ca, ca.issue("probe")))
    leader.json("SET", "fleet", "a", "POINT", 1, 2)
    member = ca.issue("member")
    follower = make_server("follower", args=tls_args(
        member, "--tls-port", str(free_port()), "--tls-replication", "yes",
        "--tls-ca-cert-file", str(ca.path)))
    assert follower.client().execute_command("FOLLOW", leader.host, leader.port) in (True, b"OK")
    wait_until(lambda: follower.stats().get("caught_up"), message="caught up with mTLS")
    assert follower.json("GET", "fleet", "a")["object"]["coordinates"] == [2, 1]


def _replace(old: Pair, new: Pair) -> None:
    """Put a new pair where the server reads the old one, as a renewal would."""
    os.replace(new.cert, old.cert)
    os.replace(new.key, old.key)


def test_reload_on_sighup(tls_server, ca):
    server, pair = tls_server
    ctx = client_context(ca)
    kept = tls_redis(server, ca)
    assert kept.ping() is True
    renewed = ca.issue("renewed")
    _replace(pair, renewed)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: served_serial(server, ctx) == renewed.serial, message="the new certificate")
    assert kept.ping() is True  # an open connection keeps working
    assert "TLS certificate reloaded" in server.log()


def test_reload_when_the_files_change(make_server, ca):
    pair = ca.issue("server")
    server = make_server("watch", args=tls_args(pair, "--tls-reload-interval", "1"), tls=client_context(ca))
    renewed = ca.issue("renewed")
    time.sleep(0.05)  # a different mtime even on coarse clocks
    _replace(pair, renewed)
    wait_until(lambda: served_serial(server, client_context(ca)) == renewed.serial, timeout=10,
               message="the new certificate without a signal")


def test_failed_reload_keeps_the_certificate(tls_server, ca):
    server, pair = tls_server
    other = ca.issue("other")
    os.replace(other.key, pair.key)  # a key that does not match the certificate
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "TLS reload failed" in server.log(), message="the failure logged")
    assert served_serial(server, client_context(ca)) == pair.serial
    assert tls_redis(server, ca).ping() is True


def test_config_set_takes_effect_at_the_next_reload(make_server, ca):
    pair = ca.issue("server")
    server = make_server("cfg", args=tls_args(pair, "--tls-reload-interval", "0"), tls=client_context(ca))
    renewed = ca.issue("renewed")  # new paths, the old files untouched
    r = tls_redis(server, ca)
    assert r.config_set("tls-cert-file", str(renewed.cert)) is True
    assert r.config_set("tls-key-file", str(renewed.key)) is True
    assert r.config_get("tls-cert-file") == {"tls-cert-file": str(renewed.cert)}
    assert served_serial(server, client_context(ca)) == pair.serial  # not before a reload
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: served_serial(server, client_context(ca)) == renewed.serial,
               message="the configured certificate after SIGHUP")
