"""spec.tls against real TLS: the operator's probe client verifying a member by its pod DNS
name while dialing its IP (and presenting a client certificate), and the exec readiness probe
the pod template carries for required client certificates, both against live geoservers."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from geocluster import probe
from geocluster import resources as r
from geocluster.spec import parse_spec
from helpers import GeoServer
from opharness import ip
from tlscerts import CA

POD_DNS = "gc-follower-0.gc-members.ns1.svc.cluster.local"


def tls_args(ca: CA, leaf, client_auth: str = "no") -> tuple[str, ...]:
    return ("--tls-cert-file", str(leaf.cert), "--tls-key-file", str(leaf.key),
            "--tls-ca-cert-file", str(ca.path), "--tls-auth-clients", client_auth)  # fmt: skip


@pytest.mark.parametrize("client_auth", ["no", "yes"])
async def test_probe_verifies_the_pod_dns_name_not_the_ip(members, tmp_path, client_auth):
    ca = CA(tmp_path)
    leaf = ca.issue("member", ("*.gc-members.ns1.svc.cluster.local",))  # names, no IP
    members.start("m", ip(40), args=tls_args(ca, leaf, client_auth))
    pem = lambda p: Path(p).read_text()  # noqa: E731
    context = (probe.tls_context(pem(ca.path), pem(leaf.cert), pem(leaf.key)) if client_auth == "yes"
               else probe.tls_context(pem(ca.path)))  # fmt: skip
    m = await probe.observe("gc-follower-0", "follower", f"{ip(40)}:9851", tls=context, server_name=POD_DNS)
    assert m.reachable, m.error
    assert (await probe.send(f"{ip(40)}:9851", "PING", tls=context, server_name=POD_DNS))["ok"]
    # the IP is not in the certificate: without the DNS name, verification fails
    m = await probe.observe("gc-follower-0", "follower", f"{ip(40)}:9851", tls=context)
    assert not m.reachable and "CERTIFICATE_VERIFY_FAILED" in m.error
    m = await probe.observe("x", "follower", f"{ip(40)}:9851", tls=context, server_name="gc-other.example")
    assert not m.reachable and "CERTIFICATE_VERIFY_FAILED" in m.error
    # another CA's context does not trust it; plaintext gets nowhere on a TLS-only port
    stranger = probe.tls_context(CA(tmp_path / "other").path.read_text())
    m = await probe.observe("x", "follower", f"{ip(40)}:9851", tls=stranger, server_name=POD_DNS)
    assert not m.reachable and "CERTIFICATE_VERIFY_FAILED" in m.error
    assert not (await probe.observe("x", "follower", f"{ip(40)}:9851", timeout=1)).reachable
    if client_auth == "yes":  # the server asks for a client certificate: the CA alone is not enough
        m = await probe.observe("x", "follower", f"{ip(40)}:9851", tls=probe.tls_context(pem(ca.path)),
                                server_name=POD_DNS)  # fmt: skip
        assert not m.reachable


def test_bad_pem_is_an_error_not_a_context():
    with pytest.raises((ssl.SSLError, ValueError)):
        probe.tls_context("not a certificate")


def _client_context(ca: CA, leaf) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.path))
    context.load_cert_chain(leaf.cert, leaf.key)
    return context


def test_exec_readiness_probe_against_a_server_requiring_client_certificates(tmp_path):
    """The kubelet's httpGet can present no client certificate, so with clientAuth required
    and no metrics port the pod template runs the container's python: here, that exact
    script against a real geoserver, with the Secret's files laid out as mounted."""
    c = r.Cluster("gc", "ns1", "u", parse_spec({"tls": {"secretName": "s", "clientAuth": "required"},
                                                "metrics": {"enabled": False}}))  # fmt: skip
    command = r.readiness_probe(c)["exec"]["command"]
    assert command[:2] == ["python", "-c"] and command[3:] == [r.TLS_DIR, "9851"]
    ca = CA(tmp_path / "tls")  # writes tls/ca.crt; the leaf tls/tls.crt, tls/tls.key
    leaf = ca.issue("tls")
    server = GeoServer(tmp_path / "s", args=[*tls_args(ca, leaf, "yes")], tls=_client_context(ca, leaf))
    server.start()
    try:
        run = [sys.executable, "-c", command[2], str(tmp_path / "tls"), str(server.port)]
        assert subprocess.run(run, capture_output=True, timeout=20).returncode == 0
        other = CA(tmp_path / "other")  # a client certificate the server does not trust
        other.issue("tls")
        (tmp_path / "other" / "ca.crt").write_bytes(ca.path.read_bytes())
        run[3] = str(tmp_path / "other")
        assert subprocess.run(run, capture_output=True, timeout=20).returncode != 0
    finally:
        server.stop()
