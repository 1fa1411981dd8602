"""geoserver.lease as pure state over a simulated monotonic clock: validity, anchoring at the
granter's clock reading (late grants never extend), epochs only going up, revocation."""

from __future__ import annotations

import pytest
from geoserver.errors import CommandError
from geoserver.lease import EXPIRED, Lease


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_never_given_is_no_gate(clock):
    lease = Lease(clock)
    clock.t += 1e6
    assert lease.refusal() is None and lease.state() == "none" and lease.stats() == {}


def test_valid_then_lapses_on_the_clock(clock):
    lease = Lease(clock)
    lease.grant(1, 2000)
    assert lease.refusal() is None and lease.state() == "valid" and lease.remaining_ms() == 2000
    clock.t += 1.999
    assert lease.refusal() is None
    clock.t += 0.001
    err = lease.refusal()
    assert err is not None and err.message.startswith(EXPIRED) and "epoch 1" in err.message
    assert lease.state() == "expired" and lease.stats()["lease_state"] == "expired"


def test_renewal_extends_within_an_epoch_and_never_shortens(clock):
    lease = Lease(clock)
    lease.grant(3, 5000)
    clock.t += 1
    lease.grant(3, 1000)  # a reordered, shorter grant of the same epoch
    assert lease.remaining_ms() == 4000
    lease.grant(3, 5000)
    assert lease.remaining_ms() == 5000


def test_since_anchors_at_the_granters_clock_reading(clock):
    lease = Lease(clock)
    reading = lease.info()["clock"]
    clock.t += 10  # the grant sat in a socket buffer (SIGSTOP, partition) for 10 s
    lease.grant(1, 3000, since_ms=reading)
    assert lease.refusal() is not None  # it ended 7 s ago: a late grant extends nothing
    reading = lease.info()["clock"]
    clock.t += 1
    lease.grant(1, 3000, since_ms=reading)
    assert lease.remaining_ms() == 2000


def test_since_ahead_of_our_clock_is_refused(clock):
    lease = Lease(clock)
    with pytest.raises(CommandError, match="ahead"):
        lease.grant(1, 3000, since_ms=int(clock.t * 1000) + 60_000)
    assert lease.state() == "none"


def test_lower_epoch_refused_higher_replaces(clock):
    lease = Lease(clock)
    lease.grant(5, 10_000)
    with pytest.raises(CommandError, match="older than 5"):
        lease.grant(4, 10_000)
    lease.grant(6, 1000)  # a new epoch replaces the lease, even with a shorter one
    assert lease.epoch == 6 and lease.remaining_ms() == 1000


def test_revoke_ends_the_epoch(clock):
    lease = Lease(clock)
    lease.grant(2, 10_000)
    lease.grant(3, 0)  # the operator promoted someone else at epoch 3 and fenced this one
    assert lease.state() == "revoked" and "revoked" in lease.refusal().message
    with pytest.raises(CommandError, match="older"):
        lease.grant(2, 10_000)  # a stale operator
    with pytest.raises(CommandError, match="revoked"):
        lease.grant(3, 10_000)
    lease.grant(4, 10_000)  # leading again, at a new epoch
    assert lease.refusal() is None


def test_revoke_of_a_server_never_given_a_lease_fences_it(clock):
    lease = Lease(clock)
    lease.grant(1, 0)
    assert lease.refusal() is not None


def test_off_drops_the_gate_and_keeps_the_epoch(clock):
    lease = Lease(clock)
    lease.grant(7, 1000)
    clock.t += 5
    lease.off()
    assert lease.refusal() is None and lease.state() == "none" and lease.epoch == 7
    with pytest.raises(CommandError):
        lease.grant(6, 1000)
