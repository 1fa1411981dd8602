"""Harness for running the real kopf operator against kmock's emulated Kubernetes API.

Mocked: only the Kubernetes API (no kube-apiserver can run here). It has no controllers, so the
tests play the StatefulSet controller: they create Pod objects whose ``status.podIP`` is a
loopback address (127.0.0.2, ...) where a real geoserver process listens — or, until
``geoserver`` is runnable, the contract-level stand-in ``fakegeo.py`` — on port 9851.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import kmock as kmock_lib
from kmock._internal import k8s, rendering

os.environ.setdefault("GEOCLUSTER_TICK_SECONDS", "0.3")
os.environ.setdefault("GEOCLUSTER_PROBE_TIMEOUT", "1")

HERE = Path(__file__).parent
PORT = 9851
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
    "v1/namespaces": {"kind": "Namespace", "namespaced": False},
    "apiextensions.k8s.io/v1/customresourcedefinitions": {
        "kind": "CustomResourceDefinition", "namespaced": False,
    },
}  # fmt: skip


class KopfEmulator(k8s.KubernetesEmulator):
    """The emulator plus what kopf and ownerReferences need: uid, resourceVersion,
    creationTimestamp and generation on writes, and no replay for resumed watches."""

    _rv = 0

    def _next_rv(self) -> str:
        KopfEmulator._rv += 1
        return str(KopfEmulator._rv)

    async def _handle(self, request: rendering.Request):
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
    """The real geoserver if it runs, else the contract-level fake."""
    exe = shutil.which("geoserver", path=str(Path(sys.executable).parent))
    if exe and subprocess.run([exe, "--help"], capture_output=True).returncode == 0:
        return [exe]
    return [sys.executable, str(HERE / "fakegeo.py")]


class Members:
    """geoserver processes standing in for pods, one loopback address each."""

    def __init__(self, tmp: Path):
        self.tmp, self.procs, self.cmd = tmp, {}, geoserver_command()
        self.real = "fakegeo.py" not in self.cmd[-1]

    def start(self, name: str, ip: str, follow: str | None = None, fresh: bool = False) -> None:
        """Start a member; ``fresh`` = a new data dir (a pod with a new volume)."""
        data = self.tmp / (f"{name}-{time.monotonic_ns()}" if fresh else name)
        data.mkdir(exist_ok=True)
        args = [*self.cmd, "--host", ip, "--port", str(PORT), "--dir", str(data)]
        if follow:
            args += ["--follow", follow]
        self.procs[name] = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection((ip, PORT), timeout=0.2).close()
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

    def __init__(self):
        import kopf
        from geocluster import handlers

        self.stop_flag, self.ready = threading.Event(), threading.Event()
        settings = kopf.OperatorSettings()
        settings.watching.server_timeout = 10
        coro = kopf.operator(
            registry=handlers.registry(), settings=settings, standalone=True,
            clusterwide=True, stop_flag=self.stop_flag, ready_flag=self.ready,
        )  # fmt: skip
        self.thread = threading.Thread(target=asyncio.run, args=(coro,), daemon=True)

    async def start(self) -> Operator:
        self.thread.start()
        assert await asyncio.to_thread(self.ready.wait, 10)
        return self

    async def stop(self) -> None:
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 10)
