"""Pure decisions about pods on Kubernetes: role labels, re-pointing, updates and migration.

The leader is a role (docs/operator.md#high-availability). These functions take what the API
and the probes showed and say what to change; handlers.py does it. No I/O, no clock.

- :func:`role_labels`: the role label each member pod should carry (the Services select by
  it): ``leader`` on the member status.leader names, ``follower`` on the others.
- :func:`to_repoint`: followers following someone else than the leader (FOLLOW them again).
- :func:`plan_update`: after a pod-template change (StatefulSet ``OnDelete``): followers one at
  a time, each only once every member is back and caught up, then a switchover to an updated
  follower (``primaryUpdateMethod: switchover``) or a restart of the leader (``restart``), or
  waiting for a person (``primaryUpdateStrategy: supervised``); the old leader, a follower
  by then, is updated last.
  The same order serves a restart on request (annotation ``geo.geocluster.io/restart``):
  pods created before the request (:func:`restart_pending`) count as outdated.
- :func:`plan_migration`: a v1alpha1 cluster with separate leader/follower StatefulSets moves
  to the one StatefulSet: its pods follow the old leader, a switchover once all caught up,
  then the old StatefulSets go (docs/upgrade.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .policy import Member
from .spec import GeoClusterSpec


@dataclass(frozen=True)
class Pod:
    """What the API shows of one member pod."""

    name: str
    labels: Mapping[str, str]
    template_hash: str | None = None  # the template annotation it was made from
    deleting: bool = False  # has a deletionTimestamp
    created: str | None = None  # metadata.creationTimestamp (RFC 3339, seconds)


@dataclass(frozen=True)
class Step:
    """One thing to do about updates or migration this tick (at most one)."""

    kind: Literal["none", "wait", "delete", "switchover", "supervised", "removeLegacy"]
    member: str | None = None
    reason: str = ""


NONE = Step("none")


def role_labels(pods: Mapping[str, Pod], members: list[str], leader: str, key: str) -> dict[str, str]:
    """pod -> the role value to set, for member pods whose ``key`` label differs."""
    out = {}
    for name in members:
        pod = pods.get(name)
        want = "leader" if name == leader else "follower"
        if pod is not None and not pod.deleting and pod.labels.get(key) != want:
            out[name] = want
    return out


def to_repoint(members: list[Member], leader: Member | None, aliases: frozenset[str],
               ours: frozenset[str] = frozenset()) -> list[str]:
    """Reachable followers following no one (a second leader) or another member of this
    cluster (a stale view: the old leader, itself after a restart): FOLLOW the leader again.
    ``aliases``: the leader's names besides its probed address; ``ours``: every member's.
    A follower of an address outside the cluster is a divergence for the repair ladder.
    Nothing while the leader is not reachable and leading: a follower pointed at a leader that
    cannot serve would only trade one wrong place for another."""
    if leader is None or not leader.reachable or leader.following:
        return []
    mine = {leader.address, *aliases} - {None}
    return [m.name for m in members
            if m.role == "follower" and m.reachable and m.following not in mine
            and (not m.following or m.following in ours)]  # fmt: skip


def healthy(members: list[Member], pods: Mapping[str, Pod], names: list[str]) -> str | None:
    """Why the members are not all back and in step, or None."""
    by = {m.name: m for m in members}
    for name in names:
        m, pod = by.get(name), pods.get(name)
        if pod is None or pod.deleting:
            return f"{name} has no pod yet"
        if m is None or not m.reachable:
            return f"{name} does not answer"
        if m.role == "leader" and m.following:
            return f"{name} is not leading yet"
        if m.role == "follower" and not m.caught_up:
            return f"{name} is not caught up"
    return None


def restart_pending(pods: Mapping[str, Pod], since: str | None) -> frozenset[str]:
    """Pods created at or before a restart request of time ``since`` (RFC 3339, seconds: a pod
    made in the request's second is restarted once more rather than possibly never)."""
    if not since:
        return frozenset()
    return frozenset(n for n, p in pods.items() if not p.deleting and (p.created or "") <= since)


def plan_update(
    spec: GeoClusterSpec,
    pods: Mapping[str, Pod],
    members: list[Member],
    leader: str,
    want: str,
    busy: str | None = None,
    restart: frozenset[str] = frozenset(),
) -> Step:
    """The next step of bringing every member pod to template ``want`` (see module doc).
    ``busy``: something else in flight (a shrink, resync, repair or promotion): wait.
    ``restart``: pods to restart although their template is current (a restart request)."""
    names = [m.name for m in members]
    outdated = [n for n in names if n in pods and (pods[n].template_hash != want or n in restart)]
    if not outdated:
        return NONE
    if busy:
        return Step("wait", reason=busy)
    why = healthy(members, pods, names)
    if why:
        return Step("wait", reason=why)
    changed = any(pods[n].template_hash != want for n in outdated)
    cause = "pod template changed" if changed else "restart requested"
    followers = [n for n in outdated if n != leader]
    if followers:  # the highest ordinal first, as a StatefulSet's own rolling update
        return Step("delete", max(followers, key=_ordinal), f"{cause} (follower)")
    if spec.failover.primary_update_strategy == "supervised":
        done = "updated" if changed else "restarted"
        return Step("supervised", leader, f"followers {done}; the leader waits for a switchover "
                    "(annotate geo.geocluster.io/promote=<member>)")
    updated = [m for m in members if m.role == "follower" and m.caught_up]
    if spec.failover.primary_update_method == "restart" or not updated:
        return Step("delete", leader, f"{cause} (leader restarted in place)")
    target = max(sorted(updated, key=lambda m: m.name), key=lambda m: m.aof_size or 0)
    return Step("switchover", target.name, f"{cause} (leader switched over)")


def plan_migration(legacy: bool, leader: str, new_pods: list[str], members: list[Member],
                   pods: Mapping[str, Pod]) -> Step:
    """The next step off the v1alpha1 leader/follower StatefulSets (see module doc)."""
    if not legacy:
        return NONE
    if leader in new_pods:  # switched over already: the old StatefulSets (and pods) can go
        return Step("removeLegacy", reason=f"{leader} leads from the new StatefulSet")
    why = healthy([m for m in members if m.name in new_pods], pods, new_pods)
    if why:
        return Step("wait", reason=f"migration: {why}")
    return Step("switchover", new_pods[0], "migration to one StatefulSet")


def _ordinal(pod: str) -> int:
    tail = pod.rpartition("-")[2]
    return int(tail) if tail.isdigit() else -1
