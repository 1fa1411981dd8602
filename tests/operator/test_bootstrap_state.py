"""bootstrap_state: the pure judgement of spec.bootstrap on Kubernetes, as tables (no I/O, time
passed in): init container states -> restore phases, SERVER of the new and old leader ->
migration steps, the Bootstrapped condition, and when the main timer must leave the leader
following (``migrating``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from geocluster import bootstrap_state as bs
from geocluster import conditions
from geocluster.policy import Member
from geocluster.spec import BootstrapFromLeader, BootstrapRecord, parse_spec

NOW = datetime(2030, 1, 1, 3, 0, tzinfo=UTC)
OLD = "old.example:9851"


def pod_with(state: dict, last: dict | None = None, restarts: int = 0) -> dict:
    st = {"name": "bootstrap", "state": state, "restartCount": restarts}
    if last:
        st["lastState"] = last
    return {"status": {"initContainerStatuses": [{"name": "other", "state": {}}, st]}}


def term(code: int, message: str = "") -> dict:
    return {"terminated": {"exitCode": code, "message": message}}


REPORT = json.dumps({"result": "restored", "aofSize": 123, "md5": "abc", "source": "s3://b/p/c/n",
                     "message": "restored n (123 bytes, md5 abc)"})


@pytest.mark.parametrize(("pod", "state", "message"), [
    (None, "none", ""),
    (pod_with({"waiting": {"reason": "PodInitializing"}}), "waiting", ""),
    (pod_with({"running": {}}), "running", ""),
    (pod_with(term(0, REPORT)), "succeeded", REPORT),
    (pod_with(term(1, "x")), "failed", "x"),
    (pod_with({"waiting": {"reason": "CrashLoopBackOff"}}, term(1, "boom"), 3), "failed", "boom"),
])
def test_init_state(pod, state, message):
    got = bs.init_state(pod, "gc-0")
    assert (got.state, got.message) == (state, message)


def test_report_is_json_or_the_last_log_line():
    assert bs.report(REPORT)["aofSize"] == 123
    assert bs.report("Traceback...\nError: backup x refused: truncated\n") == {
        "result": "error", "message": "Error: backup x refused: truncated"}
    assert bs.report("")["result"] == "error"


def restore(leader: bs.InitState, others=(), previous=None) -> bs.Outcome:
    return bs.restore_outcome("fromBackup", "s3://b/p", previous, leader, list(others), NOW)


def test_restore_phases_and_events():
    pending = restore(bs.InitState("gc-0", "none"))
    assert pending.record.phase == "pending" and pending.events == ()
    running = restore(bs.InitState("gc-0", "running"), previous=pending.record)
    assert running.record.phase == "restoring" and running.events[0].reason == "BootstrapRestoring"
    done = restore(bs.InitState("gc-0", "succeeded", REPORT), previous=running.record)
    rec = done.record
    assert (rec.phase, rec.aof_size, rec.source) == ("restored", 123, "s3://b/p/c/n")
    assert rec.finished == "2030-01-01T03:00:00Z"
    assert rec.time == pending.record.time and done.events[0].reason == "BootstrapRestored"
    # terminal: a later restart of the pod (it skips: --if-empty) changes nothing
    later = restore(bs.InitState("gc-0", "running"), previous=rec)
    assert later.record == rec and later.events == ()
    skipped = restore(bs.InitState("gc-0", "succeeded", json.dumps({"result": "skipped", "aofSize": 9})))
    assert skipped.record.phase == "skipped" and bs.verdict(skipped.record).status is True


def test_a_refused_restore_on_any_member_fails_the_bootstrap():
    refused = ("Error: backup n refused: s3://b/p/c/n/appendonly.aof.gz has 5 bytes, the manifest "
               "says 9 (truncated or replaced)")
    out = restore(bs.InitState("gc-0", "running"), [bs.InitState("gc-1", "failed", refused, 2)])
    rec = out.record
    assert rec.phase == "failed" and rec.member == "gc-1" and "truncated" in rec.message
    assert "restarts: 2" in rec.message and rec.result.startswith("error: ")
    [event] = out.events
    assert (event.type, event.reason) == ("Warning", "BootstrapFailed")
    v = bs.verdict(rec)
    assert (v.type, v.status, v.reason) == ("Bootstrapped", False, "RestoreRefused")
    again = restore(bs.InitState("gc-0", "running"), [bs.InitState("gc-1", "failed", refused, 2)], rec)
    assert again.events == ()  # the same failure is announced once
    other = restore(bs.InitState("gc-0", "failed", "Error: no such bucket"))
    assert bs.verdict(other.record).reason == "Failed"


def leader(following: str | None = OLD, aof: int | None = 100, caught_up: bool = True,
           reachable: bool = True) -> Member:
    return Member("gc-0", "leader", "10.0.0.2:9851", reachable=reachable, aof_size=aof, following=following,
                  caught_up=caught_up, error=None if reachable else "refused")


def old(aof: int | None = 100, reachable: bool = True) -> Member:
    return Member("old leader", "leader", OLD, reachable=reachable, aof_size=aof,
                  error=None if reachable else "timeout")


BOOT = BootstrapFromLeader(address=OLD)


def step(new: Member, was: Member | None, previous=None, request=None) -> bs.Outcome:
    return bs.leader_outcome(BOOT, previous, new, was, NOW, request)


def test_migration_follows_then_catches_up():
    start = step(leader(following="10.0.0.2:9851", aof=0), old())  # it follows itself, as it starts
    assert start.follow and start.record.phase == "pending" and not start.detach
    following = step(leader(aof=40, caught_up=False), old(), start.record)
    assert following.record.phase == "following" and following.record.source_aof_size == 100
    assert not following.follow and following.events[0].reason == "MigrationFollowing"
    caught = step(leader(), old(), following.record)
    assert caught.record.phase == "caught-up" and caught.record.caught_up == "2030-01-01T03:00:00Z"
    assert caught.events[0].reason == "MigrationCaughtUp"
    behind = step(leader(aof=120, caught_up=False), old(aof=130), caught.record)  # writes go on
    assert behind.record.phase == "following" and behind.record.caught_up == caught.record.caught_up
    gone = step(leader(), old(reachable=False), caught.record)
    assert gone.record.phase == "following" and "does not answer" in gone.record.message


def test_a_restarted_leader_is_pointed_at_the_old_leader_again():
    caught = step(leader(), old()).record
    again = step(leader(following="10.0.0.2:9851", aof=100), old(), caught)
    assert again.follow and again.record.phase == "following"


def test_an_existing_cluster_is_not_migrated():
    out = step(leader(following=None, aof=5000), old())
    assert out.record.phase == "skipped" and not out.follow and bs.verdict(out.record).status is True


def test_detach_requests():
    caught = step(leader(), old()).record
    out = step(leader(), old(), caught, request="")
    assert out.detach and out.consumed and not out.force and out.record.phase == "detaching"
    assert step(leader(), old(), caught, request="force").force
    early = step(leader(following=None, aof=0), old(), None, request="1")
    assert not early.detach and early.consumed and early.events[-1].reason == "DetachRefused"
    down = step(leader(reachable=False), old(), caught, request="1")
    assert not down.detach and down.consumed
    done = bs.detached(out.record, NOW, 100, 12, True)
    assert done.record.phase == "detached" and done.record.write_pause_ms == 12
    assert done.events[0].reason == "MigrationDetached" and bs.verdict(done.record).status is True
    late = step(leader(following=None), old(), done.record, request="1")
    assert late.consumed and not late.detach and late.events[0].reason == "DetachRefused"
    failed = bs.detach_failed(out.record, NOW, "gc-0 at aof_size 90, the old leader at 100 after 30s")
    assert failed.record.phase == "caught-up" and failed.events[0].reason == "DetachFailed"
    assert failed.record.message.startswith("detach failed at 2030-01-01T03:00:00Z: gc-0 at aof_size 90")


def test_a_detach_cut_short_is_resumed_or_recorded():
    detaching = step(leader(), old(), step(leader(), old()).record, request="").record
    resumed = step(leader(), old(), detaching)  # still following: run the detach again
    assert resumed.detach and not resumed.consumed
    finished = step(leader(following=None, aof=100), old(), detaching)  # it led already
    assert finished.record.phase == "detached" and not finished.follow


def test_migrating_holds_the_leader_until_detached():
    spec = parse_spec({"bootstrap": {"fromLeader": {"address": OLD}}})
    assert bs.migrating(spec, {})
    for phase, held in [("pending", True), ("following", True), ("caught-up", True), ("detaching", True),
                        ("failed", True), ("detached", False), ("skipped", False)]:
        status = {"bootstrap": {"kind": "fromLeader", "phase": phase}}
        assert bs.migrating(spec, status) is held, phase
    assert not bs.migrating(spec, {"bootstrap": {"kind": "fromBackup", "phase": "restored"}})
    assert not bs.migrating(parse_spec({}), {})
    assert not bs.migrating(parse_spec({"bootstrap": {"fromBackup": {"source": "s3://bkp/p"}}}), {})


def test_the_main_timers_merge_keeps_bootstrapped():
    rec = BootstrapRecord(kind="fromBackup", source="s3://b", phase="restored", time="t")
    mine = conditions.merge([], [bs.verdict(rec)], "t1", None)
    ready = conditions.Verdict("Ready", True, "AllMembersReady")
    after = conditions.merge(mine, [ready], "t2", 3)
    assert [c.type for c in after] == ["Ready", "Bootstrapped"] and after[1] == mine[0]
    assert [c.type for c in conditions.merge([], [ready], "t2", 3)] == ["Ready"]


def test_status_patch_clears_fields():
    rec = BootstrapRecord(kind="fromLeader", source=OLD, phase="following", time="t")
    patch = bs.status_patch(rec)
    assert patch["phase"] == "following" and patch["detached"] is None and "writePauseMs" in patch


def test_a_migration_that_cannot_start_fails_clearly():
    why = "fromLeader.authSecretRef needs a password on this cluster too"
    out = bs.leader_outcome(BOOT, None, leader(following="10.0.0.2:9851", aof=0), old(), NOW, None, why)
    assert out.record.phase == "failed" and out.record.message == why and not out.follow
    assert out.events[0].reason == "BootstrapFailed" and bs.verdict(out.record).reason == "Failed"
    starting = leader(following="10.0.0.2:9851", aof=0)
    again = bs.leader_outcome(BOOT, out.record, starting, old(), NOW, "1", why)
    assert again.consumed and not again.detach and [e.reason for e in again.events] == ["DetachRefused"]
    fixed = bs.leader_outcome(BOOT, out.record, leader(following="10.0.0.2:9851", aof=0), old(), NOW)
    assert fixed.follow  # the Secret or the spec changed: it starts


def test_a_member_that_cannot_restore_later_is_named():
    done = restore(bs.InitState("gc-0", "succeeded", REPORT)).record
    late = restore(bs.InitState("gc-0", "succeeded", REPORT),
                   [bs.InitState("gc-3", "failed", "Error: backup n refused: it is missing")], done)
    assert late.record.phase == "restored" and "gc-3 (a member started later)" in late.record.message
    assert [e.reason for e in late.events] == ["BootstrapFailed"]
    again = restore(bs.InitState("gc-0", "succeeded", REPORT),
                    [bs.InitState("gc-3", "failed", "Error: backup n refused: it is missing")], late.record)
    assert again.events == () and bs.verdict(again.record).status is True


def test_a_crash_looping_restore_is_announced_once():
    refused = "Error: backup n refused: truncated"
    first = restore(bs.InitState("gc-0", "failed", refused, 1))
    later = restore(bs.InitState("gc-0", "failed", refused, 5), previous=first.record)
    assert len(first.events) == 1 and later.events == () and "restarts: 5" in later.record.message
    other = restore(bs.InitState("gc-0", "failed", "Error: something else", 6), previous=later.record)
    assert [e.reason for e in other.events] == ["BootstrapFailed"]
