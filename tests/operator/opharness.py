"""Harness for running the real kopf operator against kmock's emulated Kubernetes API.

Mocked: only the Kubernetes API (no kube-apiserver can run here). It has no controllers, so the
tests play the StatefulSet controller: they create Pod objects whose ``status.podIP`` is a
loopback address (127.a.b.2, ...) where a real geoserver process listens on port 9851. Pod
``<name>-k`` has address ``ip(2 + k)``; :func:`start_member` starts one as the StatefulSet and
the kubelet would: following the leader its ConfigMap names, with the template's hash.
Nothing resolves pod DNS names here, so the operator is told to FOLLOW by pod IP
(GEOCLUSTER_FOLLOW_BY=ip).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import kmock as kmock_lib
from geocluster import probe
from geocluster import resources as res
from geocluster.spec import GROUP, PLURAL, VERSION, parse_spec
from kmock._internal import k8s, rendering

os.environ.setdefault("GEOCLUSTER_TICK_SECONDS", "0.3")
os.environ.setdefault("GEOCLUSTER_PROBE_TIMEOUT", "1")
os.environ.setdefault("GEOCLUSTER_FOLLOW_BY", "ip")

PORT = 9851
# A loopback /24 of our own per pytest process (127.a.b.x), so that concurrent runs of this
# suite (two checkouts, CI next to a developer) never bind or probe each other's members.
_NET = f"127.{random.randrange(1, 255)}.{random.randrange(1, 255)}."


def ip(host: int) -> str:
    """The loopback address standing in for pod ``host`` of this run (2 = the leader)."""
    return f"{_NET}{host}"


RESOURCES = {
    "geo.geocluster.io/v1alpha1/geoclusters": {
        "kind": "GeoCluster", "namespaced": True, "subresources": ["status", "scale"],
        "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
    },
    "v1/configmaps": {"kind": "ConfigMap", "namespaced": True},
    "v1/services": {"kind": "Service", "namespaced": True},
    "v1/pods": {"kind": "Pod", "namespaced": True},
    "v1/secrets": {"kind": "Secret", "namespaced": True},
    "v1/events": {"kind": "Event", "namespaced": True},
    "apps/v1/statefulsets": {"kind": "StatefulSet", "namespaced": True},
    "policy/v1/poddisruptionbudgets": {"kind": "PodDisruptionBudget", "namespaced": True},
    "networking.k8s.io/v1/networkpolicies": {"kind": "NetworkPolicy", "namespaced": True},
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "kopf.dev/v1/clusterkopfpeerings": {"kind": "ClusterKopfPeering", "namespaced": False},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition", "namespaced": False,
    },
}  # fmt: skip


class KopfEmulator(k8s.KubernetesEmulator):
    """The emulator plus what kopf and ownerReferences need: uid, resourceVersion,
    creationTimestamp and generation on writes, and no replay for resumed watches."""

    _rv = 0
    # (method, path part, seconds): slow answers, to make races between handlers deterministic
    delays: tuple[tuple[str, str, float], ...] = ()
    # path prefixes of APIs this "cluster" lacks (e.g. cert-manager's, when it is not
    # installed): every request there gets a 404, as from an API server without the CRD
    absent_apis: tuple[str, ...] = ()

    def _next_rv(self) -> str:
        KopfEmulator._rv += 1
        return str(KopfEmulator._rv)

    async def _handle(self, request: rendering.Request):
        for method, part, seconds in self.delays:
            if request.method.value.upper() == method and part in request.url.path:
                await asyncio.sleep(seconds)
        if any(request.url.path.startswith(prefix) for prefix in self.absent_apis):
            raise k8s.KubernetesObjectNotFoundError()
        if request.resource is not None and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if request.action == kmock_lib.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                if "name" not in meta and "generateName" in meta:
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault("generation", 1)
                now = datetime.datetime.now(datetime.UTC)
                meta.setdefault("creationTimestamp", now.strftime("%Y-%m-%dT%H:%M:%SZ"))
            elif request.action == kmock_lib.action.UPDATE and "spec" in request.data:
                key = (request.resource, request.namespace, request.name)
                if key in self.objects and not self.objects[key].deleted:
                    meta["generation"] = self.objects[key].get("metadata", {}).get("generation", 1) + 1
            meta["resourceVersion"] = self._next_rv()
        return await super()._handle(request)

    async def _serve_watch(self, request: rendering.Request):
        if not request.params.get("resourceVersion"):
            async for event in super()._serve_watch(request):
                yield event
            return
        yield b""
        async for event in self._buses[request.resource]:
            obj = event.get("object", {}).get("metadata", {})
            if request.namespace in (None, obj.get("namespace")):
                yield event


def geoserver_command() -> list[str]:
    """The installed geoserver console script (the project's own, from this venv)."""
    exe = shutil.which("geoserver", path=str(Path(sys.executable).parent))
    if exe is None:
        raise RuntimeError("geoserver is not installed in this environment: pip install -e .")
    return [exe]


class Members:
    """geoserver processes standing in for pods, one loopback address each."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs, self.cmd = tmp, {}, geoserver_command()

    def start(
        self, name: str, ip: str, follow: str | None = None, fresh: bool = False, password: str = "",
        args: tuple[str, ...] = (),
    ) -> None:
        """Start a member; ``fresh`` = a new data dir (a pod with a new volume); ``password``
        arrives in the environment, as the pod template's secretKeyRef env gives it; ``args``
        are more flags (e.g. the TLS ones the pod template passes)."""
        data = self.tmp / (f"{name}-{time.monotonic_ns()}" if fresh else name)
        data.mkdir(exist_ok=True)
        command = [*self.cmd, "--host", ip, "--port", str(PORT), "--dir", str(data)]
        if follow:
            command += ["--follow", follow]
        command += args
        env = {**os.environ, "GEOSERVER_REQUIREPASS": password, "GEOSERVER_LEADERAUTH": password}
        self.procs[name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection((ip, PORT), timeout=0.2).close()
                if self.procs[name].poll() is not None:  # someone else's process answered
                    raise RuntimeError(f"{name}: {ip}:{PORT} is taken by another process")
                return
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start on {ip}:{PORT}")

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc:
            proc.kill()
            proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


class Operator:
    """The real kopf operator in its own thread and event loop (see kubernetes-notes A1)."""

    def __init__(self, peering: str | None = None, priority: int = 0):
        """Standalone by default; ``peering`` joins that ClusterKopfPeering with ``priority``."""
        import kopf
        from geocluster import handlers

        self.stop_flag, self.ready = threading.Event(), threading.Event()
        settings = kopf.OperatorSettings()
        settings.watching.server_timeout = 10
        coro = kopf.operator(
            registry=handlers.registry(), settings=settings, standalone=peering is None,
            peering_name=peering, priority=priority,
            clusterwide=True, stop_flag=self.stop_flag, ready_flag=self.ready,
        )  # fmt: skip
        self.thread = threading.Thread(target=asyncio.run, args=(coro,), daemon=True)

    async def start(self) -> Operator:
        self.thread.start()
        assert await asyncio.to_thread(self.ready.wait, 10)
        return self

    async def stop(self) -> None:
        self.stop_flag.set()
        if self.thread.ident is not None:  # started
            await asyncio.to_thread(self.thread.join, 10)


# --- shared scenario helpers ---------------------------------------------------------------

NS, NAME = "ns1", "gc"
GC_URL = f"/apis/{GROUP}/{VERSION}/namespaces/{NS}/{PLURAL}"
GC_KEY = (f"{GROUP}/{VERSION}/{PLURAL}", NS, NAME)
LEADER_IP = ip(2)
# The scenarios' members run without a password, so their spec opts out of the generated one
# explicitly; test_operator_auth.py runs the default (a generated password) end to end.
SPEC = {
    "followers": 2,
    "server": {"generatePassword": False},
    "aofShrink": {"schedule": None},
    "followerResync": {"timeoutSeconds": 5},
    "divergence": {"gracePeriodSeconds": 1, "probeIntervalSeconds": 1, "toleranceBytes": 100},
}


async def eventually(check, timeout: float = 15.0, what: str = "condition", api=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _quiet():
            if result := check():
                return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; last status: {_LAST.get('status')}")


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        return typ in (KeyError, StopIteration, TypeError, IndexError)


_LAST: dict = {}


def gc_status(api) -> dict:
    _LAST["status"] = dict(api.objects[GC_KEY].get("status") or {})
    return _LAST["status"]


def member(api, name) -> dict:
    return next(m for m in gc_status(api)["members"] if m["name"] == name)


def condition(api, type_) -> dict:
    return next(c for c in gc_status(api)["conditions"] if c["type"] == type_)


async def stats(ip: str) -> dict:
    async with probe.Client(f"{ip}:9851") as c:
        return (await c.command("SERVER"))["stats"]


def pod(k: int) -> str:
    """Name of the member pod with ordinal ``k``."""
    return f"{NAME}-{k}"


def pod_ip(name: str) -> str:
    """The stand-in address of a member pod (``<name>-k`` -> ip(2 + k); the v1alpha1
    ``<name>-leader-k`` -> ip(20 + k), ``<name>-follower-k`` -> ip(30 + k))."""
    base = 20 if "-leader-" in name else 30 if "-follower-" in name else 2
    return ip(base + int(name.rpartition("-")[2]))


async def add_pod(api, name: str, ip: str, role: str | None = None,
                  template_hash: str | None = None) -> None:
    """A Pod object (``role``: a label set already, as the v1alpha1 StatefulSets did)."""
    labels = {"app.kubernetes.io/name": "geoserver", "app.kubernetes.io/instance": NAME}
    if role:
        labels[f"{GROUP}/role"] = role
    meta = {"name": name, "namespace": NS, "labels": labels}
    if template_hash:
        meta["annotations"] = {res.TEMPLATE_HASH: template_hash}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
           "status": {"podIP": ip, "phase": "Running"}}  # fmt: skip
    await api.post(f"/api/v1/namespaces/{NS}/pods", json=pod)


STS_KEY = ("apps/v1/statefulsets", NS, NAME)
CM_KEY = ("v1/configmaps", NS, f"{NAME}-config")


def template_hash(api, spec=None) -> str:
    """The hash on the StatefulSet's pod template (or, before it exists, of ``spec``'s)."""
    with contextlib.suppress(KeyError):
        return api.objects[STS_KEY]["spec"]["template"]["metadata"]["annotations"][res.TEMPLATE_HASH]
    cluster = res.Cluster(NAME, NS, "", parse_spec(dict(spec if spec is not None else SPEC)))
    return res.template_hash(cluster)


def config_leader(api) -> str:
    """The leader member the ConfigMap names (the first pod before it exists)."""
    with contextlib.suppress(KeyError):
        return api.objects[CM_KEY]["data"]["leaderMember"]
    return pod(0)


async def start_member(api, members: Members, name: str, fresh: bool = False, spec=None,
                       args: tuple[str, ...] = (), password: str = "") -> None:
    """Play the StatefulSet controller and the kubelet for one pod: a geoserver started with
    ``--follow`` the ConfigMap's leader (itself, if it is the one named), then its Pod object
    with the template's hash."""
    leader = config_leader(api)
    await asyncio.to_thread(members.start, name, pod_ip(name), f"{pod_ip(leader)}:{PORT}", fresh,
                            password, args)  # fmt: skip
    await add_pod(api, name, pod_ip(name), template_hash=template_hash(api, spec))


