"""Pure decisions about ``spec.bootstrap`` on Kubernetes: what phase it is in, what to do next.

The member pods mount no API token, so the operator observes bootstrap itself (the kopf timer in
``handlers_bootstrap`` gathers, these functions judge, no I/O and no clock):

- ``fromBackup`` / ``fromAOF`` run in the pods' ``bootstrap`` init container (``geocluster
  restore --report /dev/termination-log``): its state in the pod status is the phase
  (waiting: pending, running: restoring, exit 0: restored or skipped, exit != 0: failed), and
  the kubelet hands the report it wrote (or, if it wrote none, its last log lines) to the API as
  the termination message: bytes, backup name, md5, or why the backup was refused.
- ``fromLeader``: the leader's SERVER (``following``, ``aof_size``, ``caught_up``) beside the old
  leader's: following, caught-up (same ``aof_size``), then on request (annotation
  ``geo.geocluster.io/detach``) detaching and detached. While it is not detached
  :func:`migrating` is true and the main timer leaves the leader following.

Phases, time, bytes and the message are kept in ``status.bootstrap`` (only this timer writes
it); a condition ``Bootstrapped`` (True once restored, detached or skipped) and Events mark the
transitions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .conditions import Verdict
from .policy import Event, Member
from .spec import GROUP, BootstrapFromLeader, BootstrapRecord, GeoClusterSpec, dump, rfc3339

DETACH_ANNOTATION = f"{GROUP}/detach"
CONDITION = "Bootstrapped"
INIT_CONTAINER = "bootstrap"  # resources.BOOTSTRAP_CONTAINER (resources may not import this module's deps)
DONE = ("restored", "detached", "skipped")
_REASONS = {"pending": "Pending", "restoring": "Restoring", "restored": "Restored", "following": "Following",
            "caught-up": "CaughtUp", "detaching": "Detaching", "detached": "Detached", "skipped": "Skipped",
            "failed": "Failed"}


def migrating(spec: GeoClusterSpec, status: dict[str, Any] | None) -> bool:
    """A fromLeader bootstrap not detached (nor skipped): the leader must keep following the old
    leader, so nobody may make it lead (``FOLLOW no one``) but the detach."""
    boot = spec.bootstrap
    if boot is None or boot.from_leader is None:
        return False
    rec = (status or {}).get("bootstrap") or {}
    if rec.get("kind") not in (None, "fromLeader"):
        return False
    return rec.get("phase") not in DONE


def record_of(status: dict[str, Any] | None) -> BootstrapRecord | None:
    raw = (status or {}).get("bootstrap")
    try:
        return BootstrapRecord.model_validate(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Outcome:
    """The record to keep, and what else to do."""

    record: BootstrapRecord
    events: tuple[Event, ...] = ()
    follow: bool = False  # point the leader at the old leader (fromLeader)
    detach: bool = False  # carry out the detach now (fromLeader)
    force: bool = False
    consumed: bool = False  # the detach annotation was used up


def _changed(before: BootstrapRecord | None, rec: BootstrapRecord, now: str) -> tuple[Event, ...]:
    """The Event of a phase change, if the phase changed."""
    if before is not None and before.phase == rec.phase and (
            rec.phase != "failed" or (before.result, before.member) == (rec.result, rec.member)):
        return ()  # a failure is announced once, not at every restart of its init container
    what = {
        "restoring": ("Normal", "BootstrapRestoring", f"{rec.member}: restoring {rec.source}"),
        "restored": ("Normal", "BootstrapRestored", f"{rec.source}: {rec.aof_size} AOF bytes restored"),
        "skipped": ("Normal", "BootstrapSkipped", f"{rec.member or 'the leader'} has data already: "
                    f"{rec.source} not restored"),
        "failed": ("Warning", "BootstrapFailed", rec.message),
        "following": ("Normal", "MigrationFollowing", f"{rec.member} follows the old leader {rec.source}"),
        "caught-up": ("Normal", "MigrationCaughtUp", f"{rec.member} has all {rec.aof_size} bytes of "
                      f"{rec.source}: annotate {DETACH_ANNOTATION} to detach"),
        "detached": ("Normal", "MigrationDetached", rec.message),
    }.get(rec.phase or "")
    return (Event(*what),) if what else ()


# --- fromBackup / fromAOF: the init container's state --------------------------------------------


@dataclass(frozen=True)
class InitState:
    """What a pod's status shows of its bootstrap init container."""

    pod: str
    state: str  # none (no pod, no status yet), waiting, running, succeeded, failed
    message: str = ""  # the termination message: the restore's report, or its last log lines
    restarts: int = 0


