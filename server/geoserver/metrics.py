"""Prometheus metrics via prometheus-client, in a registry owned by the server.

Counters and the latency histogram are updated per command (label children cached so a hot
path costs one dict lookup); state gauges (tile38_aof_size, caught_up, replication lag, ...)
are read from the live server at scrape time by a custom collector, so they are never stale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from geoserver.server import Server

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    def __init__(self, server: Server) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.commands = Counter(
            "tile38_cmd_total", "Commands processed, by command and outcome.",
            ["cmd", "result"], registry=self.registry,
        )
        self.latency = Histogram(
            "tile38_cmd_duration_seconds", "Command execution time in seconds.", ["cmd"],
            buckets=(1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0),
            registry=self.registry,
        )
        self.connections = Counter(
            "tile38_connections_received_total", "Client connections accepted.", registry=self.registry
        )
        self.shrinks = Counter(
            "geoserver_aof_shrinks_total", "AOFSHRINK runs by result.", ["result"], registry=self.registry
        )
        self.resyncs = Counter(
            "geoserver_full_resyncs_total", "Full resyncs from the leader performed by this follower.",
            registry=self.registry,
        )
        self._children: dict[tuple[str, bool], tuple[Any, Any]] = {}
        self.registry.register(_StateCollector(server))

    def observe_command(self, name: str, elapsed_ns: int, ok: bool) -> None:
        pair = self._children.get((name, ok))
        if pair is None:
            pair = (self.commands.labels(name, "ok" if ok else "error"), self.latency.labels(name))
            self._children[(name, ok)] = pair
        pair[0].inc()
        pair[1].observe(elapsed_ns / 1e9)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges computed from the server's state on each scrape."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        s = self.server
        stats = s.db.stats()
        fol = s.follower

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)

        yield gauge("tile38_aof_size", "AOF size in bytes as written by this server.", s.aof_size)
        yield gauge("tile38_collection_objects", "Objects stored.", stats["num_objects"])
        yield gauge("tile38_collection_points", "Points stored.", stats["num_points"])
        yield gauge("tile38_collections", "Collections.", stats["num_collections"])
        yield gauge("tile38_in_memory_size", "Approximate bytes held by the dataset.",
                    stats["in_memory_size"])
        yield gauge("tile38_connected_clients", "Connected clients.", len(s.clients))
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
                        "Leader AOF bytes not yet applied by this follower.",
                        max(0, fol.leader_aof_size - s.aof_size))
