"""`kubectl geocluster` (the kubectl-geocluster console script) against the emulated API.

The plugin runs as a real subprocess with a kubeconfig file pointing at kmock (the only thing
mocked: no kube-apiserver runs here); the end-to-end test also runs the real kopf operator and
real geoserver members (tests/operator/opharness.py), so the annotations the plugin sets are the
ones the operator consumes. ``report`` reads members through :class:`PodProxyEmulator`, kmock plus
the API server's pod proxy, forwarding to a real geoserver.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import aiohttp
import aiohttp.web
import pytest
import yaml
from geocluster import kubectl_plugin as kp
from kmock._internal import rendering
from opharness import (
    GC_KEY,
    GC_URL,
    NAME,
    NS,
    PORT,
    SPEC,
    KopfEmulator,
    Operator,
    add_pod,
    annotations,
    condition,
    events,
    eventually,
    gc_status,
    pod,
    pod_ip,
    requests,
    start_cluster,
)

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]
PLUGIN = shutil.which("kubectl-geocluster", path=str(Path(sys.executable).parent))
LONG = "a-geocluster-name-of-fourty-four-characters"  # with -follower-0: 54 characters


@pytest.fixture
def kubeconfig(api, tmp_path) -> Path:
    return write_kubeconfig(api, tmp_path)


def write_kubeconfig(api, tmp_path: Path) -> Path:
    """A kubeconfig whose current context points at kmock, namespace ns1."""
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": str(api.url).rstrip("/")}}],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "me", "namespace": NS}}],
    }))  # fmt: skip
    return path


async def plugin(kubeconfig: Path, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """Run the console script (the event loop keeps serving kmock meanwhile)."""
    assert PLUGIN, "kubectl-geocluster is not installed in this venv: pip install -e ."
    proc = await asyncio.create_subprocess_exec(
        PLUGIN, "--kubeconfig", str(kubeconfig), *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


def seeded(name: str = NAME) -> dict:
    """A GeoCluster as the operator leaves it after a while (status written by hand)."""
    leader, f0 = f"{name}-leader-0", f"{name}-follower-0"
    return {
        "apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"followers": 2, "aofShrink": {"schedule": "0 3 * * *", "timeZone": "Europe/Paris"}},
        "status": {
            "phase": "Running", "leader": leader, "leaderAofSize": 50000, "observedGeneration": 1,
            "conditions": [{"type": "Ready", "status": "False", "reason": "NotReady",
                            "message": f"{f0} is behind the leader by 30000 bytes"}],
            "members": [
                {"name": leader, "role": "leader", "reachable": True, "aofSize": 50000},
                {"name": f0, "role": "follower", "reachable": True, "aofSize": 20000,
                 "caughtUp": False, "divergence": "not caught up", "repairs": 1},
                {"name": f"{name}-follower-1", "role": "follower", "reachable": True,
                 "aofSize": 50000, "caughtUp": True},
            ],
            "lastShrink": {"time": "2026-12-01T03:00:00Z", "result": "ok", "reason": "schedule",
                           "sizeBefore": 90000, "sizeAfter": 40000},
            "lastResync": {"time": "2026-12-01T03:00:05Z", "member": f0, "result": "ok",
                           "reason": "afterShrink"},
            "hooks": 3, "pendingEvents": 12,
        },
    }  # fmt: skip


async def seed(api, gc: dict, events: int = 3) -> None:
    name = gc["metadata"]["name"]
    await api.post(GC_URL, json=gc)
    for i in range(events):
        await api.post(f"/api/v1/namespaces/{NS}/events", json={
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": f"e{i}", "namespace": NS},
            "type": "Normal", "reason": "ShrinkSucceeded", "lastTimestamp": f"2026-12-01T03:0{i}:00Z",
            "message": f"shrink {i} of the leader {gc['metadata']['name']}-leader-0 done",
            "involvedObject": {"kind": "GeoCluster", "name": gc["metadata"]["name"], "namespace": NS},
        })  # fmt: skip
    await api.post(f"/api/v1/namespaces/{NS}/events", json={  # a member pod's (<name>-k): shown
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "pod", "namespace": NS},
        "type": "Warning", "reason": "BackOff", "lastTimestamp": "2026-12-01T02:59:00Z",
        "message": "restarting failed container", "involvedObject": {"kind": "Pod", "name": f"{name}-1"},
    })  # fmt: skip
    await api.post(f"/api/v1/namespaces/{NS}/events", json={  # someone else's: not shown
        "apiVersion": "v1", "kind": "Event", "metadata": {"name": "other", "namespace": NS},
        "type": "Warning", "reason": "Unrelated", "message": "not ours",
        "involvedObject": {"kind": "Pod", "name": "other-pod", "namespace": NS},
    })  # fmt: skip


async def test_status_fits_80_columns_without_cutting_names(api, kubeconfig):
    await seed(api, seeded(LONG))
    code, out, err = await plugin(kubeconfig, "status", LONG)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for m in ("leader-0", "follower-0", "follower-1"):
        assert f"{LONG}-{m}" in out  # whole, on its own line
    assert "29.3K" in out  # follower-0's lag: 50000 - 20000 bytes
    assert "0 3 * * * (Europe/Paris)" in out
    assert "ShrinkSucceeded" in out and "Unrelated" not in out
    assert "Ready=False NotReady" in out
    assert "hooks:         3 on the leader (hooks and channels), 12 events not yet delivered" in out


async def test_status_json_and_yaml(api, kubeconfig):
    await seed(api, seeded())
    code, out, err = await plugin(kubeconfig, "status", "-o", "json")  # the only one: no NAME needed
    assert code == 0, err
    s = json.loads(out)
    f0 = next(m for m in s["members"] if m["name"] == f"{NAME}-follower-0")
    assert (f0["lagBytes"], f0["caughtUp"], f0["state"], f0["repairs"]) == (30000, False, "not caught up", 1)
    assert s["lastShrink"]["sizeAfter"] == 40000 and s["lastBackup"] is None
    assert (s["hooks"], s["pendingEvents"]) == (3, 12)
    assert [e["reason"] for e in s["events"]] == ["BackOff"] + ["ShrinkSucceeded"] * 3
    code, out, _ = await plugin(kubeconfig, "-n", NS, "status", NAME, "-o", "yaml")
    assert code == 0 and yaml.safe_load(out) == s


@pytest.mark.parametrize(
    "args, key, value",
    [
        (["promote", f"{NAME}-follower-1"], kp.PROMOTE, f"{NAME}-follower-1"),
        (["resync", f"{NAME}-follower-0"], kp.RESYNC, f"{NAME}-follower-0"),
        (["pause"], kp.PAUSED, "true"),
    ],
)
async def test_requests_set_the_operators_annotations(api, kubeconfig, args, key, value):
    await seed(api, seeded(), events=0)
    code, _, err = await plugin(kubeconfig, *args)
    assert code == 0, err
    assert annotations(api)[key] == value


async def test_restart_sets_a_timestamp_and_status_shows_it(api, kubeconfig):
    await seed(api, seeded(), events=0)
    code, out, err = await plugin(kubeconfig, "restart")
    assert code == 0, err
    value = annotations(api)[kp.RESTART]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value  # UTC: a new value per request
    assert f"rolling restart requested ({kp.RESTART}={value})" in out
    code, out, _ = await plugin(kubeconfig, "status")
    assert f"requested (not yet taken): restart={value}" in out
    await api.patch(f"{GC_URL}/{NAME}", json={"metadata": {"annotations": {  # as the operator does
        kp.RESTART: None, kp.RESTARTING: "2026-12-02T10:00:00Z"}}})
    code, out, _ = await plugin(kubeconfig, "status")
    assert "restarting:    since 2026-12-02T10:00:00Z" in out and "requested" not in out
    code, out, _ = await plugin(kubeconfig, "status", "-o", "json")
    assert json.loads(out)["restartingSince"] == "2026-12-02T10:00:00Z"


def migrating(phase: str | None) -> dict:
    gc = seeded()
    gc["spec"]["bootstrap"] = {"fromLeader": {"address": "old-tile38:9851"}}
    if phase:
        gc["status"]["bootstrap"] = {"kind": "fromLeader", "phase": phase}
    return gc


@pytest.mark.parametrize("phase", [None, "following", "caught-up"])
async def test_detach_a_live_migration(api, kubeconfig, phase):
    await seed(api, migrating(phase), events=0)
    code, _, err = await plugin(kubeconfig, "detach")
    assert code == 0, err
    assert annotations(api)[kp.DETACH].endswith("Z")
    code, out, err = await plugin(kubeconfig, "detach", "--force")
    assert code == 0, err
    assert annotations(api)[kp.DETACH] == "force" and "detach (forced) requested" in out


@pytest.mark.parametrize("gc, message", [
    (seeded(), "gc is not migrating: detach ends a spec.bootstrap.fromLeader"),
    (migrating("detached"), "gc is not migrating: status.bootstrap.phase is detached"),
])
async def test_detach_refused_when_not_migrating(api, kubeconfig, gc, message):
    await seed(api, gc, events=0)
    code, _, err = await plugin(kubeconfig, "detach")
    assert code == 1 and message in err and "Traceback" not in err, err
    assert kp.DETACH not in annotations(api)


async def test_backup_and_resume(api, kubeconfig):
    await seed(api, {**seeded(), "metadata": {"name": NAME, "namespace": NS,
                                              "annotations": {kp.PAUSED: "true"}}})
    code, _, err = await plugin(kubeconfig, "backup")
    assert code == 0, err
    assert annotations(api)[kp.BACKUP].endswith("Z")  # a timestamp: each request is a new value
    code, out, err = await plugin(kubeconfig, "resume")
    assert code == 0, err
    assert kp.PAUSED not in annotations(api) and "still paused" not in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["status", "nope"], "no GeoCluster 'nope' in namespace ns1"),
        (["resync", "gc-leader-0"],
         "'gc-leader-0' is not a follower of gc; followers: gc-follower-0, gc-follower-1"),
        (["promote", "gc-follower-9"], "'gc-follower-9' is not a follower"),
        (["-n", "empty", "status"], "0 GeoClusters in namespace empty"),
    ],
)
async def test_bad_requests_are_one_line_errors(api, kubeconfig, args, message):
    await seed(api, seeded(), events=0)
    code, _, err = await plugin(kubeconfig, *args)
    assert code == 1 and message in err and "Traceback" not in err, err
    assert not any(k.startswith("geo.geocluster.io/") for k in annotations(api))


async def test_unreachable_api_server_is_one_line(tmp_path):
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "http://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {}}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "u"}}],
    }))  # fmt: skip
    code, _, err = await plugin(cfg, "status")
    assert code == 1 and "cannot reach the API server" in err and "Traceback" not in err


async def test_report_bundle_redacts_secrets(api, kubeconfig, tmp_path):
    gc = seeded()
    await seed(api, gc)
    uid = api.objects[GC_KEY]["metadata"]["uid"]
    owner = [{"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster", "name": NAME, "uid": uid}]
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{NAME}-auth", "ownerReferences": owner},
        "data": {"password": "c2VjcmV0LXBhc3N3b3Jk"}})  # fmt: skip
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "not-ours"}, "data": {"k": "dg=="}})
    await api.post(f"/api/v1/namespaces/{NS}/configmaps", json={
        "apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "b"},
        "metadata": {"name": f"{NAME}-config", "ownerReferences": owner}})  # fmt: skip
    await add_pod(api, f"{NAME}-leader-0", "127.0.0.1", "leader")  # by its instance label
    code, _, err = await plugin(kubeconfig, "report", "-f", str(tmp_path / "r.tar.gz"))
    assert code == 0, err
    with tarfile.open(tmp_path / "r.tar.gz") as tar:
        files = {m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}
    assert {f"{NAME}/geocluster.yaml", f"{NAME}/events.yaml", f"{NAME}/status.txt",
            f"{NAME}/objects/secrets/{NAME}-auth.yaml", f"{NAME}/objects/configmaps/{NAME}-config.yaml",
            f"{NAME}/skipped.txt"} <= set(files)  # fmt: skip
    assert not any("not-ours" in f for f in files)
    everything = "".join(files.values())
    assert "c2VjcmV0LXBhc3N3b3Jk" not in everything and "<redacted: 20 chars>" in everything
    skipped = files[f"{NAME}/skipped.txt"]
    assert "operator logs: no operator pod in geocluster-system" in skipped
    assert f"{NAME}/objects/pods/{NAME}-leader-0.yaml" in files
    assert f"{NAME}-leader-0 metrics: 404" in skipped  # the emulated API has no pod proxy
    # the default, a generated password: a port-forward, which plain kmock cannot upgrade
    assert f"{NAME}-leader-0 SERVER/INFO: port-forward: 200 no WebSocket upgrade" in skipped
    assert yaml.safe_load(files[f"{NAME}/geocluster.yaml"])["status"]["leader"] == f"{NAME}-leader-0"


async def test_against_the_operator_shrink_restart_pause_status(api, members, kubeconfig):
    """The operator consumes what the plugin sets, and status shows what it did (the restart
    only as far as the operator taking it up, while paused: no StatefulSet controller recreates
    pods here; test_lease_operator.py covers the rolling restart itself)."""
    op = await Operator().start()
    try:
        await start_cluster(api, members)
        await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
        code, out, err = await plugin(kubeconfig, "shrink")
        assert code == 0, err
        await eventually(lambda: gc_status(api)["lastShrink"]["result"] == "ok", what="shrink")
        assert gc_status(api)["lastShrink"]["reason"] == "manual" and kp.SHRINK not in annotations(api)
        code, out, err = await plugin(kubeconfig, "pause")
        assert code == 0, err
        await eventually(lambda: gc_status(api)["phase"] == "Paused", what="Paused")
        code, out, err = await plugin(kubeconfig, "restart")  # paused: taken up, no pod deleted yet
        assert code == 0, err
        await eventually(lambda: kp.RESTART not in annotations(api) and kp.RESTARTING in annotations(api),
                         what="the restart taken up")
        # kopf posts the Event after the annotation patch, on its own: wait for it too
        await eventually(lambda: "RestartRequested" in [e["reason"] for e in events(api)],
                         what="RestartRequested")
        code, out, err = await plugin(kubeconfig, "status", "-o", "json")
        s = json.loads(out)
        assert s["paused"] and s["phase"] == "Paused" and s["lastShrink"]["result"] == "ok"
        assert {m["role"] for m in s["members"]} == {"leader", "follower"}
        assert all(m["aofSize"] is not None and m["reachable"] for m in s["members"])
        assert "ShrinkSucceeded" in [e["reason"] for e in s["events"]]
        code, out, err = await plugin(kubeconfig, "status")
        assert code == 0 and "GeoCluster ns1/gc: Paused (paused)" in out, out
    finally:
        await op.stop()


def test_render_is_pure_and_wraps_long_messages():
    s = kp.summarize(seeded(LONG), [])
    s["conditions"][0]["message"] = "x " * 100
    text = kp.render(s, 80)
    assert max(map(len, text.splitlines())) <= 80
    assert kp.render(s, 200).count("\n") < text.count("\n")  # wide: one row per member
    assert "hooks:         - on the leader (hooks and channels), - events" in kp.render(
        kp.summarize({"metadata": {"name": "x"}}, []))  # an older operator: no such fields


PROXY = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?:(?P<scheme>https?):)?(?P<pod>[^/:]+)"
                   r"(?::(?P<port>\d+))?/proxy(?P<path>/.*)?$")  # fmt: skip


class PodProxyEmulator(KopfEmulator):
    """KopfEmulator plus the API server's pod proxy (``pods/[scheme:]name[:port]/proxy/path``)
    to the Pod's status.podIP, as kube-apiserver does it: the Authorization header it
    authenticated the caller with is removed before the request goes on; a pod that does not
    answer is a 503 Status."""

    async def _handle(self, request: rendering.Request):
        m = PROXY.match(request.url.path)
        if m is None:
            return await super()._handle(request)
        try:
            obj = self.objects[("v1/pods", m["ns"], m["pod"])]
        except KeyError:
            obj = None
        if obj is None or obj.deleted:
            return aiohttp.web.json_response({"kind": "Status", "code": 404,
                                              "message": f'pods "{m["pod"]}" not found'}, status=404)
        target = f"{m['scheme'] or 'http'}://{obj['status']['podIP']}:{m['port'] or 80}{m['path'] or '/'}"
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("accept", "user-agent")}
        try:
            async with aiohttp.ClientSession() as session, session.get(
                    target, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                body = await resp.read()
                return aiohttp.web.Response(status=resp.status, body=body,
                                            content_type=resp.content_type)
        except aiohttp.ClientError as exc:
            return aiohttp.web.json_response({"kind": "Status", "code": 503,
                                              "message": f"error trying to reach service: {exc}"}, status=503)


def bundle(path: Path) -> dict[str, str]:
    with tarfile.open(path) as tar:
        return {m.name.partition("/")[2]: tar.extractfile(m).read().decode() for m in tar.getmembers()}


@pytest.mark.kmock(cls=PodProxyEmulator)
async def test_report_has_members_server_and_info_through_the_pod_proxy(api, members, kubeconfig, tmp_path):
    """A real geoserver behind the emulated proxy; a second pod with no process is skipped."""
    await api.post(GC_URL, json={"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
                                 "metadata": {"name": NAME, "namespace": NS}, "spec": SPEC})  # fmt: skip
    await asyncio.to_thread(members.start, pod(0), pod_ip(pod(0)))
    await add_pod(api, pod(0), pod_ip(pod(0)))
    await add_pod(api, pod(1), pod_ip(pod(1)))  # scheduled, its server not up
    code, _, err = await plugin(kubeconfig, "report", "-f", str(tmp_path / "r.tar.gz"))
    assert code == 0, err
    files = bundle(tmp_path / "r.tar.gz")
    assert f"members/{pod(0)}.server.json" in files, files["skipped.txt"]
    server = json.loads(files[f"members/{pod(0)}.server.json"])
    info = json.loads(files[f"members/{pod(0)}.info.json"])
    assert server["ok"] and server["stats"]["aof_size"] == 0 and "num_hooks" in server["stats"]
    assert info["ok"] and info["info"]["tile38_version"] and "expired_keys" in info["info"]
    skipped = files["skipped.txt"]
    for command in ("SERVER", "INFO"):
        assert re.search(rf"^{pod(1)} {command}: 503 error trying to reach service", skipped, re.M), skipped
    assert f"{pod(0)} metrics: 503" in skipped  # these members run without --metrics-addr
    assert requests(api, "GET", f"{pod(0)}:{PORT}/proxy/SERVER")
    assert not requests(api, "GET", "/proxy/CONFIG")


@pytest.mark.kmock(cls=PodProxyEmulator)
async def test_report_via_the_proxy_skips_members_that_need_a_password(api, members, kubeconfig, tmp_path):
    """``--via proxy`` with the default (a generated password): the proxy would strip it, so no
    member is asked (test_portforward_report.py reads them through a port-forward)."""
    await api.post(GC_URL, json={"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
                                 "metadata": {"name": NAME, "namespace": NS}, "spec": {"followers": 0}})
    await asyncio.to_thread(members.start, pod(0), pod_ip(pod(0)), password="s3cret-pw")
    await add_pod(api, pod(0), pod_ip(pod(0)))
    async with aiohttp.ClientSession() as session, session.get(  # what the plugin would get
            f"{str(api.url).rstrip('/')}/api/v1/namespaces/{NS}/pods/{pod(0)}:{PORT}/proxy/SERVER",
            headers={"Authorization": "s3cret-pw"}) as resp:
        assert "auth" in (await resp.json(content_type=None))["err"]  # the header did not get through
    code, _, err = await plugin(kubeconfig, "report", "-f", str(tmp_path / "r.tar.gz"), "--via", "proxy")
    assert code == 0, err
    files = bundle(tmp_path / "r.tar.gz")
    assert f"{pod(0)} SERVER/INFO: the members require a password" in files["skipped.txt"]
    assert not any(name.endswith(".server.json") for name in files)
    assert len(requests(api, "GET", f":{PORT}/proxy/")) == 1  # only the one above
    assert "s3cret-pw" not in "".join(files.values())


def test_redact_reply_scrubs_credential_fields_only():
    stats = {"requirepass": "x", "leaderauth": "y", "tls_key": "z", "expired_keys": 4,
             "nested": [{"token": "t"}]}
    text = kp.redact_reply(json.dumps({"ok": True, "stats": stats}))
    assert json.loads(text)["stats"] == {"requirepass": "<redacted>", "leaderauth": "<redacted>",
                                         "tls_key": "<redacted>", "expired_keys": 4,
                                         "nested": [{"token": "<redacted>"}]}  # fmt: skip
    assert kp.redact_reply("<html>password=x</html>") == "<not JSON: not kept>\n"
