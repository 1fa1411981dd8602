"""The --metrics-addr listener speaks TLS with `tls-metrics yes` on a TLS server (issue 9): the
same live context as the client port, so the same certificate, the same client-certificate
rule and the same reloads. Without it (the default: the operator's kubelet probes read
/healthz there in plaintext) it stays plaintext even when the client port is TLS.
Real geoserver, real TLS connections (urllib with the test CA) on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from helpers import GeoServer, free_port, wait_until
from tlscerts import CA, Pair, serial_of

pytestmark = pytest.mark.timeout(60)


def start(make_server, ca: CA, pair: Pair, *extra: str,
          ctx: ssl.SSLContext | None = None) -> tuple[GeoServer, int]:
    port = free_port()
    server = make_server("mtls", tls=ctx or trusting(ca), args=[
        "--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key),
        "--metrics-addr", f"127.0.0.1:{port}", "--tls-metrics", "yes", *extra])
    wait_until(lambda: _connects(port), message="the metrics listener")
    return server, port


def _connects(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        return True


def get(url: str, ctx: ssl.SSLContext | None = None) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10, context=ctx) as reply:
        return reply.status, reply.read().decode()


def trusting(ca: CA) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.path))


def serial_at(port: int, ca: CA) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            trusting(ca).wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return serial_of(der)


def test_metrics_listener_serves_tls(make_server, tmp_path: Path) -> None:
    ca = CA(tmp_path / "certs")
    pair = ca.issue("server")
    server, port = start(make_server, ca, pair)
    status, text = get(f"https://127.0.0.1:{port}/metrics", trusting(ca))
    assert status == 200 and "tile38_" in text
    assert get(f"https://127.0.0.1:{port}/healthz", trusting(ca))[0] == 200
    assert serial_at(port, ca) == pair.serial
    # plaintext HTTP on it gets no HTTP reply; a client not trusting the CA fails the handshake
    with pytest.raises((urllib.error.URLError, OSError)):
        get(f"http://127.0.0.1:{port}/metrics")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(f"https://127.0.0.1:{port}/metrics", ssl.create_default_context())
    assert "tls=True" in server.log() or '"tls": true' in server.log()
    # a renewed certificate (SIGHUP) is what the metrics listener shows next
    renewed = ca.issue("renewed")
    os.replace(renewed.cert, pair.cert)
    os.replace(renewed.key, pair.key)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: serial_at(port, ca) == renewed.serial, message="the renewed certificate")
    assert get(f"https://127.0.0.1:{port}/metrics", trusting(ca))[0] == 200


def test_metrics_listener_requires_client_certificates_when_the_port_does(make_server,
                                                                          tmp_path: Path) -> None:
    """tls-auth-clients yes applies to the metrics listener too: Prometheus then scrapes with a
    client certificate (tls_config cert_file/key_file)."""
    ca = CA(tmp_path / "certs")
    pair, scraper = ca.issue("server"), ca.issue("prometheus")
    _server, port = start(make_server, ca, pair, "--tls-ca-cert-file", str(ca.path),
                          "--tls-auth-clients", "yes", ctx=_ctx(ca, scraper))
    url = f"https://127.0.0.1:{port}/metrics"
    assert get(url, _ctx(ca, scraper))[0] == 200
    with pytest.raises((urllib.error.URLError, OSError)):
        get(url, trusting(ca))


def _ctx(ca: CA, pair: Pair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx


def test_metrics_listener_plaintext_by_default(make_server, tmp_path: Path) -> None:
    ca = CA(tmp_path / "certs")
    pair = ca.issue("server")
    port = free_port()
    server = make_server("plain", tls=trusting(ca), args=[
        "--tls-cert-file", str(pair.cert), "--tls-key-file", str(pair.key),
        "--metrics-addr", f"127.0.0.1:{port}"])
    wait_until(lambda: _connects(port), message="the metrics listener")
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert server.json("PING")["ok"]  # the client port is TLS (json() connects with the CA)
