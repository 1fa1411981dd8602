"""Delivery counts per hook, kept in plain ints (as metrics.py does for commands) and turned
into Prometheus families at scrape time by `DeliveryCollector`.

Names: Tile38's `tile38_messages_sent_total` (hook events delivered), then ours under
`geoserver_hook_*` (docs/metrics.md). Per-hook series are kept for the MAX_HOOK_SERIES hooks that
produced most events; the unlabeled totals count every hook.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0)
MAX_HOOK_SERIES = 1000
DROP_REASONS = ("overflow", "expired", "unusable", "forgotten")


class HookStats:
    __slots__ = ("buckets", "dropped", "failed", "latency_sum", "produced", "sent")

    def __init__(self) -> None:
        self.produced = 0  # events enqueued
        self.sent = 0  # events an endpoint took
        self.failed = 0  # attempts at which every endpoint of the hook failed
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.latency_sum = 0.0  # seconds from enqueue to delivered, summed
        self.buckets = [0] * (len(BUCKETS) + 1)


class DeliveryStats:
    def __init__(self) -> None:
        self.hooks: dict[str, HookStats] = {}
        self.totals = HookStats()

    def _of(self, hook: str) -> HookStats:
        stats = self.hooks.get(hook)
        if stats is None:
            stats = self.hooks[hook] = HookStats()
        return stats

    def produced(self, hook: str) -> None:
        self._of(hook).produced += 1
        self.totals.produced += 1

    def sent(self, hook: str, latency: float) -> None:
        for s in (self._of(hook), self.totals):
            s.sent += 1
            s.latency_sum += latency
            s.buckets[bisect_left(BUCKETS, latency)] += 1

    def failed(self, hook: str) -> None:
        self._of(hook).failed += 1
        self.totals.failed += 1

    def dropped(self, hook: str, reason: str, n: int = 1) -> None:
        if reason != "forgotten":
            self._of(hook).dropped[reason] += n
        self.totals.dropped[reason] += n

    def forget(self, hook: str) -> None:
        self.hooks.pop(hook, None)  # its series end with the hook


class DeliveryCollector:
    """Prometheus families from the live sink of a server (absent until the server starts)."""

    def __init__(self, source: Callable[[], Any]) -> None:
        self.source = source  # () -> the server's DurableSink, or something without stats

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        sink = self.source()
        stats: DeliveryStats | None = getattr(sink, "stats", None)
        if stats is None:
            return
        counts: dict[str, int] = sink.queue.counts
        t = stats.totals
        yield CounterMetricFamily("tile38_messages_sent", "Hook events delivered to an endpoint.",
                                  value=t.sent)
        yield GaugeMetricFamily("geoserver_hook_queue_events", "Hook events queued, not yet delivered.",
                                value=sum(counts.values()))
        yield GaugeMetricFamily("geoserver_hook_delivering",
                                "1 while this server delivers hook events (the leader).",
                                value=int(sink.worker.running))
        top = sorted(stats.hooks.items(), key=lambda kv: -kv[1].produced)[:MAX_HOOK_SERIES]
        families = {
            "produced": CounterMetricFamily("geoserver_hook_events", "Hook events produced (queued).",
                                            labels=["hook"]),
            "sent": CounterMetricFamily("geoserver_hook_events_sent", "Hook events delivered.",
                                        labels=["hook"]),
            "failed": CounterMetricFamily("geoserver_hook_send_failures",
                                          "Delivery attempts at which every endpoint of the hook failed.",
                                          labels=["hook"]),
        }
        dropped = CounterMetricFamily("geoserver_hook_events_dropped",
                                      "Hook events dropped undelivered, by reason.",
                                      labels=["hook", "reason"])
        queued = GaugeMetricFamily("geoserver_hook_events_queued", "Hook events queued per hook.",
                                   labels=["hook"])
        latency = HistogramMetricFamily("geoserver_hook_delivery_seconds",
                                        "Seconds from an event's enqueue to its delivery.", labels=["hook"])
        for hook, s in top:
            for name, family in families.items():
                family.add_metric([hook], getattr(s, name))
            for reason in ("overflow", "expired", "unusable"):
                dropped.add_metric([hook, reason], s.dropped[reason])
            queued.add_metric([hook], counts.get(hook, 0))
            latency.add_metric([hook], _cumulative(s.buckets), s.latency_sum)
        yield from families.values()
        yield CounterMetricFamily("geoserver_hook_events_forgotten",
                                  "Queued hook events dropped because their hook was deleted.",
                                  value=t.dropped["forgotten"])
        yield dropped
        yield queued
        yield latency


def _cumulative(buckets: list[int]) -> list[tuple[str, int]]:
    out, running = [], 0
    for bound, count in zip((*map(str, BUCKETS), "+Inf"), buckets, strict=True):
        running += count
        out.append((bound, running))
    return out
