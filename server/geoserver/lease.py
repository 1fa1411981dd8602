"""The leader lease: fencing by time, so a leader cut off from its operator stops taking writes
by itself before the operator promotes anyone else (docs/operator.md#leader-lease).

A server that was never given a lease behaves as Tile38 does (no gate). Once given one
(`LEASE epoch ms`), it takes writes only while the lease is valid on its own monotonic clock:
after it lapses every write gets :data:`EXPIRED` (`-LEASE expired ...`, retryable: the leader
may have moved). Invariants:

- **Anchored at the server's clock reading, not at receipt.** `LEASE` alone answers ``clock``
  (this server's monotonic milliseconds); `LEASE epoch ms SINCE clock` grants until
  ``clock + ms``. A grant delivered late (a buffered request read after a SIGSTOP, a TCP
  retransmission after a partition heals) therefore never extends a lease past what the
  granter reckoned: the granter read ``clock`` before it sent the grant, so the lease ends at
  the latest ``ms`` after the granter's own reading time. A ``clock`` ahead of ours is refused.
  Without SINCE the lease counts from receipt (for people at a prompt; the operator always
  uses SINCE).
- **Epochs only go up.** A grant with an epoch below the highest seen is refused, and
  ``ms = 0`` revokes the lease and ends that epoch: later grants need a higher one. So an
  operator that promoted someone else (and revoked this one at the new epoch) cannot be undone
  by a stale operator renewing at the old epoch.
- **Within an epoch a lease only grows** (the later of the two ends), so reordered grants of
  one operator never shorten what it reckons with; a higher epoch replaces it.
- ``LEASE OFF`` drops the gate (back to "never given"; the highest epoch is kept): the
  manual way out when no operator will renew it any more.

State lives in memory only: a restarted server has no lease (on Kubernetes it starts as a
follower, and the operator grants a lease before it makes it lead). The write gate is
:meth:`Lease.refusal`, one attribute test and one clock read, called from
``dispatch.write_refusal``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geoserver.errors import CommandError

if TYPE_CHECKING:
    from geoserver.server import Server

EXPIRED = "LEASE expired"  # first words of the write refusal; clients may match on them
_SKEW_MS = 1  # a SINCE this far ahead of our clock is rounding, not another clock


class LeaseError(CommandError):
    """A write refused because this leader's lease lapsed or was revoked."""


class Lease:
    """One server's lease (pure state; the clock is injected for tests)."""

    __slots__ = ("clock", "epoch", "grants", "revoked", "until")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.until: float | None = None  # clock seconds; None: never given, no gate
        self.epoch = 0  # the highest epoch seen
        self.revoked = False  # the current epoch ended with `LEASE epoch 0`
        self.grants = 0

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    def refusal(self) -> LeaseError | None:
        """The error for a write now, or None (no lease given, or a valid one)."""
        until = self.until
        if until is None or self.clock() < until:
            return None
        why = "revoked" if self.revoked else "lapsed"
        return LeaseError(f"{EXPIRED} (epoch {self.epoch}, {why}): this leader may have been "
                          "replaced; retry, on the current leader")

    def state(self) -> str:
        """none (never given), valid, expired or revoked."""
        if self.until is None:
            return "none"
        if self.revoked:
            return "revoked"
        return "valid" if self.clock() < self.until else "expired"

    def writes_refused(self) -> bool:
        """Whether a write now gets :data:`EXPIRED` (a lease given and lapsed, or revoked)."""
        until = self.until
        return until is not None and self.clock() >= until

    def remaining_ms(self) -> int:
        if self.until is None or self.revoked:
            return 0
        return max(0, math.ceil((self.until - self.clock()) * 1000))

    def grant(self, epoch: int, ms: int, since_ms: int | None = None) -> None:
        """Apply `LEASE epoch ms [SINCE since_ms]` (see the module rules); CommandError if refused."""
        if epoch < self.epoch:
            raise CommandError(f"lease epoch {epoch} is older than {self.epoch}")
        if ms == 0:  # revoke: this epoch is over
            self.epoch, self.revoked, self.until = epoch, True, -math.inf
            self.grants += 1
            return
        if epoch == self.epoch and self.revoked:
            raise CommandError(f"lease epoch {epoch} was revoked; a grant needs a higher epoch")
        now = self.clock()
        anchor = now if since_ms is None else since_ms / 1000
        if since_ms is not None and since_ms > now * 1000 + _SKEW_MS:
            raise CommandError(f"lease clock {since_ms} is ahead of this server's ({int(now * 1000)})")
        end = anchor + ms / 1000
        if epoch > self.epoch or self.until is None:
            self.until = end
        else:
            self.until = max(self.until, end)
        self.epoch, self.revoked = epoch, False
        self.grants += 1

    def off(self) -> None:
        """`LEASE OFF`: no gate any more (the highest epoch is kept)."""
        self.until, self.revoked = None, False

    def info(self) -> dict[str, Any]:
        """The LEASE reply: state, epoch, remaining_ms, and our clock for the next SINCE."""
        return {"state": self.state(), "epoch": self.epoch, "remaining_ms": self.remaining_ms(),
                "clock": self.now_ms()}

    def stats(self) -> dict[str, Any]:
        """SERVER fields (and INFO replication's, serverinfo.info_sections), only once a lease
        was ever given (Tile38's field set otherwise): state, epoch, remaining ms, and whether
        writes are refused now because it lapsed or was revoked."""
        if self.until is None and not self.grants:
            return {}
        return {"lease_state": self.state(), "lease_epoch": self.epoch,
                "lease_remaining_ms": self.remaining_ms(),
                "lease_writes_refused": self.writes_refused()}


class _LeaseCollector:
    """Prometheus gauges of the lease, computed on each scrape."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        lease = self.lease
        state = GaugeMetricFamily("geoserver_lease_state", "Leader lease: 1 for the current state "
                                  "(none: never given, no gate).", labels=["state"])
        current = lease.state()
        for name in ("none", "valid", "expired", "revoked"):
            state.add_metric([name], int(name == current))
        yield state
        yield GaugeMetricFamily("geoserver_lease_epoch", "Highest lease epoch seen.", value=lease.epoch)
        yield GaugeMetricFamily("geoserver_lease_remaining_seconds", "Seconds the lease is still valid.",
                                value=lease.remaining_ms() / 1000)
        yield CounterMetricFamily("geoserver_lease_grants", "LEASE grants and revocations applied.",
                                  value=lease.grants)


def attach(server: Server, clock: Callable[[], float] = time.monotonic) -> Lease:
    """A new lease for ``server``, its gauges registered on the server's metrics registry."""
    lease = Lease(clock)
    server.metrics.registry.register(_LeaseCollector(lease))
    return lease
