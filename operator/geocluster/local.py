"""The local runtime: a GeoCluster's leader and followers as geoserver processes on this machine.

Two parts, as in Kubernetes:
- :class:`Supervisor` is the kubelet/StatefulSet half: it starts members on 127.0.0.1 with their
  own data dirs, restarts a process that died (with back-off, keeping its data), and stops them
  (SIGTERM, wait, SIGKILL). It knows nothing of schedules or divergence.
- :class:`LocalCluster` is the operator half: every probe interval :meth:`LocalCluster.tick`
  probes all members (``probe.observe``), asks the same pure ``policy.decide`` the kopf operator
  uses, records intent in ``status.json`` first, then acts (shrink -> AOFSHRINK on the leader,
  resync -> RESYNC on a follower, restart -> stop and start that process). Before that the
  leadership policy (``failover.decide``) may ask for a switchover or a failover, which
  :meth:`LocalCluster._promote` carries out (fence the old leader, promote, re-point).

Leadership is a role: any member can lead; the current leader is kept in ``cluster.json``
(``leader``), and every member is started from that view (followers with ``--follow`` the
current leader), so a restarted ex-leader comes back as a follower and never takes a write
first. A leader that stops answering is fenced twice before a follower is promoted: by time
(the runtime renews the leader's lease, geoserver ``LEASE``, every ``renew_every`` seconds while
it is healthy, and promotes only once the last lease must have lapsed: ``failover.lease_plan``)
and by killing its process (the supervisor owns the processes: STONITH), so two leaders never
take writes. The lease epoch is kept in ``cluster.json`` (``leaderEpoch``); each promotion
takes the next one.

With TLS (``up --tls``, :mod:`geocluster.localtls`) members serve TLS only, followers verify the
leader with the cluster's CA, and probes connect with it too.

Time comes from an injected :class:`Clock`, so tests run schedules and grace periods at once.
Manual requests arrive as trigger files (see :mod:`geocluster.localstate`); SIGUSR1 wakes the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

import psutil

from . import failover, probe
from .localbackup import LocalBackups
from .localstate import Manifest, StateDir, proc_id, process_of
from .localtls import LocalTls
from .policy import Action, Decision, Member, Triggers, apply_outcome, decide, load_status
from .spec import dump, parse_time, rfc3339

log = logging.getLogger("geocluster.local")

HOST = "127.0.0.1"
STOP_GRACE = 10.0  # seconds between SIGTERM and SIGKILL
PROBE_TIMEOUT = 2.0
MAX_BACKOFF = 30.0  # restarts of a crashing process are spaced 0, 1, 2, 4 ... 30 s apart
STABLE_AFTER = 60.0  # a process up this long has its crash count reset
RENEW_CHECK = 3600.0  # seconds between checks for member certificates due for renewal
CATCH_UP_TIMEOUT = 15.0  # a switchover target must reach the leader's aof_size by then
CATCH_UP_POLL = 0.002  # seconds between its polls (writes are refused meanwhile)
MIN_RENEW = 0.5  # seconds: the shortest lease renewal interval


def renew_interval(probe_interval: float, delay: float) -> float:
    """How often the lease is renewed: six times per failover delay, never less often than
    the probes run, never more than twice a second."""
    return min(probe_interval, max(MIN_RENEW, delay / 6))


class Clock(Protocol):
    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_free(port: int) -> bool:
    """Whether geoserver could listen on ``port`` (it binds with SO_REUSEADDR, as asyncio does)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


@dataclass
class Proc:
    """One supervised member process."""

    name: str
    role: Literal["leader", "follower"]
    port: int
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0  # by the supervisor (crashes) and by repairs
    crashes: int = 0  # consecutive, for the back-off
    started_at: float = 0.0  # monotonic
    wire: bool = False  # check FOLLOW once it answers
    memory: int | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


