"""Helpers for tests/local: a fake clock, test manifests, and ticking the loop until a condition.

The control loop runs in-process (``LocalCluster.tick()``) against real geoserver processes;
only time is fake, so schedules and grace periods pass at once while replication is real.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import yaml
from geocluster.local import LocalCluster
from geocluster.localstate import Manifest, load_manifest

T0 = datetime(2030, 1, 1, 0, 1, tzinfo=UTC)  # a minute past midnight: "*/5" fires at 00:05

FAST = {
    "followers": 2,
    "aofShrink": {"schedule": None},
    "server": {"appendfsync": "always"},
    "followerResync": {"timeoutSeconds": 30},
    "divergence": {
        "probeIntervalSeconds": 1,
        "gracePeriodSeconds": 30,
        "toleranceBytes": 100,
        "maxRepairsPerHour": 10,
    },
}


class FakeClock:
    """``now()`` only moves when a test says so; ``sleep`` yields briefly in real time."""

    def __init__(self, start: datetime = T0):
        self.t = start

    def now(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0.05)


def merged(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with top-level sections replaced or merged (one level deep)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


def write_manifest(path: Path, spec: dict[str, Any], name: str = "t") -> Path:
    doc = {"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
           "metadata": {"name": name}, "spec": spec}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def manifest(tmp_path: Path, spec: dict[str, Any]) -> Manifest:
    return load_manifest(write_manifest(tmp_path / "geocluster.yaml", spec))


async def tick_until(cluster: LocalCluster, check: Callable[[], Any], clock: FakeClock,
                     step: float = 1.0, timeout: float = 20.0, what: str = "condition") -> Any:
    """Advance the fake clock by ``step``, tick, repeat until ``check()`` is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        clock.advance(step)
        await cluster.tick()
        try:
            if result := check():
                return result
        except (redis.RedisError, KeyError, IndexError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; status: {cluster.status}")


def member(cluster: LocalCluster, name: str) -> dict[str, Any]:
    return next(m for m in cluster.status.get("members", []) if m["name"] == name)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def client(cluster: LocalCluster, name: str) -> redis.Redis:
    """RESP client of one member; raw replies (no redis-py parsing of SCAN etc.)."""
    r = redis.Redis(port=cluster.sup.procs[name].port, protocol=2, socket_timeout=5)
    r.response_callbacks.clear()
    return r


def pid(cluster: LocalCluster, name: str) -> int:
    popen = cluster.sup.procs[name].popen
    assert popen is not None
    return popen.pid


def kill9(cluster: LocalCluster, name: str) -> int:
    p = pid(cluster, name)
    os.kill(p, signal.SIGKILL)
    cluster.sup.procs[name].popen.wait(5)  # type: ignore[union-attr]
    return p


def pid_alive(p: int) -> bool:
    try:
        os.kill(p, 0)
    except ProcessLookupError:
        return False
    # a zombie of a process we did not reap still "exists"; read its state
    try:
        return Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
