"""Backups and bootstrap of the local runtime (``geocluster up``), beside the control loop.

- :meth:`LocalBackups.bootstrap` runs once, before the members of a *new* cluster start (no
  member has an AOF yet): ``fromBackup`` restores and verifies a backup into the leader's data
  dir and copies the verified file to every follower (they then catch up incrementally instead
  of a full stream), ``fromAOF`` copies an AOF, ``fromLeader`` starts the leader as a follower
  of the old leader (a live migration) until ``geocluster detach``.
- :meth:`LocalBackups.tick` runs every loop tick: it asks the pure ``backup_policy.decide``
  (schedule, ``geocluster backup`` requests, retries), records intent in the status, runs the
  backup in a worker thread (the loop keeps ticking), and settles its outcome on a later tick.
  It also carries out a ``detach`` request: the old leader is made READONLY, the new one waits
  until it has every byte of it, then stops following and takes writes.

The outcome of bootstrap is kept in ``cluster.json`` (``bootstrap``), so a restarted ``up`` does
not bootstrap again, and in the status (``status.bootstrap``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import shutil
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from . import backup, backup_policy, bootstrap_state, migration, probe
from .backupstore import BackupError, Catalog, open_store
from .policy import Event
from .spec import BackupSpec, BootstrapRecord, ObjectStoreSpec, dump, parse_time, rfc3339

if TYPE_CHECKING:
    from .local import LocalCluster

log = logging.getLogger("geocluster.local")



def manifest_secret(source: str, name: str, key: str) -> str:
    """A key of a Secret in the manifest file (``stringData`` or base64 ``data``)."""
    try:
        docs = list(yaml.safe_load_all(Path(source).read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise BackupError(f"cannot read Secret {name!r} from {source}: {exc}") from None
    for d in docs:
        if not isinstance(d, dict) or d.get("kind") != "Secret":
            continue
        if (d.get("metadata") or {}).get("name") == name:
            if key in (d.get("stringData") or {}):
                return str(d["stringData"][key])
            if key in (d.get("data") or {}):
                return base64.b64decode(d["data"][key]).decode()
    raise BackupError(f"no Secret {name!r} with key {key!r} in {source}")


class LocalBackups:
    """Backup schedule and bootstrap for one :class:`LocalCluster`."""

    def __init__(self, cluster: LocalCluster):
        self.c = cluster
        self.task: asyncio.Task[backup.Outcome] | None = None
        self.override: str | None = None  # `backup --to URL`: its destination, kept for its retries

    # --- helpers ------------------------------------------------------------------------------

    def _secret(self, name: str, key: str) -> str:
        return manifest_secret(self.c.manifest.source, name, key)

    def s3(self, store: ObjectStoreSpec | None):
        return backup.s3_options(store, self._secret) if store else backup.S3Options()

    def backup_spec(self, destination: str | None = None) -> BackupSpec | None:
        spec = self.c.manifest.spec.backup
        if destination:
            return spec.model_copy(update={"destination": destination}) if spec else BackupSpec(
                destination=destination)
        return spec

    @property
    def record(self) -> dict[str, Any]:
        return dict(self.c.info.get("bootstrap") or {})

    @property
    def migrating(self) -> bool:
        """A fromLeader bootstrap not detached yet: the leader follows the old leader."""
        return self.record.get("kind") == "fromLeader" and self.record.get("result") == "following"

    def old_leader(self) -> str | None:
        """The old leader's address while migrating (the policy's ``migrating``)."""
        boot = self.c.manifest.spec.bootstrap
        return boot.from_leader.address if self.migrating and boot and boot.from_leader else None

    def upstream(self) -> tuple[str, str | None] | None:
        """(address, password) of the old leader while migrating."""
        boot = self.c.manifest.spec.bootstrap
        if not self.migrating or boot is None or boot.from_leader is None:
            return None
        ref = boot.from_leader.auth_secret_ref
        return boot.from_leader.address, self._secret(ref.name, ref.key) if ref else None

    def _source(self, name: str, role: str, address: str) -> backup.Source:
        ca = self.c.sup.ca_file
        tls = ssl.create_default_context(cafile=ca) if ca else None
        return backup.Source(name, role, address, self.c.manifest.password, tls)

    # --- bootstrap ----------------------------------------------------------------------------

    def bootstrap(self, previous: dict[str, Any] | None) -> None:
        """Fill the data dirs of a new cluster from spec.bootstrap (before members start)."""
        boot = self.c.manifest.spec.bootstrap
        if (previous or {}).get("bootstrap"):
            self.c.info["bootstrap"] = previous["bootstrap"]  # type: ignore[index]
        if boot is None or self.record:
            self._apply_upstream()
            return
        dirs = [self.c.state.member_dir(p.name) for p in self.c.sup.procs.values()]
        if any((d / backup.AOF_FILE).exists() and (d / backup.AOF_FILE).stat().st_size for d in dirs):
            log.warning("bootstrap skipped: the members have data already")
            return
        try:
            self._bootstrap(boot, dirs)
        except BackupError as exc:  # nothing was placed: no member serves a refused backup
            raise RuntimeError(f"bootstrap: {exc}") from None
        self._apply_upstream()

    def _bootstrap(self, boot: Any, dirs: list[Path]) -> None:
        leader_dir = self.c.state.member_dir(self.c.sup.leader.name)
        now = rfc3339(self.c.clock.now())
        if boot.from_backup is not None:
            fb = boot.from_backup
            catalog = Catalog(open_store(fb.destination, self.s3(fb)), fb.cluster or self.c.manifest.name)
            m = backup.restore(catalog, fb.name, leader_dir)
            rec = BootstrapRecord(kind="fromBackup", source=catalog.location(m.name), phase="restored",
                                  result="ok", time=now, finished=now, aof_size=m.aof_size)
        elif boot.from_aof is not None:
            fa = boot.from_aof
            size = backup.restore_aof(fa.destination, leader_dir, self.s3(fa))
            rec = BootstrapRecord(kind="fromAOF", source=fa.destination, phase="restored", result="ok",
                                  time=now, finished=now, aof_size=size)
        else:
            assert boot.from_leader is not None
            rec = BootstrapRecord(kind="fromLeader", source=boot.from_leader.address, phase="following",
                                  result="following", time=now)
        if rec.kind != "fromLeader":  # followers start from the same verified file: incremental
            for d in dirs:
                if d != leader_dir:
                    d.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(leader_dir / backup.AOF_FILE, d / backup.AOF_FILE)
        self.c.info["bootstrap"] = dump(rec)
        self.c.status = {**self.c.status, "bootstrap": dump(rec)}
        log.info("bootstrap %s from %s: %s", rec.kind, rec.source, rec.result)

    def _apply_upstream(self) -> None:
        up = self.upstream()
        self.c.sup.upstream = up
        if up:
            log.warning("migrating: %s follows the old leader %s until `geocluster detach`",
                        self.c.sup.leader.name, up[0])

    # --- every tick ---------------------------------------------------------------------------

    async def tick(self, raw: dict[str, str]) -> None:
        if "detach" in raw:
            self.c.state.consume("detach", raw["detach"])
            await self._detach(force=raw["detach"] == "force")
        elif self.migrating:
            await self._watch_migration()
        if self.task is not None:
            if not self.task.done():
                return
            self._settle()
        requested = "backup" in raw
        if requested:
            self.override = (raw.get("backup") or "").strip() or None
        spec = self.backup_spec(self.override)
        created = parse_time(self.c.info.get("created")) or self.c.clock.now()
        paused = self.c.manifest.spec.paused or self.migrating or "paused" in raw
        d = backup_policy.decide(spec, self.c.status, self.c.members, self.c.clock.now(), created=created,
                                 manual=requested, paused=paused)
        self.c.status = {**self.c.status, **d.status}
        if d.start or d.events:
            self.c._persist()  # intent first
        if d.consumed:
            self.c.state.consume("backup", raw.get("backup", ""))
        _log_events(d.events)
        if d.start is None or spec is None:
            return
        if d.start.reason == "schedule" and self.override:  # a new chain: the spec's destination
            self.override, spec = None, self.backup_spec(None)
            assert spec is not None
        member = self.c.sup.procs[d.start.source]
        source = self._source(member.name, d.start.source_role, member.address)
        self.task = asyncio.create_task(asyncio.to_thread(
            backup.run, spec, self.c.manifest.name, source, d.start.name, self.c.clock.now(), self.s3(spec)))

    def _settle(self) -> None:
        assert self.task is not None
        task, self.task = self.task, None
        now = self.c.clock.now()
        try:
            out = task.result()
            self.override = None
            patch, event = backup_policy.settle_patch(self.c.status, now=now, size=out.size,
                                                      aof_size=out.aof_size, duration=out.duration,
                                                      location=out.location, backups=out.backups)
        except Exception as exc:  # every failure is a failed attempt, retried by the policy
            patch, event = backup_policy.settle_patch(self.c.status, now=now, error=str(exc))
        self.c.status = {**self.c.status, **patch}
        self.c._persist()
        _log_events((event,))

    async def wait(self) -> None:
        """Let a backup in flight end (``up`` stopping) and record it."""
        if self.task is not None:
            await asyncio.wait([self.task])
            self._settle()

    # --- live migration -----------------------------------------------------------------------

    async def _detach(self, force: bool) -> None:
        """READONLY on the old leader, wait until the new leader has all of its AOF, then
        FOLLOW no one: the new leader takes writes (``migration.detach``, shared with the
        operator). ``force``: even if the old one is gone."""
        up = self.upstream()
        if up is None:
            log.warning("detach: not migrating (no fromLeader bootstrap following)")
            return
        address, password = up
        boot = self.c.manifest.spec.bootstrap
        timeout = boot.from_leader.catch_up_timeout_seconds if boot and boot.from_leader else 30
        leader = self.c.sup.leader
        pw, ca = self.c.manifest.password, self.c.sup.ca_file
        old = migration.Endpoint("old leader", address, password)
        new = migration.Endpoint(leader.name, leader.address, pw, ca_file=ca)
        try:
            done = await migration.detach(old, new, force=force, timeout=timeout)
        except migration.DetachError as exc:  # not detached: the old leader takes writes again
            log.warning("detach failed: %s", exc)
            self._record(message=f"detach failed at {rfc3339(self.c.clock.now())}: {exc}")
            return
        now = rfc3339(self.c.clock.now())
        self._record(result="ok", phase="detached", detached=now, finished=now, aof_size=done.aof_size,
                     write_pause_ms=done.write_pause_ms, message=f"detached from {address}")
        self.c.sup.upstream = None
        host, port = leader.address.split(":")
        for p in self.c.sup.procs.values():  # they waited with `cannot follow a follower`
            if p.role == "follower" and p.running:
                try:
                    await probe.send(p.address, "FOLLOW", host, port, password=pw, ca_file=ca)
                except probe.ProbeError as exc:
                    p.wire = True
                    log.warning("%s: FOLLOW %s failed: %s", p.name, leader.address, exc)
        log.warning("detached: %s is the leader now (old leader %s left read-only)", leader.name, address)

    async def _watch_migration(self) -> None:
        """Phase following / caught-up, bytes and the old leader's size, as on Kubernetes
        (bootstrap_state.leader_outcome; the leader follows it from its --follow)."""
        up, boot = self.upstream(), self.c.manifest.spec.bootstrap
        if up is None or boot is None or boot.from_leader is None:
            return
        leader = self.c.sup.leader
        if not leader.running:
            return
        new = migration.Endpoint(leader.name, leader.address, self.c.manifest.password,
                                 ca_file=self.c.sup.ca_file)
        now, was = await asyncio.gather(new.observe("follower"),
                                        migration.Endpoint("old leader", up[0], up[1]).observe())
        rec = BootstrapRecord.model_validate(self.record)
        out = bootstrap_state.leader_outcome(boot.from_leader, rec, now, was, self.c.clock.now())
        if out.follow or dump(out.record) == dump(rec):
            return  # not following (yet): it was started with --follow; nothing new
        self._record(**{k: getattr(out.record, k) for k in ("phase", "aof_size", "source_aof_size",
                                                            "caught_up", "message", "member")})
        _log_events(out.events)

    def _record(self, **changes: Any) -> None:
        rec = BootstrapRecord.model_validate(self.record).model_copy(update=changes)
        self.c.info["bootstrap"] = dump(rec)
        self.c.status = {**self.c.status, "bootstrap": dump(rec)}
        self.c._persist()


def _log_events(events: Any) -> None:
    for event in events:
        assert isinstance(event, Event)
        log.log(logging.WARNING if event.type == "Warning" else logging.INFO, "%s: %s",
                event.reason, event.message)
