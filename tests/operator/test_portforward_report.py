"""``kubectl geocluster report`` reads password-protected members through a port-forward.

Mocked: only the Kubernetes API server and the kubelet's port-forward
(:mod:`portforward_emu`, WebSocket with the real channel framing; no cluster runs here). The
plugin is the real console script, the members are real geoservers with a password (and, in
one test, TLS requiring client certificates) on loopback addresses standing in for pod IPs;
the last test runs the real kopf operator, whose generated password Secret the report uses.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from pathlib import Path

import pytest
from geocluster import kubectl_plugin as kp
from geocluster import portforward
from opharness import GC_URL, NAME, NS, PORT, add_pod, pod, pod_ip, requests
from portforward_emu import PortForwardEmulator
from test_kubectl_plugin import bundle, plugin, write_kubeconfig
from tlscerts import CA

pytestmark = [pytest.mark.kmock(cls=PortForwardEmulator), pytest.mark.timeout(60)]
PASSWORD = "s3cret-pw-for-the-report"


@pytest.fixture
def kubeconfig(api, tmp_path) -> Path:
    return write_kubeconfig(api, tmp_path)


async def cluster(api, spec: dict | None = None, password: str | None = PASSWORD) -> None:
    """A GeoCluster with the default generated password, its Secret holding ``password``."""
    await api.post(GC_URL, json={"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
                                 "metadata": {"name": NAME, "namespace": NS},
                                 "spec": {"followers": 1, **(spec or {})}})  # fmt: skip
    if password is not None:
        await secret(api, f"{NAME}-auth", {"password": password})


async def secret(api, name: str, data: dict[str, str | bytes]) -> None:
    encoded = {k: base64.b64encode(v if isinstance(v, bytes) else v.encode()).decode()
               for k, v in data.items()}  # fmt: skip
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS}, "data": encoded})


async def report(kubeconfig: Path, tmp_path: Path, *args: str) -> dict[str, str]:
    code, out, err = await plugin(kubeconfig, "report", "-f", str(tmp_path / "r.tar.gz"), *args)
    assert code == 0, (out, err)
    assert "Traceback" not in err and "Exception" not in err, err  # the forward threads too
    return bundle(tmp_path / "r.tar.gz")


async def test_report_reads_password_members_through_a_port_forward(api, members, kubeconfig, tmp_path):
    """SERVER and INFO of the member with the Secret's password; a pod whose port nobody
    listens on is skipped with the kubelet's error; nothing goes through the pod proxy."""
    await cluster(api)
    await asyncio.to_thread(members.start, pod(0), pod_ip(pod(0)), password=PASSWORD)
    await add_pod(api, pod(0), pod_ip(pod(0)))
    await add_pod(api, pod(1), pod_ip(pod(1)))  # scheduled, its server not up
    files = await report(kubeconfig, tmp_path)
    skipped = files["skipped.txt"]
    assert f"members/{pod(0)}.server.json" in files, skipped
    server = json.loads(files[f"members/{pod(0)}.server.json"])
    info = json.loads(files[f"members/{pod(0)}.info.json"])
    assert server["ok"] and server["stats"]["aof_size"] == 0 and "num_hooks" in server["stats"]
    assert info["ok"] and info["info"]["tile38_version"]
    assert re.search(rf"^{pod(1)} SERVER/INFO: port-forward: error forwarding port {PORT} to pod "
                     rf"{pod(1)}", skipped, re.M), skipped
    assert f"{pod(0)} SERVER/INFO" not in skipped
    assert PASSWORD not in "".join(files.values())  # the Secret's value was redacted
    assert requests(api, "GET", f"/pods/{pod(0)}/portforward?ports={PORT}")
    assert not requests(api, "GET", f":{PORT}/proxy/")


async def test_refused_port_forward_is_skipped_with_the_rbac_it_needs(api, members, kubeconfig, tmp_path):
    await cluster(api)
    api.forbidden = (pod(0),)
    await asyncio.to_thread(members.start, pod(0), pod_ip(pod(0)), password=PASSWORD)
    await add_pod(api, pod(0), pod_ip(pod(0)))
    files = await report(kubeconfig, tmp_path)
    line = next(s for s in files["skipped.txt"].splitlines() if s.startswith(f"{pod(0)} SERVER/INFO"))
    assert f'403 pods "{pod(0)}" is forbidden' in line and '"pods/portforward"' in line, line
    assert "needs `get` and `create` on pods/portforward" in line and "redis-cli -a" in line
    assert not any(name.endswith(".server.json") for name in files)


@pytest.mark.parametrize("stored, why", [
    ("not-the-password", "port-forward: AUTH: ERR invalid password"),
    (None, "cannot read Secret 'gc-auth': 404"),
])
async def test_wrong_or_unreadable_password(api, members, kubeconfig, tmp_path, stored, why):
    await cluster(api, password=stored)
    await asyncio.to_thread(members.start, pod(0), pod_ip(pod(0)), password=PASSWORD)
    await add_pod(api, pod(0), pod_ip(pod(0)))
    files = await report(kubeconfig, tmp_path)
    assert f"{pod(0)} SERVER/INFO: {why}" in files["skipped.txt"], files["skipped.txt"]
    assert not any(name.endswith(".server.json") for name in files)


