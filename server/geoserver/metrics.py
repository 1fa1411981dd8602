"""Prometheus metrics, exposed with prometheus-client from a registry owned by the server.

Per-command counts and latency buckets are kept in plain dicts and lists and turned into
metric families at scrape time: prometheus-client's Counter/Histogram take a lock per update,
which cost ~4 µs per command on the hot path. State gauges (tile38_aof_size, caught_up,
replication lag, ...) are read from the live server at scrape time, so they are never stale.
"""

from __future__ import annotations

import asyncio
import gc
import os
import struct
import time
from bisect import bisect_left
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from geoserver import TILE38_COMPAT_VERSION
from geoserver.binary import printable
from geoserver.commands import slices
from geoserver.delivery.stats import DeliveryCollector

if TYPE_CHECKING:
    from geoserver.server import Server

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0)
_BUCKETS_NS = tuple(int(b * 1e9) for b in BUCKETS)
MAX_COLLECTION_SERIES = 1000  # per-collection series for the largest collections only
SWEEP_SECONDS = 5.0  # a dataset sweep older than this is redone (above slices.SLICE keys)


class _CommandStats:
    """Counts by outcome and a latency histogram for one command name."""

    __slots__ = ("buckets", "errors", "ok", "total_ns")

    def __init__(self) -> None:
        self.ok = 0
        self.errors = 0
        self.total_ns = 0
        self.buckets = [0] * (len(BUCKETS) + 1)  # last one is +Inf


class CoreCounts:
    """What the compiled fast path counts as it runs requests (fastpath.py): per command of
    its own, the count, total ns and latency histogram, as int64s in one bytearray the core adds
    to directly, so an unpipelined request costs no Python for its metrics. Laid out as
    [len(bounds), the bucket bounds in ns, then per command: count, ns, the buckets];
    `ServerMetrics.commands()` folds them into by_command whenever counts are read."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        header = struct.pack(f"{1 + len(_BUCKETS_NS)}q", len(_BUCKETS_NS), *_BUCKETS_NS)
        self._row = struct.Struct(f"{len(_BUCKETS_NS) + 3}q")  # count, ns, the buckets
        self._first = len(header)  # byte offset of the first command's row
        self.buf = bytearray(header) + bytearray(self._row.size * len(names))

    def fold_into(self, by_command: defaultdict[str, _CommandStats]) -> None:
        row_format, buf = self._row, self.buf
        for i, name in enumerate(self.names):
            at = self._first + i * row_format.size
            row = row_format.unpack_from(buf, at)
            if not row[0]:
                continue
            buf[at: at + row_format.size] = bytes(row_format.size)  # the core counts from zero again
            stats = by_command[name]
            stats.ok += row[0]
            stats.total_ns += row[1]
            stats.buckets = [a + b for a, b in zip(stats.buckets, row[2:], strict=True)]


class GcClock:
    """Time spent in CPython's collector and when it last ran (SERVER EXT's gc_cpu_fraction
    and last_gc_time_seconds), from gc.callbacks: two clock reads per collection."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.last_end = 0.0
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._began
            self.last_end = time.time()