def init_state(pod: dict[str, Any] | None, name: str) -> InitState:
    """The bootstrap init container of ``pod`` (a Pod object) as an :class:`InitState`."""
    statuses = ((pod or {}).get("status") or {}).get("initContainerStatuses") or []
    st = next((s for s in statuses if s.get("name") == INIT_CONTAINER), None)
    if st is None:
        return InitState(name, "none")
    state, last = st.get("state") or {}, st.get("lastState") or {}
    restarts = int(st.get("restartCount") or 0)
    if "terminated" in state:
        t = state["terminated"]
        ok = t.get("exitCode") == 0
        return InitState(name, "succeeded" if ok else "failed", t.get("message") or "", restarts)
    if "running" in state:
        return InitState(name, "running", restarts=restarts)
    if "terminated" in last and last["terminated"].get("exitCode") not in (0, None):  # CrashLoopBackOff
        return InitState(name, "failed", last["terminated"].get("message") or "", restarts)
    return InitState(name, "waiting", restarts=restarts)


def report(message: str) -> dict[str, Any]:
    """The restore's report (JSON) from a termination message; other text is an error line."""
    try:
        out = json.loads(message)
        if isinstance(out, dict):
            return out
    except ValueError:
        pass
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return {"result": "error", "message": lines[-1] if lines else "the restore failed without a message"}


def restore_outcome(kind: str, source: str, previous: BootstrapRecord | None, leader: InitState,
                    others: list[InitState], now: datetime) -> Outcome:
    """The record of a fromBackup/fromAOF bootstrap from the members' init containers: the
    leader's phase, unless a member's restore failed (then failed, naming it). Once restored
    (or skipped) the phase stays: a pod restarted later only skips; a member that starts later
    on a new volume and cannot restore (e.g. retention deleted the backup) is named in
    ``message`` with a Warning, since its pod cannot start."""
    stamp = rfc3339(now)
    failed = next((s for s in [leader, *others] if s.state == "failed"), None)
    if previous is not None and previous.kind == kind and previous.phase in DONE:
        if failed is None:  # a later member (scale-up, new volume) restores too: say when it cannot
            return Outcome(previous)
        text = str(report(failed.message).get("message") or "the restore failed")
        note = f"{failed.pod} (a member started later) cannot restore: {text}"
        events = () if previous.message == note else (Event("Warning", "BootstrapFailed", note),)
        return Outcome(previous.model_copy(update={"message": note}), events)
    base = previous if previous is not None and previous.kind == kind else BootstrapRecord(
        kind=kind, source=source, time=stamp)  # type: ignore[arg-type]
    if failed is not None:
        rep = report(failed.message)
        text = str(rep.get("message") or rep.get("result"))
        rec = base.model_copy(update={"phase": "failed", "result": f"error: {text}", "member": failed.pod,
                                      "message": f"{failed.pod}: {text} (restarts: {failed.restarts})"})
        return Outcome(rec, _changed(previous, rec, stamp))
    if leader.state == "succeeded":
        rep = report(leader.message)
        skipped = rep.get("result") == "skipped"
        rec = base.model_copy(update={
            "phase": "skipped" if skipped else "restored", "result": "ok", "member": leader.pod,
            "aof_size": rep.get("aofSize"), "source": rep.get("source") or base.source,
            "finished": stamp, "message": str(rep.get("message") or "")})
        return Outcome(rec, _changed(previous, rec, stamp))
    phase = "restoring" if leader.state == "running" else "pending"
    rec = base.model_copy(update={"phase": phase, "member": leader.pod, "message": ""})
    return Outcome(rec, _changed(previous, rec, stamp))


# --- fromLeader: the live migration --------------------------------------------------------------


