"""backup_policy over simulated time: due by cron in a time zone, on request, never two at once,
never during a shrink, retries with backoff, lost backups, source choice, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from geocluster import backup_policy as bp
from geocluster.policy import Member
from geocluster.spec import BackupRetention, parse_spec

T0 = datetime(2030, 3, 1, 0, 0, tzinfo=UTC)
MEMBERS = [
    Member("leader", "leader", "a:1", reachable=True, aof_size=100),
    Member("follower-1", "follower", "b:1", reachable=True, aof_size=100, caught_up=True),
    Member("follower-2", "follower", "c:1", reachable=True, aof_size=90, caught_up=False),
]


def spec(**backup: Any):
    return parse_spec({"backup": {"destination": "file:///b", "schedule": "0 3 * * *", **backup}}).backup


class Sim:
    """Ticks the policy minute by minute; backups end as ``outcome`` says."""

    def __init__(self, backup_spec, members=MEMBERS, outcome=None):
        self.spec, self.members, self.now = backup_spec, members, T0
        self.status: dict[str, Any] = {}
        self.outcome = outcome or (lambda start: None)  # -> error or None
        self.started: list[tuple[datetime, bp.BackupStart]] = []

    def tick(self, manual: bool = False, **kw: Any) -> bp.BackupDecision:
        d = bp.decide(self.spec, self.status, self.members, self.now, created=T0, manual=manual, **kw)
        self.status.update(d.status)
        if d.start:
            self.started.append((self.now, d.start))
            error = self.outcome(d.start)
            patch, _ = bp.settle_patch(self.status, now=self.now, error=error, size=1, aof_size=1,
                                       duration=0.1, location="file:///b/t/x", backups=1)
            self.status.update(patch)
        return d

    def run(self, minutes: int) -> None:
        for _ in range(minutes):
            self.now += timedelta(minutes=1)
            self.tick()


def test_due_once_a_day_by_cron():
    sim = Sim(spec())
    sim.run(3 * 24 * 60)
    assert [t.strftime("%d %H:%M") for t, _ in sim.started] == ["01 03:00", "02 03:00", "03 03:00"]
    assert sim.status["lastBackup"]["result"] == "ok" and sim.status["backupFailures"] == 0
    assert sim.status["lastSuccessfulBackup"] == "2030-03-03T03:00:00Z"


def test_schedule_in_a_time_zone():
    sim = Sim(spec(timeZone="Europe/Berlin"))  # 03:00 CET is 02:00 UTC
    sim.run(24 * 60)
    assert [t.strftime("%H:%M") for t, _ in sim.started] == ["02:00"]


def test_no_schedule_means_on_demand_only():
    sim = Sim(spec(schedule=""))
    sim.run(2 * 24 * 60)
    assert sim.started == []
    d = sim.tick(manual=True)
    assert d.start and d.start.reason == "manual" and d.consumed


def test_source_prefers_a_caught_up_follower_and_falls_back_to_the_leader():
    assert bp.pick_source(MEMBERS).name == "follower-1"
    assert bp.pick_source(MEMBERS, "leader").name == "leader"
    behind = Member("follower-1", "follower", "b:1", reachable=True, aof_size=80, caught_up=True)
    lagging = [MEMBERS[0], behind]
    assert bp.pick_source(lagging).name == "leader"  # caught_up but behind the leader's size
    assert bp.pick_source([Member("leader", "leader", None)]) is None


def test_never_two_at_once_and_a_lost_backup_times_out():
    sim = Sim(spec(timeoutSeconds=600))
    d = bp.decide(sim.spec, {}, MEMBERS, T0, created=T0, manual=True)
    assert d.start
    status = d.status
    for minutes in (1, 5, 9):  # still in flight: neither manual nor schedule starts another
        later = bp.decide(sim.spec, status, MEMBERS, T0 + timedelta(minutes=minutes), created=T0, manual=True)
        assert later.start is None and later.waiting == "a backup is in flight" and not later.consumed
    lost = bp.decide(sim.spec, status, MEMBERS, T0 + timedelta(minutes=11), created=T0)
    assert lost.status["backupFailures"] == 1  # lost: failed, and retried at once
    assert [e.reason for e in lost.events] == ["BackupFailed", "BackupStarted"]
    assert lost.start and lost.start.reason == "retry" and lost.start.attempt == 2
    no_retries = bp.decide(spec(timeoutSeconds=600, maxRetries=0), status, MEMBERS,
                           T0 + timedelta(minutes=11), created=T0)
    assert no_retries.start is None
    assert no_retries.status["lastBackup"]["result"].startswith("error: lost")


def test_never_during_a_shrink():
    sim = Sim(spec())
    sim.status["lastShrink"] = {"time": "2030-03-01T02:59:00Z", "result": "started"}
    sim.run(3 * 60 + 5)  # 03:05, the shrink still running
    assert sim.started == []
    d = sim.tick()
    assert d.waiting == "a shrink is in flight"
    sim.status["lastShrink"]["result"] = "ok"
    sim.run(1)
    assert [t.strftime("%H:%M") for t, _ in sim.started] == ["03:06"]  # still due: not skipped
    shrinking = [Member("leader", "leader", "a:1", reachable=True, shrinking=True)]
    assert bp.decide(sim.spec, {}, shrinking, T0, created=T0, manual=True).waiting == "a shrink is in flight"


def test_failures_retried_with_backoff_then_the_next_occurrence():
    sim = Sim(spec(maxRetries=3), outcome=lambda start: "S3 unreachable")
    sim.run(3 * 60 + 30)
    times = [t.strftime("%H:%M") for t, _ in sim.started]
    assert times == ["03:00", "03:01", "03:03", "03:07"]  # +1, +2, +4 minutes
    assert [s.attempt for _, s in sim.started] == [1, 2, 3, 4]
    assert [s.reason for _, s in sim.started] == ["schedule", "retry", "retry", "retry"]
    assert sim.status["backupFailures"] == 4
    sim.outcome = lambda start: None
    sim.run(24 * 60)
    assert [t.strftime("%d %H:%M") for t, _ in sim.started][-1] == "02 03:00"
    assert sim.status["backupFailures"] == 0 and sim.status["lastBackup"]["result"] == "ok"


def test_no_reachable_member_is_a_failed_attempt():
    sim = Sim(spec(), members=[Member("leader", "leader", "a:1", reachable=False)])
    sim.run(3 * 60)
    assert sim.started == []
    assert sim.status["lastBackup"]["result"] == "error: no reachable member"
    sim.members = MEMBERS
    sim.run(1)
    assert sim.started[-1][1].reason == "retry" and sim.started[-1][1].source == "follower-1"


def test_paused_waits_and_unconfigured_requests_warn():
    sim = Sim(spec())
    assert sim.tick(manual=True, paused=True).waiting == "paused"
    d = bp.decide(None, {}, MEMBERS, T0, created=T0, manual=True)
    assert d.start is None and d.consumed and d.events[0].reason == "BackupNotConfigured"


def test_retention_by_count_and_age_keeps_the_newest():
    days = [(f"2030030{d}T030000Z", T0 + timedelta(days=d - 1, hours=3)) for d in range(1, 8)]
    now = T0 + timedelta(days=7)
    assert bp.expired(days, [], BackupRetention(count=3), now) == [n for n, _ in days[:4]]
    assert bp.expired(days, [], BackupRetention(count=None, max_age="3d"), now) == [n for n, _ in days[:4]]
    old = days[:1]  # the only (newest) backup is kept whatever its age
    assert bp.expired(old, [], BackupRetention(count=1, max_age="1h"), now) == []
    incomplete = ["20300301T000000Z", "20300307T235959Z"]
    assert bp.expired([], incomplete, BackupRetention(), now, in_flight="20300301T000000Z") == []
    assert bp.expired([], incomplete, BackupRetention(), now) == ["20300301T000000Z"]


@pytest.mark.parametrize("bad", [{"schedule": "61 * * * *"}, {"timeZone": "Mars/Olympus"},
                                 {"destination": "http://x"}, {"retention": {"maxAge": "3 days"}},
                                 {"compression": "lz4"}])
def test_bad_backup_specs_are_refused(bad):
    from geocluster.spec import SpecError

    with pytest.raises(SpecError, match=r"spec\.backup"):
        parse_spec({"backup": {"destination": "file:///b", **bad}})
