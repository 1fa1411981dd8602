"""TLS with required client certificates (`--tls-auth-clients yes`, the operator's
`spec.tls.clientAuth: required`), with real TLS connections on 127.0.0.1.

For TLS on `--port` (RESP and HTTP on one port) and on a `--tls-port` listener beside a
plaintext `--port`: no certificate, or one from another CA, is refused in the handshake
(TLS 1.3 reports it at the client's first read) and the server goes on serving; a certificate
of the configured CA is served, through redis-py, redis-cli `--tls --cert --key --cacert`,
a raw ssl socket and HTTPS (urllib). A follower started with `--follow` presents its own
certificate to such a leader (its `tls-cert-file`, or `tls-client-cert-file` when set); one
without a certificate, or with a certificate whose extended key usage lacks clientAuth, is
refused and reports why.
"""

from __future__ import annotations

import datetime
import shutil
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from helpers import GeoServer, free_port, wait_until
from tlscerts import CA, Pair, _write

pytestmark = pytest.mark.timeout(90)
REFUSED = (ssl.SSLError, ConnectionError, OSError)  # an alert, a reset, or EOF at the first read


@pytest.fixture
def ca(tmp_path: Path) -> CA:
    return CA(tmp_path / "certs")


@pytest.fixture
def stranger(tmp_path: Path) -> Pair:
    """A client certificate for 127.0.0.1 from a CA the server does not trust."""
    return CA(tmp_path / "other", "other").issue("stranger")


def context(ca: CA, pair: Pair | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    if pair is not None:
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx


def mtls_args(ca: CA, pair: Pair, *extra: str) -> list[str]:
    return ["--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key),
            "--tls-ca-cert-file", str(ca.path), "--tls-auth-clients", "yes", *extra]  # fmt: skip


@pytest.fixture(params=["port", "tls-port"])
def mtls(request, make_server, ca) -> tuple[GeoServer, int, Pair]:
    """(server, its TLS port, a valid client pair): TLS on --port, or on --tls-port beside a
    plaintext --port."""
    client = ca.issue("client")
    if request.param == "port":
        server = make_server("mtls", args=mtls_args(ca, ca.issue("server")), tls=context(ca, client))
        return server, server.port, client
    tls_port = free_port()
    server = make_server("mtls", args=mtls_args(ca, ca.issue("server"), "--tls-port", str(tls_port)))
    return server, tls_port, client


def ping_raw(server: GeoServer, port: int, ctx: ssl.SSLContext) -> bytes:
    """PING over a raw TLS socket; the bytes answered (the handshake may fail first)."""
    with socket.create_connection((server.host, port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname=server.host) as sock:
        sock.sendall(b"*1\r\n$4\r\nPING\r\n")
        return sock.recv(1024)


def refusal(server: GeoServer, port: int, ctx: ssl.SSLContext) -> str:
    """How a raw TLS PING was refused: the TLS alert / error, or "EOF"; AssertionError if served."""
    try:
        answer = ping_raw(server, port, ctx)
    except REFUSED as exc:
        return f"{type(exc).__name__}: {exc}"
    assert answer == b"", answer  # served: not refused
    return "EOF"


def tls_redis(server: GeoServer, port: int, ca: CA, pair: Pair | None = None) -> redis.Redis:
    certs = {"ssl_certfile": str(pair.cert), "ssl_keyfile": str(pair.key)} if pair else {}
    return redis.Redis(host=server.host, port=port, protocol=2, socket_timeout=5, ssl=True,
                       ssl_ca_certs=str(ca.path), **certs)  # fmt: skip


def alive(server: GeoServer, port: int, ca: CA, client: Pair) -> None:
    """The server still serves a valid client, and its process lives."""
    assert tls_redis(server, port, ca, client).ping() is True
    assert server.proc is not None and server.proc.poll() is None


def test_no_certificate_is_refused_and_the_server_keeps_serving(mtls, ca):
    server, port, client = mtls
    for _ in range(3):
        why = refusal(server, port, context(ca))
        assert "CERTIFICATE_REQUIRED" in why or why == "EOF", why
    with pytest.raises(redis.ConnectionError):
        tls_redis(server, port, ca).ping()
    alive(server, port, ca, client)
    assert ping_raw(server, port, context(ca, client)) == b"+PONG\r\n"


def test_a_certificate_from_another_ca_is_refused(mtls, ca, stranger):
    server, port, client = mtls
    why = refusal(server, port, context(ca, stranger))
    assert "UNKNOWN_CA" in why or why == "EOF", why
    with pytest.raises(redis.ConnectionError):
        tls_redis(server, port, ca, stranger).ping()
    alive(server, port, ca, client)


def test_a_valid_certificate_is_served_resp_and_http(mtls, ca):
    server, port, client = mtls
    r = tls_redis(server, port, ca, client)
    assert r.execute_command("SET", "fleet", "truck1", "POINT", 33, -115) is True
    assert orjson.loads(r.execute_command("GET", "fleet", "truck1"))["coordinates"] == [-115, 33]
    base = f"https://{server.host}:{port}"
    with urllib.request.urlopen(f"{base}/GET+fleet+truck1", context=context(ca, client), timeout=5) as resp:
        assert orjson.loads(resp.read())["object"]["coordinates"] == [-115, 33]
    with pytest.raises((urllib.error.URLError, *REFUSED)):  # HTTPS without a certificate
        urllib.request.urlopen(f"{base}/GET+fleet+truck1", context=context(ca), timeout=5).read()
    alive(server, port, ca, client)


def test_plaintext_port_beside_tls_port_needs_no_certificate(make_server, ca):
    """Client certificates are a TLS matter: the plaintext --port is not affected."""
    tls_port = free_port()
    server = make_server("both", args=mtls_args(ca, ca.issue("server"), "--tls-port", str(tls_port)))
    assert server.client().ping() is True
    with pytest.raises(redis.ConnectionError):
        tls_redis(server, tls_port, ca).ping()


def test_redis_cli_with_and_without_a_certificate(mtls, ca, stranger):
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    server, port, client = mtls
    base = [cli, "--tls", "--cacert", str(ca.path), "-h", server.host, "-p", str(port)]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], capture_output=True, text=True, timeout=10)

    cert = ("--cert", str(client.cert), "--key", str(client.key))
    out = run(*cert, "SET", "fleet", "t1", "POINT", "33", "-115")
    assert out.stdout.strip() == "OK", out
    out = run(*cert, "PING")
    assert out.stdout.strip() == "PONG", out
    for args in ((), ("--cert", str(stranger.cert), "--key", str(stranger.key))):
        out = run(*args, "PING")
        assert "PONG" not in out.stdout, out
        assert out.returncode != 0 or "error" in (out.stdout + out.stderr).lower(), out
    alive(server, port, ca, client)