async def test_tls_members_requiring_client_certificates(api, members, kubeconfig, tmp_path):
    """TLS through the forwarded stream: the member is verified by its pod DNS name (not the
    IP it listens on) and shown the TLS Secret's certificate, which it requires."""
    ca = CA(tmp_path / "tls")
    leaf = ca.issue("tls", (f"*.{NAME}-members.{NS}.svc.cluster.local",))
    await cluster(api, {"tls": {"secretName": "gc-certs", "clientAuth": "required"}})
    await secret(api, "gc-certs", {"ca.crt": ca.path.read_bytes(), "tls.crt": leaf.cert.read_bytes(),
                                   "tls.key": leaf.key.read_bytes()})  # fmt: skip
    args = ("--tls-cert-file", str(leaf.cert), "--tls-key-file", str(leaf.key),
            "--tls-ca-cert-file", str(ca.path), "--tls-auth-clients", "yes")  # fmt: skip
    await asyncio.to_thread(members.start, pod(0), pod_ip(pod(0)), password=PASSWORD, args=args)
    await add_pod(api, pod(0), pod_ip(pod(0)))
    files = await report(kubeconfig, tmp_path)
    assert f"members/{pod(0)}.server.json" in files, files["skipped.txt"]
    assert json.loads(files[f"members/{pod(0)}.server.json"])["ok"]


async def test_via_proxy_keeps_the_old_skip(api, members, kubeconfig, tmp_path):
    """``--via proxy`` on a password cluster: the proxy cannot carry the password, so the
    member is skipped with that reason, and no port-forward is made."""
    await cluster(api)
    await add_pod(api, pod(0), pod_ip(pod(0)))
    files = await report(kubeconfig, tmp_path, "--via", "proxy")
    assert f"{pod(0)} SERVER/INFO: the members require a password and the API server's pod proxy " \
        "drops the Authorization header" in files["skipped.txt"]
    assert not requests(api, "GET", "/portforward")


async def test_ask_member_directly(api, members):
    """The module on its own, with the kubernetes client pointed at the emulator."""
    from kubernetes import client

    await add_pod(api, pod(0), pod_ip(pod(0)))
    await asyncio.to_thread(members.start, pod(0), pod_ip(pod(0)), password=PASSWORD)
    cfg = client.Configuration()
    cfg.host = str(api.url).rstrip("/")
    api_client = client.ApiClient(cfg)
    out = await asyncio.to_thread(portforward.ask_member, api_client, NS, pod(0), PORT,
                                  ("SERVER", "PING"), PASSWORD)  # fmt: skip
    assert json.loads(out["SERVER"])["ok"] and json.loads(out["PING"])["ping"] == "pong"
    with pytest.raises(portforward.ForwardError, match='404 pods "nope" not found') as exc:
        await asyncio.to_thread(portforward.ask_member, api_client, NS, "nope", PORT, ("SERVER",))
    assert exc.value.status == 404
    with pytest.raises(portforward.ForwardError, match="AUTH: ERR invalid password"):
        await asyncio.to_thread(portforward.ask_member, api_client, NS, pod(0), PORT, ("SERVER",), "x")
    api.stalled = ("stuck",)  # an upgrade never answered: an error after the timeout, not a hang
    with pytest.raises(portforward.ForwardError, match=r"no answer from the API server in 0\.5 s"):
        await asyncio.to_thread(portforward.ask_member, api_client, NS, "stuck", PORT, ("SERVER",),
                                timeout=0.5)


@pytest.mark.parametrize("spec, via, scheme, auth", [
    ({"server": {"generatePassword": False}}, "proxy", "", False),
    ({"server": {"generatePassword": False}, "tls": {"secretName": "t"}}, "proxy", "https:", False),
    ({"server": {"generatePassword": False}, "tls": {"secretName": "t", "clientAuth": "required"}},
     "port-forward", "https:", False),
    ({}, "port-forward", "", True),  # the default: a generated password
    ({"server": {"generatePassword": False, "authSecretRef": {"name": "s", "key": "k"}}},
     "port-forward", "", True),
    ({"bogus": 1}, "proxy", "", False),  # invalid: tried, an auth error reply is kept as it is
])
def test_member_access_picks_the_way(spec, via, scheme, auth):
    access = kp.member_access({"metadata": {"name": NAME, "namespace": NS}, "spec": spec})
    assert (access.via, access.scheme, access.auth is not None) == (via, scheme, auth)


async def test_against_the_operator_with_its_generated_password(api, members, kubeconfig, tmp_path):
    """The real operator generates ``<name>-auth``; members run with it (as their pods' env
    would give it); the report reads every member's SERVER through port-forwards with it."""
    from opharness import SPEC, Operator, condition, eventually, start_member

    op = await Operator().start()
    try:
        spec = {k: v for k, v in SPEC.items() if k != "server"}  # the default: a generated password
        await api.post(GC_URL, json={"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
                                     "metadata": {"name": NAME, "namespace": NS}, "spec": spec})  # fmt: skip
        key = ("v1/secrets", NS, f"{NAME}-auth")
        await eventually(lambda: api.objects[key]["data"]["password"], what="the generated Secret")
        password = base64.b64decode(api.objects[key]["data"]["password"]).decode()
        for k in range(spec["followers"] + 1):
            await start_member(api, members, pod(k), password=password, spec=spec)
        await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
        files = await report(kubeconfig, tmp_path)
    finally:
        await op.stop()
    roles = {}
    for k in range(spec["followers"] + 1):
        assert f"members/{pod(k)}.server.json" in files, files["skipped.txt"]
        stats = json.loads(files[f"members/{pod(k)}.server.json"])["stats"]
        roles[pod(k)] = "follower" if stats.get("following") else "leader"
    assert sorted(roles.values()) == ["follower", "follower", "leader"]
    assert password not in "".join(files.values())