async def remove_pod(api, members: Members, name: str) -> None:
    """The pod is gone (its node with it): no process, no Pod object."""
    members.stop(name)
    key = ("v1/pods", NS, name)
    with contextlib.suppress(Exception):
        if not api.objects[key].deleted:
            await api.delete(f"/api/v1/namespaces/{NS}/pods/{name}")


async def leading(address: str, timeout: float = 15.0) -> None:
    """Until the member at ``address`` follows no one (the operator made it the leader)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(probe.ProbeError, KeyError):
            if not (await stats(address)).get("following"):
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{address} does not lead after {timeout}s")


async def start_cluster(api, members: Members, spec=SPEC, wait_leader: bool = True, **meta) -> None:
    """Play the StatefulSet controller: processes + Pod objects, then create the GeoCluster;
    then (``wait_leader``, with the operator running) until the operator made pod 0 lead."""
    for k in range(spec["followers"] + 1):
        await start_member(api, members, pod(k), spec=spec)
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GeoCluster",
            "metadata": {"name": NAME, "namespace": NS, **meta}, "spec": spec}  # fmt: skip
    await api.post(GC_URL, json=body)
    if wait_leader:
        await leading(LEADER_IP)


async def make_diverge(members: Members, name: str, address: str, objects: int = 200) -> None:
    """Point a follower at a decoy leader holding ``objects`` points: caught up, but the wrong
    size (or, with as much data as the leader, only the wrong leader).

    RESYNC cannot fix that (it resyncs from the decoy), so the ladder must go on to restart.
    """
    decoy = ip(9)
    await asyncio.to_thread(members.start, "decoy", decoy)
    async with probe.Client(f"{decoy}:9851") as c:
        for i in range(objects):
            await c.command("SET", "fleet", f"t{i}", "POINT", "33", "-115")
    async with probe.Client(f"{address}:9851") as c:
        await c.command("FOLLOW", decoy, "9851")


def requests(api, method: str, path_part: str) -> list:
    return [r for r in api if r.method.value.upper() == method and path_part in str(r.url)]


def repairs(api) -> list[str]:
    """'<action> <member>' of every RepairStarted Event posted, in order."""
    events = [r.data for r in requests(api, "POST", "/events")]
    return [" ".join(e["message"].split()[:2]).rstrip(":") for e in events
            if e.get("reason") == "RepairStarted"]  # fmt: skip


async def annotate(api, annotations: dict[str, str | None]) -> None:
    """Merge-patch the GeoCluster's annotations (None removes one), as `kubectl annotate` does."""
    await api.patch(f"{GC_URL}/{NAME}", json={"metadata": {"annotations": annotations}})


def annotations(api) -> dict:
    return dict(api.objects[GC_KEY]["metadata"].get("annotations") or {})


def events(api, reason: str | None = None, type_: str | None = None) -> list[dict]:
    """Event bodies the operator posted, optionally of one reason and/or type."""
    out = [r.data for r in requests(api, "POST", "/events")]
    return [e for e in out if reason in (None, e.get("reason")) and type_ in (None, e.get("type"))]


async def status_refreshes(api, count: int = 3, timeout: float = 15.0) -> None:
    """Wait until the timer has written status ``count`` more times (instead of sleeping)."""
    base = len(requests(api, "PATCH", f"/{PLURAL}/{NAME}/status"))
    await eventually(
        lambda: len(requests(api, "PATCH", f"/{PLURAL}/{NAME}/status")) >= base + count,
        timeout, what=f"{count} status refreshes",
    )  # fmt: skip