class ServerMetrics:
    def __init__(self, server: Server, core_commands: tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # read through commands(): the fast path's counts are folded in there
        self.by_command: defaultdict[str, _CommandStats] = defaultdict(_CommandStats)  # on first use
        self.core = CoreCounts(core_commands)
        self.gc = GcClock()
        self.expired_keys = 0  # objects deleted by expiry (Tile38's expired_keys)
        self.connections_received = 0
        self.clients_refused = 0  # over maxclients
        self.clients_disconnected = 0  # output-buffer limits, timeouts
        self.shrinks = Counter("geoserver_aof_shrinks_total", "AOFSHRINK runs by result.",
                               ["result"], registry=self.registry)
        self.resyncs = Counter("geoserver_full_resyncs_total",
                               "Full resyncs from the leader performed by this follower.",
                               registry=self.registry)
        self.link_timeouts = Counter("geoserver_replication_link_timeouts_total",
                                     "Leader links this follower found dead after a silence.",
                                     registry=self.registry)
        self.resync_refusals = Counter("geoserver_resync_refusals_total",
                                       "Full resyncs refused to keep this follower's dataset.",
                                       registry=self.registry)
        self.registry.register(_CommandCollector(self))
        self.registry.register(_StateCollector(server))
        # process_* and python_info: the counterparts of Tile38's process and go_* collectors
        self.registry.register(PROCESS_COLLECTOR)
        self.registry.register(PLATFORM_COLLECTOR)
        self.registry.register(DeliveryCollector(lambda: server.delivery))  # hooks: delivery/stats.py

    def observe_command(self, name: str, elapsed_ns: int, ok: bool) -> None:
        stats = self.by_command[name]
        if ok:
            stats.ok += 1
        else:
            stats.errors += 1
        stats.total_ns += elapsed_ns
        stats.buckets[bisect_left(_BUCKETS_NS, elapsed_ns)] += 1

    def commands(self) -> defaultdict[str, _CommandStats]:
        """Counts and latency by command name, with the fast path's folded in."""
        self.core.fold_into(self.by_command)
        return self.by_command

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CommandCollector:
    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        m = self.metrics
        total = CounterMetricFamily("tile38_cmd", "Commands processed, by command and outcome.",
                                    labels=["cmd", "result"])
        latency = HistogramMetricFamily("tile38_cmd_duration_seconds",
                                        "Command execution time in seconds.", labels=["cmd"])
        for name, s in sorted(m.commands().items()):
            total.add_metric([name, "ok"], s.ok)
            total.add_metric([name, "error"], s.errors)
            cumulative, running = [], 0
            for bound, count in zip((*map(str, BUCKETS), "+Inf"), s.buckets, strict=True):
                running += count
                cumulative.append((bound, running))
            latency.add_metric([name], cumulative, s.total_ns / 1e9)
        yield total
        yield latency
        yield CounterMetricFamily("tile38_connections_received", "Client connections accepted.",
                                  value=m.connections_received)
        yield CounterMetricFamily("geoserver_clients_refused", "Connections refused over maxclients.",
                                  value=m.clients_refused)
        yield CounterMetricFamily("geoserver_clients_disconnected",
                                  "Clients disconnected for an output-buffer limit or a timeout.",
                                  value=m.clients_disconnected)


Figures = tuple[dict[str, int], list[tuple[Any, ...]]]


def _figures(found: tuple[dict[str, int], list[tuple[str, Any]]]) -> Figures:
    """Totals and (key, objects, points, strings, weight) of the collections with series; a
    binary key's undecodable bytes are U+FFFD in its label (the exposition is UTF-8)."""
    totals, largest = found
    return totals, [(printable(key), len(c), c.num_points, c.num_strings, c.weight) for key, c in largest]


class _StateCollector:
    """Gauges computed from the server's state on each scrape.

    The dataset figures (totals and per-collection series) are counted at scrape time while
    the dataset has at most `slices.SLICE` keys. Above that, counting them would hold the loop
    (2 s at 100k keys), so a background sweep counts them in slices and a scrape serves the
    last sweep, starting a new one when it is older than SWEEP_SECONDS (the first scrape after
    start then has no dataset figures yet). Per-collection series are kept for the
    MAX_COLLECTION_SERIES largest collections only (by objects)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._sweep: tuple[float, dict[str, int], list[tuple[Any, ...]]] | None = None
        self._sweeping: asyncio.Task | None = None

    def describe(self) -> list[Any]:
        return []

    def _dataset(self) -> Figures | None:
        db = self.server.db
        if len(db.collections) <= slices.SLICE:
            return _figures(slices.run(db.stats_steps(largest=MAX_COLLECTION_SERIES)))
        fresh = self._sweep is not None and time.monotonic() - self._sweep[0] < SWEEP_SECONDS
        if not fresh and (self._sweeping is None or self._sweeping.done()):
            self._sweeping = asyncio.get_running_loop().create_task(self._run_sweep(), name="metrics-sweep")
        return self._sweep[1:] if self._sweep is not None else None

    async def _run_sweep(self) -> None:
        found = await slices.run_sliced(self.server.db.stats_steps(largest=MAX_COLLECTION_SERIES))
        self._sweep = (time.monotonic(), *_figures(found))

    def collect(self) -> Any:
        s = self.server
        dataset = self._dataset()
        fol = s.follower

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        # Tile38's names (`_bytes`, per-collection series), so its dashboards work unchanged;
        # tile38_aof_size / tile38_in_memory_size are kept too (earlier releases served them)
        yield gauge("tile38_aof_size_bytes", "AOF size in bytes as written by this server.", s.aof_size)
        yield gauge("tile38_aof_size", "Same as tile38_aof_size_bytes.", s.aof_size)
        yield gauge("tile38_collections", "Collections.", len(s.db.collections))
        if dataset is not None:
            stats, per_collection = dataset
            yield gauge("tile38_in_memory_size_bytes", "Approximate bytes held by the dataset.",
                        stats["in_memory_size"])
            yield gauge("tile38_in_memory_size", "Same as tile38_in_memory_size_bytes.",
                        stats["in_memory_size"])
            yield gauge("tile38_avg_item_size_bytes", "Approximate bytes per object.",
                        stats["in_memory_size"] // stats["num_objects"] if stats["num_objects"] else 0)
            per_col = {
                "tile38_collection_objects": "Objects in the collection.",
                "tile38_collection_points": "Point objects in the collection.",
                "tile38_collection_strings": "String objects in the collection.",
                "tile38_collection_weight_bytes": "Approximate bytes of the collection.",
            }
            for i, (name, doc) in enumerate(per_col.items(), start=1):
                family = GaugeMetricFamily(name, doc, labels=["col"])
                for values in per_collection:
                    family.add_metric([values[0]], values[i])
                yield family
        yield gauge("tile38_connected_clients", "Connected clients.", len(s.clients))
        yield gauge("tile38_hooks", "Hooks and channels defined (SERVER num_hooks).",
                    len(s.fences.registry(s.db)))
        yield gauge("geoserver_live_fences", "Connections streaming a live fence.",
                    sum(len(v) for v in s.fences.live.values()))
        yield gauge("geoserver_pubsub_subscribers", "Connections in SUBSCRIBE/PSUBSCRIBE.",
                    s.pubsub.subscriber_count())
        yield CounterMetricFamily("geoserver_fence_events", "Fence events produced (live, channel, hook).",
                                  value=s.fences.events)
        yield CounterMetricFamily("geoserver_pubsub_messages", "Messages handed to subscribers.",
                                  value=s.pubsub.published)
        yield from _tile38_families(s)
        yield gauge("tile38_mem_alloc", "Resident memory of the process in bytes.", s.rss_bytes())
        yield gauge("geoserver_aof_shrinking", "1 while an AOFSHRINK runs.", int(s.shrink.running))
        yield gauge("geoserver_last_shrink_duration_seconds", "Duration of the last AOFSHRINK.",
                    s.shrink.last_duration)
        yield gauge("geoserver_is_follower", "1 when this server follows a leader.", int(fol is not None))
        yield gauge("geoserver_connected_followers", "Followers streaming this server's AOF.",
                    len(s.live_streams))
        if fol is not None:
            yield gauge("tile38_caught_up", "1 when the follower has applied the leader's AOF.",
                        int(fol.caught_up))
            yield gauge("geoserver_replication_lag_bytes",
                        "Followers only: the leader's aof_size as last known (handshake, bytes "
                        "streamed since, SERVER each second of stream silence) minus ours.",
                        max(0, fol.leader_size_seen - s.aof_size))
            yield gauge("geoserver_replication_link_up", "1 while the leader's AOF streams in.",
                        int(fol.connected))
            yield gauge("geoserver_resync_refused", "1 while a full resync is refused.",
                        int(bool(fol.refusal)))
            yield gauge("geoserver_replication_retry_delay_seconds",
                        "Current backoff between attempts to reach the leader.", fol.backoff.delay)


def _tile38_families(s: Server) -> Any:
    """The rest of Tile38's families (internal/server/metrics.go), same names and labels."""
    from geoserver.commands.serverinfo import messages_sent

    def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, value=value)

    rss = s.rss_bytes()
    yield gauge("tile38_pid", "Process id.", os.getpid())
    yield gauge("tile38_heap_size_bytes", "Resident memory in bytes (Go: heap in use).", rss)
    yield gauge("tile38_memory_reap_released_bytes", "Go heap released to the OS: 0 here.", 0)
    yield gauge("tile38_memory_max_heap_size_bytes", "The maxmemory setting in bytes.",
                s.config.maxmemory)
    yield gauge("tile38_pointer_size_bytes", "Pointer size in bytes.", 8)
    yield gauge("tile38_num_cpus", "CPUs of the host.", os.cpu_count() or 1)
    yield CounterMetricFamily("tile38_messages_sent", "Hook messages delivered.",
                              value=messages_sent(s))
    yield CounterMetricFamily("tile38_expired_keys", "Objects deleted by expiry.",
                              value=s.metrics.expired_keys)
    info = GaugeMetricFamily("tile38_server_info", "Server info.", labels=["id", "version"])
    info.add_metric([s.config.server_id, TILE38_COMPAT_VERSION], 1.0)
    yield info
    fol = s.follower
    repl = GaugeMetricFamily("tile38_replication_info", "Replication info.",
                             labels=["role", "following", "caught_up", "caught_up_once"])
    if fol is None:
        repl.add_metric(["leader", "", "", ""], 1.0)
    else:
        repl.add_metric(["follower", f"{fol.host}:{fol.port}", str(fol.caught_up).lower(),
                         str(fol.caught_up_once).lower()], 1.0)
    yield repl
    yield gauge("tile38_start_time_seconds", "Start time, seconds since the epoch.", int(s.started))