class Supervisor:
    """Starts, restarts and stops the member processes of one cluster."""

    def __init__(self, manifest: Manifest, state: StateDir):
        self.manifest, self.state = manifest, state
        self.procs: dict[str, Proc] = {}
        self.tls: LocalTls | None = None  # members serve TLS only, followers verify the leader
        self.upstream: tuple[str, str | None] | None = None  # migrating: the old leader, password

    @property
    def ca_file(self) -> str | None:
        """The CA that probes verify members with (None: plaintext)."""
        return str(self.tls.ca_file) if self.tls else None

    @property
    def leader(self) -> Proc:
        return next(p for p in self.procs.values() if p.role == "leader")

    def plan(self, previous: dict[str, Any] | None, leader_port: int | None = None) -> None:
        """Members wanted by the spec on the ports of a previous run (the leader on
        ``leader_port`` the first time), or on any free port where those are taken. The
        leader is the one a previous run recorded (``leader``), else the member ``leader``."""
        old = {m["name"]: m for m in (previous or {}).get("members", [])}
        names = ["leader"] + [f"follower-{i}" for i in range(1, self.manifest.spec.followers + 1)]
        current = (previous or {}).get("leader") or "leader"
        if current not in names:  # a leader beyond a reduced follower count keeps its data
            names.append(current)
        for name, role in ((n, "leader" if n == current else "follower") for n in names):
            before = old.get(name, {})
            wanted = [before.get("port"), leader_port if role == "leader" else None]
            port = next((p for p in wanted if p and port_free(p)), None) or free_port()
            self.procs[name] = Proc(name, role, port, restarts=before.get("restarts", 0))  # type: ignore[arg-type]

    def command(self, p: Proc) -> list[str]:
        spec = self.manifest.spec
        cmd = [sys.executable, "-m", "geoserver", "--host", HOST, "--port", str(p.port)]
        cmd += ["--dir", str(self.state.member_dir(p.name)), "--appendfsync", spec.server.appendfsync]
        if p.role == "follower":
            cmd += ["--follow", self.leader.address]
        elif self.upstream is not None:  # a live migration: the leader follows the old leader
            cmd += ["--follow", self.upstream[0]]
        if self.tls is not None:
            cmd += self.tls.args(p.name)
        return cmd + list(spec.server.extra_args)

    def environment(self, p: Proc | None = None) -> dict[str, str]:
        """The password travels in the environment, never on the command line (`ps`)."""
        env = dict(os.environ)
        # always set, empty without a password: a password dropped from the manifest must not
        # live on in a member's saved config (geoserver prefers a given value, even empty)
        env["GEOSERVER_REQUIREPASS"] = env["GEOSERVER_LEADERAUTH"] = self.manifest.password or ""
        if p is not None and p.role == "leader" and self.upstream is not None:
            env["GEOSERVER_LEADERAUTH"] = self.upstream[1] or ""  # the old leader's password
        return env

    def start(self, p: Proc) -> None:
        if not port_free(p.port):
            old, p.port = p.port, free_port()
            log.warning("%s: port %d is taken, moving to %d", p.name, old, p.port)
            if p.role == "leader":
                for f in self.procs.values():
                    f.wire = f.role == "follower"
        self.state.member_dir(p.name).mkdir(parents=True, exist_ok=True)
        logfile = self.state.log_file(p.name)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as out:
            # own session: a Ctrl-C in the terminal reaches `up`, which stops members in order
            p.popen = subprocess.Popen(
                self.command(p),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.environment(p),
            )
        p.started_at, p.wire = time.monotonic(), p.role == "follower"
        log.info("started %s (pid %d) on %s", p.name, p.popen.pid, p.address)

    async def stop(self, p: Proc, grace: float = STOP_GRACE) -> None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL."""
        popen, p.popen = p.popen, None
        if popen is None or popen.poll() is not None:
            return
        popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if popen.poll() is None:
            log.warning("%s did not stop within %.0fs: SIGKILL", p.name, grace)
            popen.kill()
            await asyncio.to_thread(popen.wait)

    async def stop_all(self) -> None:
        followers = [p for p in self.procs.values() if p.role == "follower"]
        await asyncio.gather(*(self.stop(p) for p in followers))
        for p in self.procs.values():
            await self.stop(p)

    async def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every member answers; a member that exits at start-up is an error."""
        deadline = time.monotonic() + timeout
        pending = set(self.procs)
        while pending:
            for name in list(pending):
                p = self.procs[name]
                if p.popen is not None and p.popen.poll() is not None:
                    raise RuntimeError(f"{name} exited at start-up: {self.log_tail(name)}")
                if (await probe.observe(name, p.role, p.address, self.manifest.password, 1.0,
                                        self.ca_file)).reachable:
                    pending.discard(name)
            if pending and time.monotonic() > deadline:
                raise RuntimeError(f"{', '.join(sorted(pending))} did not answer within {timeout:.0f}s")
            await asyncio.sleep(0.05)

    def revive(self, hold: frozenset[str] = frozenset()) -> list[str]:
        """Start members whose process died (never started, crashed, kill -9), with back-off;
        not those in ``hold`` (a dead leader while a failover may come)."""
        revived = []
        for p in self.procs.values():
            if p.name in hold and not p.running:
                if p.popen is not None:
                    log.warning("%s (pid %d) exited with %s; not restarted as leader while a "
                                "failover may come", p.name, p.popen.pid, p.popen.returncode)
                    p.popen, p.crashes, p.restarts = None, p.crashes + 1, p.restarts + 1
                    p.started_at = time.monotonic()
                continue
            if p.running:
                if time.monotonic() - p.started_at > STABLE_AFTER:
                    p.crashes = 0
                continue
            if p.popen is not None:  # it was running: a crash
                log.warning("%s (pid %d) exited with %s", p.name, p.popen.pid, p.popen.returncode)
                p.popen, p.crashes, p.restarts = None, p.crashes + 1, p.restarts + 1
                p.started_at = time.monotonic()
            delay = min(2.0 ** (p.crashes - 2), MAX_BACKOFF) if p.crashes > 1 else 0.0
            if time.monotonic() - p.started_at >= delay:
                self.start(p)
                revived.append(p.name)
        return revived

    def sample_memory(self) -> None:
        for p in self.procs.values():
            try:
                p.memory = psutil.Process(p.popen.pid).memory_info().rss if p.running and p.popen else None
            except psutil.Error:
                p.memory = None

    def log_tail(self, name: str, chars: int = 600) -> str:
        try:
            return self.state.log_file(name).read_text(errors="replace")[-chars:].strip()
        except OSError:
            return "(no log)"