def leader_outcome(boot: BootstrapFromLeader, previous: BootstrapRecord | None, leader: Member,
                   old: Member | None, now: datetime, detach_request: str | None = None,
                   blocked: str | None = None) -> Outcome:
    """The next step of a live migration from what the new leader (``leader``, its SERVER) and the
    old one (``old``; None when not probed) show, and a detach request (the annotation's value:
    ``force`` detaches even if the old leader cannot be made read-only). ``blocked``: why it
    cannot start at all (failed, until the spec or the Secrets change)."""
    stamp = rfc3339(now)
    consumed = detach_request is not None
    base = previous if previous is not None and previous.kind == "fromLeader" else None
    rec = base or BootstrapRecord(kind="fromLeader", source=boot.address, phase="pending", time=stamp)
    rec = rec.model_copy(update={"member": leader.name})
    if rec.phase in DONE:
        refused = Event("Warning", "DetachRefused", f"not migrating (bootstrap {rec.phase})")
        events = (refused,) if consumed else ()
        return Outcome(rec, events, consumed=consumed)
    if blocked is not None and rec.phase in (None, "pending", "failed"):
        rec = rec.model_copy(update={"phase": "failed", "result": f"error: {blocked}", "message": blocked})
        events = _changed(previous, rec, stamp)
        if consumed:
            events += (Event("Warning", "DetachRefused", blocked),)
        return Outcome(rec, events, consumed=consumed)
    if not leader.reachable:
        rec = rec.model_copy(update={"message": f"{leader.name} does not answer: {leader.error}"})
        events = (Event("Warning", "DetachRefused", f"{leader.name} does not answer"),) if consumed else ()
        return Outcome(rec, events, consumed=consumed)
    if leader.following != boot.address and rec.phase == "detaching":  # a detach cut short after
        return replace(detached(rec, now, leader.aof_size, rec.write_pause_ms or 0, True), consumed=consumed)
    if leader.following != boot.address:
        if base is None and (leader.aof_size or 0) > 0:  # an existing cluster given fromLeader later
            rec = rec.model_copy(update={"phase": "skipped", "finished": stamp, "aof_size": leader.aof_size,
                                         "message": f"{leader.name} has data already: not migrated"})
            return Outcome(rec, _changed(previous, rec, stamp), consumed=consumed)
        events = (Event("Warning", "DetachRefused", f"{leader.name} does not follow {boot.address} yet"),
                  ) if consumed else ()
        rec = rec.model_copy(update={"phase": "following" if rec.phase == "caught-up" else rec.phase,
                                     "message": ""})
        return Outcome(rec, events, follow=True, consumed=consumed)
    changes: dict[str, Any] = {"aof_size": leader.aof_size, "message": ""}
    if old is not None and old.reachable:
        changes["source_aof_size"] = old.aof_size
    elif old is not None:
        changes["message"] = f"the old leader does not answer: {old.error}"
    caught = bool(old is not None and old.reachable and leader.caught_up and leader.aof_size == old.aof_size)
    if rec.phase != "detaching":
        changes["phase"] = "caught-up" if caught else "following"
    if caught and rec.caught_up is None:
        changes["caught_up"] = stamp
    new = rec.model_copy(update=changes)
    events = _changed(previous, new, stamp)
    if rec.phase == "detaching" and not consumed:  # cut short before FOLLOW no one: resume it
        return Outcome(new, events, detach=True)
    if consumed:
        new = new.model_copy(update={"phase": "detaching"})
        return Outcome(new, events, detach=True, force=detach_request.strip().lower() == "force",
                       consumed=True)
    return Outcome(new, events)


def detached(rec: BootstrapRecord, now: datetime, aof_size: int | None, pause_ms: int,
             fenced: bool) -> Outcome:
    stamp = rfc3339(now)
    how = "old leader left read-only" if fenced else "old leader NOT fenced (force)"
    new = rec.model_copy(update={"phase": "detached", "result": "ok", "detached": stamp, "finished": stamp,
                                 "aof_size": aof_size, "write_pause_ms": pause_ms,
                                 "message": f"{rec.member} detached from {rec.source} and takes writes "
                                 f"({aof_size} AOF bytes, writes paused {pause_ms} ms; {how})"})
    return Outcome(new, _changed(rec, new, stamp))


def detach_failed(rec: BootstrapRecord, now: datetime, error: str) -> Outcome:
    stamp = rfc3339(now)
    back = "caught-up" if rec.caught_up else "following"
    new = rec.model_copy(update={"phase": back, "message": f"detach failed at {stamp}: {error}"})
    return Outcome(new, (Event("Warning", "DetachFailed", error),))


# --- the condition --------------------------------------------------------------------------------


def verdict(rec: BootstrapRecord) -> Verdict:
    """The ``Bootstrapped`` condition for a record."""
    phase = rec.phase or "pending"
    reason = _REASONS[phase]
    if phase == "failed" and "refused" in rec.message:
        reason = "RestoreRefused"
    text = rec.message or f"{rec.kind} {rec.source}: {phase}"
    return Verdict(CONDITION, phase in DONE, reason, text)


def status_patch(rec: BootstrapRecord) -> dict[str, Any]:
    """status.bootstrap as a merge-patch: every field, cleared ones as null."""
    out: dict[str, Any] = dump(rec)
    for name, info in BootstrapRecord.model_fields.items():
        out.setdefault(info.alias or name, None)
    return out
