"""Helpers for tests/local: a fake clock, test manifests, and ticking the loop until a condition.

The control loop runs in-process (``LocalCluster.tick()``) against real geoserver processes;
only time is fake, so schedules and grace periods pass at once while replication is real.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import threading
import time
from collections import Counter
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


class Writer(threading.Thread):
    """A client writing ``SET <key> w<n> POINT ...`` as fast as it can to whoever leads now,
    logging every acknowledged write (id, monotonic time, member). On any error (``read only``
    during a switchover, ``not the leader``, a refused or silent connection) it reconnects to the
    current leader and goes on with a new id: an id is in ``acked`` only if a leader said OK."""

    def __init__(self, cluster: LocalCluster, key: str = "fleet", timeout: float = 1.0):
        super().__init__(daemon=True)
        self.cluster, self.key, self.timeout = cluster, key, timeout
        self.acked: list[tuple[str, float, str]] = []
        self.errors: Counter[str] = Counter()
        self.done = threading.Event()

    def run(self) -> None:
        n, conn, name = 0, None, ""
        while not self.done.is_set():
            if conn is None:
                lead = self.cluster.sup.leader
                name = lead.name
                conn = redis.Redis(port=lead.port, protocol=2, socket_timeout=self.timeout,
                                   socket_connect_timeout=self.timeout)
            n += 1
            try:
                conn.execute_command("SET", self.key, f"w{n}", "POINT", 33 + (n % 1000) / 1000, -115)
                self.acked.append((f"w{n}", time.monotonic(), name))
            except redis.RedisError as exc:
                self.errors[str(exc).split(":")[0][:60]] += 1
                conn.close()
                conn = None
                time.sleep(0.005)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self.done.set()
        self.join(10)

    def first_ack_after(self, moment: float, not_by: str = "") -> tuple[str, float, str] | None:
        """The first write acknowledged after ``moment`` (by another member than ``not_by``)."""
        return next((a for a in self.acked if a[1] > moment and a[2] != not_by), None)

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time without an acknowledged write between ``start`` and ``end``."""
        times = [start] + [t for _, t, _ in self.acked if start < t < end] + [end]
        return max(b - a for a, b in itertools.pairwise(times))

    def lost(self, port: int) -> list[str]:
        """Acknowledged ids missing on the member listening on ``port``."""
        r = redis.Redis(port=port, protocol=2, socket_timeout=10)
        r.response_callbacks.clear()
        acked = list(self.acked)  # the writer may still be appending
        pipe = r.pipeline(transaction=False)
        for oid, _, _ in acked:
            pipe.execute_command("GET", self.key, oid)
        replies = pipe.execute(raise_on_error=False)
        return [oid for (oid, _, _), reply in zip(acked, replies, strict=True)
                if reply is None or isinstance(reply, Exception)]