def stop_leftovers(previous: dict[str, Any] | None) -> list[int]:
    """Terminate member processes of a previous `up` that was killed without cleaning up."""
    stopped = []
    for m in (previous or {}).get("members", []):
        proc = process_of(m.get("process"))
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(psutil.TimeoutExpired):
                proc.wait(STOP_GRACE)
            if proc.is_running():
                proc.kill()
            stopped.append(proc.pid)
    return stopped


@dataclass
class LocalCluster:
    """The control loop over a :class:`Supervisor`: probe, decide, record, act."""

    manifest: Manifest
    state: StateDir
    clock: Clock = field(default_factory=SystemClock)
    leader_port: int | None = None  # preferred on a first start (the CLI asks for 9851)
    tls: bool | None = None  # members with TLS (None: as the previous run, else without)

    def __post_init__(self) -> None:
        self.sup = Supervisor(self.manifest, self.state)
        self.status: dict[str, Any] = {}
        self.members: list[Member] = []
        self.wake = asyncio.Event()
        self.info: dict[str, Any] = {}
        self.last_resync: dict[str, str] = {}
        self._tls_checked = 0.0  # monotonic time of the last renewal check
        self.hold_leader = self.manifest.spec.failover.enabled  # see failover.LeaderDecision
        self.backups = LocalBackups(self)  # scheduled backups, bootstrap, detach
        spec = self.manifest.spec
        self.lease = failover.lease_plan(spec, renew_interval(spec.divergence.probe_interval_seconds,
                                                              spec.failover.delay))
        # the latest end of a lease this runtime may have granted the leader (None: none yet)
        self.lease_until: datetime | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start (or resume) every member and wait until they answer."""
        previous = self.state.read_cluster()
        if self.state.supervisor() and self.state.supervisor() != os.getpid():
            raise RuntimeError(f"already running (pid {self.state.supervisor()}) for {self.state.path}")
        if stop_leftovers(previous):
            log.warning("stopped member processes left over by a previous run")
        self.state.clear_triggers()
        spec_hash = hashlib.sha256(json.dumps(dump(self.manifest.spec), sort_keys=True).encode()).hexdigest()
        prev = previous or {}
        self.info = {
            "name": self.manifest.name,
            "source": self.manifest.source,
            "created": prev.get("created") or rfc3339(self.clock.now()),
            "generation": prev.get("generation", 0) + (prev.get("specHash") != spec_hash),
            "specHash": spec_hash,
            "supervisor": proc_id(os.getpid()),
            "manifest": self.manifest.path,  # `up --state-dir` resumes with it; another needs --force
            "schedule": self.manifest.spec.aof_shrink.schedule,
            "timeZone": self.manifest.spec.aof_shrink.time_zone,
        }
        self.last_resync = {m["name"]: m.get("lastResync", "") for m in prev.get("members", [])}
        self.status = self.state.read_status() or {}
        self.sup.plan(previous, self.leader_port)
        self.info["leader"] = self.sup.leader.name
        self.info["leaderEpoch"] = int(prev.get("leaderEpoch") or 1)
        if (self.status.get("lastFailover") or {}).get("result") == failover.STARTED:
            self.status = failover.finish(self.status, self.clock.now(), "error: interrupted (up stopped)")
        self.info["tls"] = self.tls if self.tls is not None else bool(prev.get("tls"))
        if self.info["tls"]:
            self.sup.tls = LocalTls(self.state.path / "tls")
            self._renew_certificates()
        self.backups.bootstrap(previous)  # a new cluster's data, before its members start
        for p in self.sup.procs.values():
            self.sup.start(p)
        self._persist()
        await self.sup.wait_ready()
        await self.renew_lease()  # before it takes writes: a lease from the start
        # only the runtime sets READONLY (to stop writes during a switchover): one left by an
        # interrupted switchover must not keep the leader from taking writes
        await probe.send(self.sup.leader.address, "READONLY", "no", password=self.manifest.password,
                         ca_file=self.sup.ca_file)

    async def stop(self) -> None:
        if not self.info:  # never started
            return
        log.info("stopping all members")
        await self.backups.wait()
        await self.sup.stop_all()
        self.info["supervisor"] = None
        self._persist()

    async def run(self, stopping: asyncio.Event) -> None:
        """Tick every probe interval until ``stopping`` is set (SIGUSR1 sets ``wake``), and
        renew the leader's lease in between (every ``lease.renew_every`` seconds)."""
        interval = self.manifest.spec.divergence.probe_interval_seconds
        due = self.clock.now()
        while not stopping.is_set():
            try:
                if self.wake.is_set() or self.clock.now() >= due:
                    self.wake.clear()
                    started = self.clock.now()
                    await self.tick()
                    # every interval from the tick's start: a tick held up by a probe timeout (a
                    # stopped leader) must not stretch the interval by that timeout
                    due = started + timedelta(seconds=interval)
                else:
                    await self.renew_lease()
            except Exception:  # a tick must never end the loop
                log.exception("tick failed")
            pause = min((due - self.clock.now()).total_seconds(), self.lease.renew_every)
            waiters = [asyncio.ensure_future(e.wait()) for e in (stopping, self.wake)]
            waiters.append(asyncio.ensure_future(self.clock.sleep(max(0.0, pause))))
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in waiters:
                w.cancel()

    async def renew_lease(self) -> None:
        """Renew the leader's lease while it is healthy (the policy's last look found nothing
        wrong): with failover on only, since only then may the runtime promote by itself."""
        spec = self.manifest.spec
        if not spec.failover.enabled or (self.status.get("leaderWatch") or {}).get("failing"):
            return
        leader = self.sup.leader
        if not leader.running:
            return
        grant = await probe.grant_lease(leader.address, int(self.info.get("leaderEpoch") or 1),
                                        self.lease.ms, self.manifest.password,
                                        min(PROBE_TIMEOUT, self.lease.renew_every),  # not a tick's
                                        self.sup.ca_file, now=self.clock.now, adopt=True)
        self.lease_until = failover.lease_end(self.lease_until, grant.read_at, self.lease)
        if grant.error and grant.read_at is not None:  # refused, or the reply was lost
            log.warning("lease renewal of %s: %s", leader.name, grant.error)
        if grant.info is not None and grant.info.epoch > int(self.info.get("leaderEpoch") or 1):
            self.info["leaderEpoch"] = grant.info.epoch

    # --- one tick -----------------------------------------------------------------------------

    async def _observe(self) -> None:
        # a member waiting out its crash back-off is like a pod without an IP: the supervisor is
        # on it, so the policy waits for it instead of repairing (supervision is not a repair)
        targets = [(p.name, p.role, p.address if p.running else None) for p in self.sup.procs.values()]
        observed = await probe.observe_all(targets, self.manifest.password, PROBE_TIMEOUT,  # type: ignore[arg-type]
                                           self.sup.ca_file)
        held = "not running (held: a failover may come)"
        self.members = [
            m if m.address else replace(m, error=held if m.role == "leader" and self.hold_leader
                                        else "not running (restart back-off)")
            for m in observed
        ]

    async def tick(self) -> Decision:
        """Revive dead processes, probe, decide leadership (switchover, failover) and act on
        it, decide the rest, record intent, act, record outcome."""
        hold = frozenset({self.sup.leader.name}) if self.hold_leader else frozenset()
        for name in self.sup.revive(hold):
            log.info("restarted %s: its process had exited", name)
        if self.sup.tls is not None and time.monotonic() - self._tls_checked > RENEW_CHECK:
            self._renew_certificates()
        await self._observe()
        await self._wire()
        await self._refollow_resyncing()
        raw = self.state.triggers()
        triggers = Triggers.from_requests(raw)
        if self.backups.migrating:  # the leader follows the old leader: nothing to repair yet
            triggers = replace(triggers, paused=True)
        if self.lease_until is None:  # a previous `up` may have granted one just before it ended
            self.lease_until = self.clock.now() + timedelta(seconds=self.lease.seconds)
        lead = failover.decide(self.manifest.spec, self.status, self.members, self.clock.now(),
                               promote=raw.get("promote"), paused=triggers.paused,
                               lease=self.lease, lease_until=self.lease_until)
        self.status, self.hold_leader = lead.status, lead.hold_leader
        for kind in lead.consumed:
            self.state.consume(kind, raw.get(kind, ""))
        for event in lead.events:
            log.log(logging.WARNING if event.type == "Warning" else logging.INFO, "%s: %s",
                    event.reason, event.message)
        if lead.promotion is not None:
            self._persist()  # intent first
            self.status = await self._promote(lead.promotion)
            self.hold_leader = self.manifest.spec.failover.enabled
            self._persist()
            await self._observe()
        else:
            await self.renew_lease()
        created = parse_time(self.info["created"]) or self.clock.now()
        decision = decide(
            self.manifest.spec,
            # no reconcile handler here: a generation is applied when `up` starts with its spec
            {**self.status, "observedGeneration": self.info["generation"]},
            self.members,
            self.clock.now(),
            created=created,
            generation=self.info["generation"],
            triggers=triggers,
            failover_blocked=lead.blocked,
            migrating=self.backups.old_leader(),  # Ready/Degraded reason Migrating, not NotReady
        )
        self.status = {**decision.status, "observedGeneration": self.info["generation"]}
        self._persist()  # intent first: a restarted `up` sees what is in flight
        for kind in decision.consumed:  # then the triggers, before acting: used at most once
            self.state.consume(kind, raw.get(kind, ""))
        for event in decision.events:
            level = logging.WARNING if event.type == "Warning" else logging.INFO
            log.log(level, "%s: %s", event.reason, event.message)
            if event.reason in ("ResyncSucceeded", "ResyncFailed"):  # "<member> ..." / "<member>: ..."
                member = event.message.split()[0].rstrip(":")
                when = self.last_resync.get(member, "").partition(" ")[0]
                self.last_resync[member] = f"{when} {'ok' if event.reason == 'ResyncSucceeded' else 'failed'}"
        for action in decision.actions:
            self.status = await self._act(action)
        await self.backups.tick(raw)
        self.sup.sample_memory()
        self._persist()
        return decision

    async def _act(self, action: Action) -> dict[str, Any]:
        p = self.sup.procs.get(action.member)
        why = f"{action.kind} {action.member} ({action.reason})"
        try:
            if p is None:
                raise probe.ProbeError(f"no member {action.member}")
            if action.kind == "restart":
                await self.sup.stop(p)
                p.restarts += 1
                self.sup.start(p)
            else:
                if action.kind == "resync" and self._follows_no_one(p.name):
                    await self._refollow(p)  # RESYNC alone would fail: "not a follower"
                await probe.start_action(p.address, action.kind, self.manifest.password, self.sup.ca_file)
            return self.status  # its Event (ShrinkStarted, ResyncStarted, RepairStarted) is the log line
        except Exception as exc:  # a failed action is recorded in status, never ends the loop
            log.warning("%s failed: %s", why, exc)
            return apply_outcome(self.status, action, str(exc))

    def _follows_no_one(self, name: str) -> bool:
        """A follower that answers but follows nobody (`FOLLOW no one` by hand)."""
        m = next((m for m in self.members if m.name == name), None)
        return m is not None and m.role == "follower" and m.reachable and not m.following

    async def _refollow(self, p: Proc, then: str = "then RESYNC") -> None:
        host, port = self.sup.leader.address.split(":")
        await probe.send(p.address, "FOLLOW", host, port, password=self.manifest.password,
                         ca_file=self.sup.ca_file)
        log.warning("%s followed no one (FOLLOW no one by hand?): FOLLOW %s, %s",
                    p.name, self.sup.leader.address, then)

    async def _refollow_resyncing(self) -> None:
        """A follower told `FOLLOW no one` while its resync is in flight: nothing is judged until
        that resync settles, which it then could only do by timing out (timeoutSeconds, 600 s by
        default). FOLLOW the leader again and RESYNC anew: the record settles as usual."""
        rec = self.status.get("lastResync") or {}
        name = rec.get("member") or ""
        if rec.get("result") != "started" or name not in self.sup.procs or not self._follows_no_one(name):
            return
        p = self.sup.procs[name]
        try:
            await self._refollow(p, then="then RESYNC again (its resync was in flight)")
            await probe.start_action(p.address, "resync", self.manifest.password, self.sup.ca_file)
        except probe.ProbeError as exc:  # e.g. a wrong leaderauth: the resync times out as before
            log.warning("%s: FOLLOW %s and RESYNC failed: %s", name, self.sup.leader.address, exc)

    async def _promote(self, pr: failover.Promotion) -> dict[str, Any]:
        """Carry out a switchover or failover: fence the old leader, (switchover: wait until the
        target has all of its AOF), promote the target, re-point everyone else. Returns the status
        with ``lastFailover`` settled. The target (and a reachable old leader) are spoken to
        over connections opened before the write pause starts, so the pause holds only the
        round trips themselves (READONLY, the catch-up polls, FOLLOW no one, READONLY no)."""
        old, new = self.sup.procs[pr.old], self.sup.procs[pr.new]
        pw, ca = self.manifest.password, self.sup.ca_file

        async def send(p: Proc, *args: str) -> None:
            await probe.send(p.address, *args, password=pw, ca_file=ca)

        async def lease(p: Proc, epoch: int, ms: int) -> probe.Renewal:
            return await probe.grant_lease(p.address, epoch, ms, pw, PROBE_TIMEOUT, ca, now=self.clock.now)

        # the epochs members hold: not asked of an old leader that does not answer (stopped,
        # hung: it would hold the failover for a whole probe timeout), which is killed anyway
        asked = [p for p in (old, new) if p.running and (p is new or pr.old_reachable)]
        seen = [i.epoch if i else None for i in await asyncio.gather(
            *(probe.lease_info(p.address, pw, PROBE_TIMEOUT, ca) for p in asked))]
        epoch = failover.next_epoch(int(self.info.get("leaderEpoch") or 1), seen)
        self.info["leaderEpoch"] = epoch
        self._persist()  # the new epoch before anyone holds it
        watch = load_status(self.status).leader_watch  # the decision's view, before finish resets it
        old_size: int | None = None
        target_size: int | None = None
        try:
            # the target's lease first, outside the write pause: as a follower it refuses writes anyway
            granted = await lease(new, epoch, self.lease.ms)
            if not granted.ok:
                raise probe.ProbeError(f"lease for {new.name}: {granted.error}")
            async with contextlib.AsyncExitStack() as held:
                target = await held.enter_async_context(probe.Client(new.address, pw, PROBE_TIMEOUT, ca))
                if pr.old_reachable:
                    leader = await held.enter_async_context(probe.Client(old.address, pw, PROBE_TIMEOUT, ca))
                    await leader.command("READONLY", "yes")  # writes now get `read only`: retry elsewhere
                    fenced_at = time.monotonic()
                    if pr.kind == "switchover":
                        old_size = await self._wait_caught_up(leader, target, new.name)
                    else:
                        old_size = await _aof_size(leader)
                else:
                    fenced_at = time.monotonic()
                    old_size = await self._kill(old)
                self.lease_until = failover.lease_end(None, granted.read_at, self.lease)
                if pr.kind == "failover":  # behindBytes at the promotion itself: READONLY first, so
                    await target.command("READONLY", "yes")  # the size read after FOLLOW no one
                await target.command("FOLLOW", "no", "one")  # holds every byte it got, no write
                if pr.kind == "failover":
                    target_size = await _aof_size(target)
                await target.command("READONLY", "no")  # also one left by an interrupted switchover
        except Exception as exc:  # not promoted: the old leader stays (writes resume there)
            log.warning("%s %s -> %s failed: %s", pr.kind, pr.old, pr.new, exc)
            self.info["leaderEpoch"] = epoch + 1  # the old leader leads on at a newer epoch
            self._persist()
            with contextlib.suppress(Exception):
                await lease(new, epoch + 1, 0)
            if pr.old_reachable:
                with contextlib.suppress(Exception):
                    regrant = await lease(old, epoch + 1, self.lease.ms)
                    self.lease_until = failover.lease_end(self.lease_until, regrant.read_at, self.lease)
                    await send(old, "READONLY", "no")
            return failover.finish(self.status, self.clock.now(), f"error: {exc}")
        pause_ms = round((time.monotonic() - fenced_at) * 1000)
        if pr.old_reachable:  # revoked at the new epoch (READONLY fences it meanwhile): no stale
            with contextlib.suppress(Exception):  # renewal can revive it
                await lease(old, epoch, 0)
        old.role, new.role = "follower", "leader"
        self.info["leader"] = new.name
        if pr.kind == "switchover":
            behind = 0  # the target had every byte before it was promoted
        else:
            # the killed leader's file is the real end of what it acknowledged; an old leader that
            # answers (empty) lost what it took since it came back, and the target lacks what the
            # leader held when last seen healthy: both counted (failover.loss_bound)
            known = old_size if not pr.old_reachable and old_size is not None else (
                watch.aof_size if watch else None)
            behind = failover.loss_bound(pr, known, target_size,
                                         old_held=old_size if pr.old_reachable else None)
        status = failover.finish(self.status, self.clock.now(), "ok", behind_bytes=behind,
                                 write_pause_ms=pause_ms, leader=new.name,
                                 caught_up=failover.holders(pr, watch),
                                 leader_aof_size=old_size if pr.kind == "switchover" else target_size)
        self.status = status
        self._persist()  # the new view before anyone follows it: a restarted `up` resumes it
        log.warning("%s: %s -> %s (%s); writes paused %d ms, new leader behind by %d bytes",
                    pr.kind, pr.old, pr.new, pr.reason, pause_ms, behind)
        for p in self.sup.procs.values():  # the followers first, the old leader last
            p.wire = p not in (new, old) and p.running  # FOLLOW now; retried on later ticks
        self.members = [replace(m, following=None) for m in self.members]
        await self._wire()
        if old.running:
            try:
                host, port = new.address.split(":")
                await send(old, "FOLLOW", host, port)
                await send(old, "READONLY", "no")  # a follower now: it refuses writes anyway
            except Exception as exc:  # stays READONLY (fenced) until a later FOLLOW succeeds
                log.warning("%s: FOLLOW %s failed, stays read-only: %s", old.name, new.address, exc)
                old.wire = True
        else:
            old.crashes = 0
            self.sup.start(old)  # comes back as a follower of the new leader (--follow)
        return status

    async def _wait_caught_up(self, leader: probe.Client, target: probe.Client, name: str) -> int:
        """Until the target has applied all of the leader's AOF (writes on it are stopped), over
        the two held connections; both polled at once."""
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while True:
            wanted, got = await asyncio.gather(_aof_size(leader), _aof_size(target))
            if wanted is not None and got == wanted:
                return wanted
            if time.monotonic() > deadline:
                raise probe.ProbeError(f"{name} at aof_size {got}, leader at {wanted} "
                                       f"after {CATCH_UP_TIMEOUT:.0f}s")
            await asyncio.sleep(CATCH_UP_POLL)

    async def _kill(self, p: Proc) -> int | None:
        """Fence a leader that does not answer: kill its process (STONITH; it may be stopped or
        partitioned, never to take a write again). Returns its AOF file size: the real end of
        what it acknowledged, compared with the new leader's to bound the loss."""
        if p.popen is not None and p.popen.poll() is None:
            log.warning("fencing %s: SIGKILL (pid %d)", p.name, p.popen.pid)
            p.popen.kill()
            await asyncio.to_thread(p.popen.wait)
        p.popen = None
        try:
            return (self.state.member_dir(p.name) / "appendonly.aof").stat().st_size
        except OSError:
            return None

    async def _wire(self) -> None:
        """After a (re)start, point a follower at the leader (its config file may say otherwise)."""
        leader = self.sup.leader.address
        for m in self.members:
            p = self.sup.procs[m.name]
            if not (p.wire and m.reachable):
                continue
            p.wire = False
            if m.following != leader:
                host, port = leader.split(":")
                try:
                    await probe.send(p.address, "FOLLOW", host, port, password=self.manifest.password,
                                     ca_file=self.sup.ca_file)
                    log.info("%s: FOLLOW %s (was following %s)", m.name, leader, m.following or "nobody")
                except probe.ProbeError as exc:
                    p.wire = True  # again next tick
                    log.warning("%s: FOLLOW %s failed: %s", m.name, leader, exc)

    def _renew_certificates(self) -> None:
        """Create the CA and member certificates, or renew those due; running members reload
        renewed files by themselves (geoserver's tls-reload-interval)."""
        assert self.sup.tls is not None
        self._tls_checked = time.monotonic()
        issued = self.sup.tls.ensure(list(self.sup.procs))
        if issued:
            log.info("TLS certificates issued for %s (CA %s)", ", ".join(issued), self.sup.tls.ca_file)

    def _persist(self) -> None:
        st = load_status(self.status)
        rec = st.last_resync
        if rec:
            result = rec.result if rec.result in ("started", "ok") else "failed"
            self.last_resync[rec.member] = f"{rec.time} {result}"
        observed = {m.name: m for m in self.members}
        self.info["updated"] = rfc3339(self.clock.now())
        self.info["members"] = [
            {
                "name": p.name,
                "role": p.role,
                "port": p.port,
                "address": p.address,
                "process": _ident(p),
                "restarts": p.restarts,
                "memory": p.memory,
                "reachable": observed[p.name].reachable if p.name in observed else None,
                "lastResync": self.last_resync.get(p.name, ""),
            }
            for p in self.sup.procs.values()
        ]
        self.state.write_cluster(self.info)
        if self.status:
            self.state.write_status(self.status)


async def _aof_size(client: probe.Client) -> int | None:
    size = (await client.command("SERVER"))["stats"].get("aof_size")
    return size if isinstance(size, int) else None


def _ident(p: Proc) -> dict[str, Any] | None:
    try:
        return proc_id(p.popen.pid) if p.running and p.popen else None
    except psutil.Error:
        return None