def server_only(ca: CA, directory: Path) -> Pair:
    """A certificate for 127.0.0.1 whose extended key usage is serverAuth only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "server-only")]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return _write(directory, "server-only", cert, key)


@pytest.fixture
def mtls_leader(make_server, ca) -> GeoServer:
    leader = make_server("leader", args=mtls_args(ca, ca.issue("leader")), tls=context(ca, ca.issue("probe")))
    for i in range(20):
        leader.json("SET", "fleet", f"t{i}", "POINT", 33, -115)
    return leader


def follower_args(leader: GeoServer, ca: CA, pair: Pair | None) -> list[str]:
    own = ["--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key),
           "--tls-port", str(free_port())] if pair else []  # its own TLS beside a plaintext --port
    return ["--follow", f"{leader.host}:{leader.port}", "--tls-replication", "yes",
            "--tls-ca-cert-file", str(ca.path), *own]  # fmt: skip


def test_follower_presents_its_certificate_to_a_leader_requiring_one(make_server, mtls_leader, ca):
    follower = make_server("follower", args=follower_args(mtls_leader, ca, ca.issue("member")))
    wait_until(lambda: follower.stats().get("caught_up"), message="caught up over mTLS")
    mtls_leader.json("SET", "fleet", "late", "POINT", 1, 2)
    wait_until(lambda: follower.stats()["aof_size"] == mtls_leader.stats()["aof_size"],
               message="the live stream over mTLS")
    assert follower.json("GET", "fleet", "late")["object"]["coordinates"] == [2, 1]
    assert follower.stats()["replication_error"] == ""


@pytest.mark.parametrize("cert", ["none", "server-only"])
def test_follower_without_a_client_certificate_is_refused(make_server, mtls_leader, ca, tmp_path, cert):
    pair = server_only(ca, tmp_path / "eku") if cert == "server-only" else None
    follower = make_server("follower", args=follower_args(mtls_leader, ca, pair))
    stats = wait_until(lambda: (s := follower.stats())["replication_error"] and s,
                       message="a replication_error")
    assert stats["caught_up"] is False and stats["num_objects"] == 0, stats
    # TLS 1.3: the refusal arrives as an EOF after the handshake; the follower says what to check
    assert stats["replication_error"].startswith("leader closed the connection right after the TLS "
                                                 "handshake: does it require client certificates"), stats
    assert "clientAuth extended key usage" in stats["replication_error"]
    assert mtls_leader.json("PING")["ok"]  # the leader goes on serving


def test_a_separate_client_certificate_for_replication(make_server, mtls_leader, ca, tmp_path):
    """`tls-client-cert-file`/`tls-client-key-file` (Redis's names): a follower whose own
    certificate is for serverAuth only presents another one, with clientAuth, to its leader."""
    own = server_only(ca, tmp_path / "eku")
    client = ca.issue("replication-client")
    args = [*follower_args(mtls_leader, ca, own),
            "--tls-client-cert-file", str(client.cert), "--tls-client-key-file", str(client.key)]
    follower = make_server("follower", args=args)
    wait_until(lambda: follower.stats().get("caught_up"), message="caught up with the client certificate")
    assert follower.stats()["num_objects"] == 20 and follower.stats()["replication_error"] == ""
    r = follower.client()
    assert r.config_get("tls-client-cert-file") == {"tls-client-cert-file": str(client.cert)}


def test_a_client_certificate_without_its_key_is_a_clear_error(make_server, mtls_leader, ca):
    client = ca.issue("replication-client")
    args = [*follower_args(mtls_leader, ca, None), "--tls-client-cert-file", str(client.cert)]
    follower = make_server("follower", args=args)
    stats = wait_until(lambda: (s := follower.stats())["replication_error"] and s,
                       message="a replication_error")
    assert "tls-client-cert-file and tls-client-key-file go together" in stats["replication_error"], stats
