"""Ready/Degraded reason ``Migrating`` during a ``bootstrap.fromLeader`` live migration.

While the new leader follows the old leader (until the detach) it answers but does not lead:
the conditions say so (reason ``Migrating``, naming the old leader and the detach), not
``LeaderUnavailable`` / "leader does not answer", and no Warning is posted for it. A leader that
does not answer at all is still ``LeaderUnavailable``, migration or not.

- pure policy tests over simulated time (``policy.decide(..., migrating=<old leader>)``);
- the real kopf operator against the emulated API (kmock) with real geoserver members and a
  real standalone geoserver as the old leader: Migrating from the start to the detach, then
  AllMembersReady, and never a LeaderUnavailable condition or Warning on the way.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from geocluster import probe
from geocluster.policy import Member, decide
from geocluster.spec import parse_spec
from opharness import (
    GC_KEY,
    GC_URL,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Operator,
    annotate,
    condition,
    events,
    eventually,
    gc_status,
    ip,
    pod,
    pod_ip,
    start_member,
    status_refreshes,
)

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
OLD = "10.9.9.9:9851"
SELF = "127.0.0.2:9851"
POLICY_SPEC = parse_spec({"followers": 2, "aofShrink": {"schedule": None},
                          "divergence": {"gracePeriodSeconds": 0},
                          "bootstrap": {"fromLeader": {"address": OLD}}})


def migrating_leader(following: str = OLD, reachable: bool = False) -> Member:
    """The leader as the main timer hands it to the policy while it follows someone (reachable
    False: ``handlers._converge``'s "not leading yet"; the local runtime leaves it reachable)."""
    return Member("gc-0", "leader", SELF, reachable, 5000, following=following,
                  error=None if reachable else f"not leading yet: follows {following}")


def waiting(i: int) -> Member:
    """A follower of the new leader that waits: its leader is a follower itself."""
    return Member(f"gc-{i}", "follower", f"127.0.0.{2 + i}:9851", True, 0, False, following=SELF,
                  replication_state="connecting", replication_error="cannot follow a follower")


def run(members: list[Member], seconds: int = 600, status: dict | None = None, **kw):
    """Ticks every 10 s, each decision's status fed into the next; (status, events, actions)."""
    status, evs, acts, now = status or {}, [], [], T0
    for _ in range(seconds // 10):
        d = decide(POLICY_SPEC, status, members, now, created=T0 - timedelta(days=1), **kw)
        status, now = d.status, now + timedelta(seconds=10)
        evs += [(e.type, e.reason) for e in d.events]
        acts += list(d.actions)
    return status, evs, acts


def cond(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_a_following_leader_is_migrating_not_unavailable():
    status, evs, acts = run([migrating_leader(), waiting(1), waiting(2)], migrating=OLD)
    ready, degraded = cond(status, "Ready"), cond(status, "Degraded")
    assert (ready["status"], ready["reason"]) == ("False", "Migrating")
    assert (degraded["status"], degraded["reason"]) == ("False", "Migrating")
    assert ready["message"] == degraded["message"]
    assert f"gc-0 follows the old leader {OLD} until detached" in ready["message"]
    assert "geo.geocluster.io/detach" in ready["message"]
    assert "does not answer" not in ready["message"]
    progressing = cond(status, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "Migrating")
    assert status["phase"] == "Progressing"
    assert not [e for e in evs if e[0] == "Warning"]  # an expected state: nothing to warn about
    assert acts == []  # the waiting followers are not "repaired" meanwhile


def test_without_the_migration_the_same_leader_is_unavailable():
    """The contrast (what it said before Migrating existed): the same observations, no migration."""
    status, evs, _ = run([migrating_leader(), waiting(1), waiting(2)])
    assert cond(status, "Ready")["reason"] == "LeaderUnavailable"
    degraded = cond(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "LeaderUnavailable")
    assert ("Warning", "LeaderUnavailable") in evs


def test_a_leader_that_does_not_answer_is_unavailable_even_while_migrating():
    gone = Member("gc-0", "leader", SELF, False, error="connection refused")  # no SERVER: no following
    status, evs, _ = run([gone, waiting(1), waiting(2)], migrating=OLD)
    assert cond(status, "Ready")["reason"] == "LeaderUnavailable"
    assert cond(status, "Degraded")["reason"] == "LeaderUnavailable"
    assert cond(status, "Degraded")["message"] == "leader does not answer"
    assert ("Warning", "LeaderUnavailable") in evs


def test_a_restarted_leader_following_itself_is_still_migrating():
    """A leader pod that restarted follows itself (its ConfigMap) until the bootstrap timer
    points it back at the old leader: migrating, and the message says where it is."""
    status, _, _ = run([migrating_leader(following=SELF), waiting(1), waiting(2)], 30, migrating=OLD)
    ready = cond(status, "Ready")
    assert ready["reason"] == "Migrating"
    assert ready["message"].startswith(f"gc-0 follows {SELF}, not yet the old leader {OLD}")


def test_the_local_runtimes_reachable_following_leader_is_migrating():
    """Locally the leader is probed as it is (reachable, following the old leader)."""
    status, evs, _ = run([migrating_leader(reachable=True), waiting(1), waiting(2)], migrating=OLD)
    assert cond(status, "Ready")["reason"] == "Migrating"
    assert cond(status, "Ready")["status"] == "False"
    assert cond(status, "Degraded")["reason"] == "Migrating"
    assert ("Normal", "Ready") not in evs


def test_a_real_problem_outranks_the_migration():
    status, _, _ = run([migrating_leader(), waiting(1), waiting(2)], 30, migrating=OLD,
                       auth_error="Secret geo-auth not found")
    degraded = cond(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "AuthSecretUnavailable")


def test_after_the_detach_the_cluster_is_ready():
    status, _, _ = run([migrating_leader(), waiting(1), waiting(2)], 30, migrating=OLD)
    leads = Member("gc-0", "leader", SELF, True, 5000)
    caught = [replace(waiting(i), aof_size=5000, caught_up=True, replication_state="streaming",
                      replication_error=None) for i in (1, 2)]
    status, evs, _ = run([leads, *caught], 30, status=status)  # detached: no migrating any more
    assert (cond(status, "Ready")["status"], cond(status, "Ready")["reason"]) == ("True", "AllMembersReady")
    assert cond(status, "Degraded")["reason"] == "AsExpected"
    assert ("Normal", "Ready") in evs


# --- the real kopf operator on the emulated API -----------------------------------------------------


def secret(name: str, data: dict[str, str]) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": NS},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


def phase(api) -> str | None:
    return (gc_status(api).get("bootstrap") or {}).get("phase")


@pytest.mark.kmock(cls=KopfEmulator)
@pytest.mark.timeout(120)
async def test_operator_reports_migrating_until_the_detach(api, members):
    old_ip, pw = ip(42), "cluster-pw"
    old = f"{old_ip}:9851"
    await asyncio.to_thread(members.start, "old", old_ip)
    async with probe.Client(old) as c:
        for i in range(100):
            await c.command("SET", "fleet", f"t{i}", "POINT", "33", "-115")
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json=secret("geo-auth", {"password": pw}))
    spec = {**SPEC, "followers": 1, "server": {"authSecretRef": {"name": "geo-auth"}},
            "bootstrap": {"fromLeader": {"address": old}}}
    operator = await Operator().start()
    seen: set[tuple[str, str, str]] = set()
    stop = asyncio.Event()

    async def watch() -> None:  # every condition the operator wrote, from the creation on
        while not stop.is_set():
            try:
                conditions = dict(api.objects[GC_KEY].get("status") or {}).get("conditions") or []
            except KeyError:  # not created yet
                conditions = []
            for c in conditions:
                if c["type"] in ("Ready", "Degraded"):
                    seen.add((c["type"], c["status"], c["reason"]))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        for k in range(2):
            await start_member(api, members, pod(k), spec=spec, password=pw)
        body = {"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
                "metadata": {"name": NAME, "namespace": NS}, "spec": spec}
        await api.post(GC_URL, json=body)
        await eventually(lambda: phase(api) == "caught-up", 30, what="caught up")
        await status_refreshes(api, 3)  # the main timer's conditions of the caught-up leader
        ready, degraded = condition(api, "Ready"), condition(api, "Degraded")
        assert (ready["status"], ready["reason"]) == ("False", "Migrating")
        assert f"{pod(0)} follows the old leader {old} until detached" in ready["message"]
        assert (degraded["status"], degraded["reason"]) == ("False", "Migrating")
        assert gc_status(api)["phase"] == "Progressing"

        await annotate(api, {"geo.geocluster.io/detach": "1"})
        await eventually(lambda: phase(api) == "detached", 30, what="detached")
        await eventually(lambda: condition(api, "Ready")["reason"] == "AllMembersReady", 30,
                         what="Ready after the detach")
        assert condition(api, "Degraded")["reason"] == "AsExpected"
        stop.set()
        await watcher
        assert ("Ready", "False", "Migrating") in seen and ("Degraded", "False", "Migrating") in seen
        assert not events(api, "LeaderUnavailable")  # never warned that the leader does not answer
        assert ("Ready", "False", "LeaderUnavailable") not in seen
        assert ("Degraded", "True", "LeaderUnavailable") not in seen
        assert (await probe.observe("l", "leader", f"{pod_ip(pod(0))}:9851", pw)).following is None
    finally:
        stop.set()
        await watcher
        await operator.stop()
