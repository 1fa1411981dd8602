"""spec.tls end to end through the real kopf operator (kmock API, live member processes over
real TLS): the members run with the flags and files of the pod template, and the operator
probes them over TLS to Ready, verifying each member by its pod DNS name with the Secret's
ca.crt while it dials the pod IP.

cert-manager itself cannot run here (no API server, no controllers): for ``issuerRef`` the
tests check the Certificate the operator creates, then play cert-manager by writing the
Secret it would issue; without cert-manager's API the operator must warn, not crash.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from geocluster import probe
from geocluster.resources import TLS_DIR
from opharness import (
    GC_KEY,
    GC_URL,
    LEADER_IP,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Operator,
    condition,
    events,
    eventually,
    gc_status,
    ip,
    requests,
    start_member,
)
from tlscerts import CA

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(90)]

STS = "apps/v1/statefulsets"
CERTS = "cert-manager.io/v1/certificates"
PODS = f"{NAME}-members.{NS}.svc.cluster.local"  # the headless Service's domain


@pytest.fixture
async def operator():
    op = await Operator().start()
    yield op
    await op.stop()


def exists(api, key) -> bool:  # kmock 0.8: `in` misses string keys
    try:
        return not getattr(api.objects[key], "deleted", False)
    except KeyError:
        return False


def issue(tmp_path: Path) -> Path:
    """A CA and one certificate laid out as the Secret is mounted (ca.crt, tls.crt, tls.key).
    It names the pods by DNS only, plus the leader's stand-in IP: the test's followers follow
    that IP (nothing resolves pod names here); the operator must verify by name."""
    tls = tmp_path / "tls"
    ca = CA(tls)
    ca.issue("tls", (f"*.{PODS}", LEADER_IP))
    return tls


async def post_secret(api, name: str, tls: Path) -> None:
    data = {k: base64.b64encode((tls / k).read_bytes()).decode() for k in ("ca.crt", "tls.crt", "tls.key")}
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": NS}, "data": data})  # fmt: skip


async def create_gc(api, tls_spec: dict) -> None:
    body = {"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
            "metadata": {"name": NAME, "namespace": NS}, "spec": {**SPEC, "tls": tls_spec}}  # fmt: skip
    await api.post(GC_URL, json=body)


def container(api, sts: str) -> dict:
    (c,) = api.objects[STS, NS, sts]["spec"]["template"]["spec"]["containers"]
    return c


def tls_flags(api, sts: str, tls: Path) -> tuple[str, ...]:
    """The pod template's --tls-* flags, with the mount path replaced by the test's files."""
    args = container(api, sts)["args"]
    out: list[str] = []
    for i, arg in enumerate(args):
        if arg.startswith("--tls-"):
            out += [arg, args[i + 1].replace(TLS_DIR, str(tls))]
    return tuple(out)


async def play_statefulsets(api, members, tls: Path) -> None:
    """Start the members as their StatefulSet describes them (TLS flags and files)."""
    await eventually(lambda: exists(api, (STS, NS, NAME)), what="StatefulSet")
    flags = tls_flags(api, NAME, tls)
    for k in range(SPEC["followers"] + 1):
        await start_member(api, members, f"{NAME}-{k}", args=flags)


@pytest.mark.parametrize("client_auth", ["none", "required"])
async def test_secret_name_members_run_tls_and_the_operator_probes_them_to_ready(
    api, members, operator, tmp_path, client_auth
):
    tls = issue(tmp_path)
    await post_secret(api, "gc-certs", tls)
    await create_gc(api, {"secretName": "gc-certs", "clientAuth": client_auth})
    await play_statefulsets(api, members, tls)
    want = {"none": "no", "required": "yes"}[client_auth]
    pairs = tls_flags(api, NAME, tls)
    flags = dict(zip(pairs[::2], pairs[1::2], strict=True))
    assert flags["--tls-replication"] == "yes" and flags["--tls-auth-clients"] == want
    volumes = api.objects[STS, NS, NAME]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "gc-certs", "defaultMode": 0o440}} in volumes

    await eventually(lambda: condition(api, "Ready")["status"] == "True", timeout=30, what="Ready")
    status = gc_status(api)
    assert status["readyFollowers"] == 2 and condition(api, "Degraded")["status"] == "False"
    assert all(m["reachable"] for m in status["members"])
    assert {m["address"] for m in status["members"]} == {f"{ip(h)}:9851" for h in (2, 3, 4)}
    # TLS-only members: a plaintext probe, as before spec.tls, gets nowhere
    assert not (await probe.observe("x", "leader", f"{LEADER_IP}:9851", timeout=1)).reachable
    assert not requests(api, "POST", "/certificates")  # secretName: no cert-manager involved


async def test_issuer_ref_creates_the_certificate_and_its_secret_is_used(api, members, operator, tmp_path):
    api.resources[CERTS] = {"kind": "Certificate", "namespaced": True}
    await create_gc(api, {"issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}})
    key = (CERTS, NS, f"{NAME}-tls")
    await eventually(lambda: exists(api, key), what="the Certificate")
    cert = api.objects[key]
    assert cert["metadata"]["ownerReferences"][0]["uid"] == api.objects[GC_KEY]["metadata"]["uid"]
    spec = cert["spec"]
    assert spec["secretName"] == f"{NAME}-tls"
    assert spec["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert f"*.{PODS}" in spec["dnsNames"] and "localhost" in spec["dnsNames"]
    for service in (NAME, f"{NAME}-readonly", f"{NAME}-members"):
        assert f"{service}.{NS}.svc.cluster.local" in spec["dnsNames"]
    await eventually(lambda: exists(api, (STS, NS, NAME)), what="StatefulSet")
    volumes = api.objects[STS, NS, NAME]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": f"{NAME}-tls", "defaultMode": 0o440}} in volumes

    # not issued yet: Degraded, saying which Secret; nobody is probed in plaintext
    await eventually(lambda: condition(api, "Degraded")["reason"] == "TLSSecretUnavailable", what="Degraded")
    assert f"Certificate {NAME}-tls" in condition(api, "Degraded")["message"]

    # play cert-manager: the Secret it would write; then the members, as the pods would run
    tls = issue(tmp_path)
    await post_secret(api, f"{NAME}-tls", tls)
    await play_statefulsets(api, members, tls)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", timeout=30, what="Ready")
    assert condition(api, "Degraded")["status"] == "False"

    # spec.tls removed: the Certificate goes (its Secret is cert-manager's) and so do the flags
    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"tls": None}})
    await eventually(lambda: not exists(api, key), what="the Certificate deleted")
    await eventually(lambda: not tls_flags(api, NAME, tls), what="plaintext pod template")


async def test_without_cert_manager_issuer_ref_warns_and_applies_the_rest(
    api, members, operator, monkeypatch
):
    monkeypatch.setattr(KopfEmulator, "absent_apis", ("/apis/cert-manager.io/",))
    await create_gc(api, {"issuerRef": {"name": "internal-ca"}})
    await eventually(lambda: events(api, "CertManagerMissing", "Warning"), what="CertManagerMissing")
    (event,) = events(api, "CertManagerMissing")  # once: the retry waits minutes, no crash loop
    assert "cert-manager" in event["message"] and "secretName" in event["message"]
    await eventually(lambda: exists(api, (STS, NS, NAME)), what="StatefulSets")
    await eventually(lambda: condition(api, "Degraded")["reason"] == "TLSSecretUnavailable", what="Degraded")
    assert gc_status(api)["phase"] == "Degraded"
