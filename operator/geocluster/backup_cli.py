"""``geocluster backup | backups | detach | restore``: backups and live migration from the CLI.

``backup`` and ``detach`` are requests to a running ``up`` (trigger files, like ``shrink``): the
control loop takes them, so a backup never overlaps another or a shrink. ``backups`` lists a
destination directly, and ``restore`` fills an empty data dir from a verified backup (an init
container on Kubernetes runs it: the image has the ``geocluster`` entry point).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from . import backup
from . import local_cli as lc
from .backupstore import BackupError, Catalog, open_store
from .localbackup import manifest_secret
from .localstate import StateDir, load_manifest
from .spec import ObjectStoreSpec, SpecError


def _manifest(state: StateDir) -> Any:
    source = (state.read_cluster() or {}).get("source")
    try:
        return load_manifest(Path(source) if source and Path(source).is_file() else None)
    except SpecError as exc:
        raise click.ClickException(f"invalid manifest: {exc}") from None


def _s3(manifest: Any, store: ObjectStoreSpec | None) -> backup.S3Options:
    if store is None:
        return backup.S3Options()
    return backup.s3_options(store, lambda n, k: manifest_secret(manifest.source, n, k))


def _s3_flags(endpoint_url: str | None, region: str | None) -> backup.S3Options:
    """Without a manifest: endpoint and region from flags, credentials from boto3's chain."""
    return backup.S3Options(endpoint_url=endpoint_url, region=region)


_endpoint_opt = click.option("--endpoint-url",
                             help="S3 endpoint (MinIO, Ceph, ...), when not from the manifest.")
_region_opt = click.option("--region", help="S3 region, when not from the manifest.")


@click.command("backup")
@click.option("--to", "to", help="Destination URL (file:///path, s3://bucket/prefix); default: "
              "the manifest's spec.backup.destination.")
@lc._state_opt
@lc._name_opt
@lc._wait_opt
def backup_command(to: str | None, state_dir: Path | None, name: str | None, timeout: float) -> None:
    """Back up the running cluster now (from a caught-up follower, else the leader)."""
    state = lc._find(state_dir, name)
    manifest = _manifest(state)
    if not to and manifest.spec.backup is None:
        raise click.ClickException("no destination: pass --to URL or set spec.backup.destination")
    if to:
        try:
            open_store(to)  # a bad URL is refused here, not in the loop
        except BackupError as exc:
            raise click.ClickException(str(exc)) from None
    made = lc._trigger(state, "backup", to or "", timeout)
    deadline = time.monotonic() + max(timeout, 60.0)
    while True:  # taken; the backup itself streams in the background
        rec = (state.read_status() or {}).get("lastBackup") or {}
        if rec.get("time", "") >= made and rec.get("result") != "started":
            break
        if time.monotonic() > deadline or not state.supervisor():
            raise click.ClickException("backup not finished in time (see `geocluster status` and the log)")
        time.sleep(0.1)
    if rec.get("result") != "ok":
        raise click.ClickException(f"backup {rec.get('name')} failed: {rec.get('result')}")
    click.echo(f"backup {rec['name']}: ok, {rec.get('aofSize')} AOF bytes from {rec.get('source')}, "
               f"{rec.get('size')} stored, {rec.get('durationSeconds')} s -> {rec.get('location')}")


@click.command("backups")
@click.option("--from", "from_", help="Destination URL; default: the manifest's spec.backup.destination.")
@click.option("--cluster", help="Cluster name the backups are kept under (default: the cluster's name).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_endpoint_opt
@_region_opt
@lc._state_opt
@lc._name_opt
def backups_command(from_: str | None, cluster: str | None, output: str, endpoint_url: str | None,
                    region: str | None, state_dir: Path | None, name: str | None) -> None:
    """List the complete backups in a destination, oldest first."""
    if from_ and cluster:
        s3 = _s3_flags(endpoint_url, region)
    else:
        state = lc._find(state_dir, name)
        manifest = _manifest(state)
        spec = manifest.spec.backup
        if not from_ and spec is None:
            raise click.ClickException("no destination: pass --from URL or set spec.backup.destination")
        from_ = from_ or spec.destination  # type: ignore[union-attr]
        cluster = cluster or manifest.name
        s3 = _s3(manifest, spec) if spec else _s3_flags(endpoint_url, region)
    try:
        found = Catalog(open_store(from_, s3), cluster).list()
    except BackupError as exc:
        raise click.ClickException(str(exc)) from None
    if output == "json":
        import json

        click.echo(json.dumps([json.loads(m.to_json()) for m in found], indent=2))
        return
    click.echo(f"{'NAME':18} {'TIME':21} {'SOURCE':12} {'AOF BYTES':>12} {'STORED':>12} "
               f"{'OBJECTS':>9} COMPRESSION")
    for m in found:
        click.echo(f"{m.name:18} {m.time:21} {m.source:12} {m.aof_size:>12} {m.stored_size:>12} "
                   f"{m.objects if m.objects is not None else '?':>9} {m.compression}")
    click.echo(f"{len(found)} backups of {cluster} in {from_}", err=True)


@click.command("detach")
@click.option("--force", is_flag=True, help="Detach even if the old leader cannot be made read-only "
              "or does not answer (writes it acknowledged after the last byte copied are lost).")
@lc._state_opt
@lc._name_opt
@lc._wait_opt
def detach_command(force: bool, state_dir: Path | None, name: str | None, timeout: float) -> None:
    """End a live migration (bootstrap.fromLeader): fence the old leader, let the new one catch
    up, then make it a writable leader."""
    state = lc._find(state_dir, name)
    boot = (state.read_cluster() or {}).get("bootstrap") or {}
    if boot.get("kind") != "fromLeader" or boot.get("result") != "following":
        raise click.ClickException("not migrating: detach ends a bootstrap.fromLeader that is following")
    before = ((state.read_status() or {}).get("bootstrap") or {}).get("message", "")
    lc._trigger(state, "detach", "force" if force else "", timeout)
    deadline = time.monotonic() + timeout + 30
    while True:
        rec = (state.read_status() or {}).get("bootstrap") or {}
        message = rec.get("message", "")
        if rec.get("result") == "ok" or (message != before and message.startswith("detach failed")):
            break
        if time.monotonic() > deadline:
            raise click.ClickException("detach not finished in time (see the log)")
        time.sleep(0.1)
    if rec.get("result") != "ok":
        raise click.ClickException(rec.get("message", "detach failed"))
    click.echo(f"detached at {rec.get('detached')}: the leader takes writes ({rec.get('aofSize')} AOF "
               f"bytes from {rec.get('source')}); the old leader is read-only")


@click.command("restore")
@click.option("--from", "from_", help="Destination URL the backup is in.")
@click.option("--cluster", help="Cluster name the backups are kept under.")
@click.option("--backup", "name", default="latest", show_default=True, help="Backup name, or latest.")
@click.option("--aof", "aof_url", help="Copy an existing Tile38/geoserver AOF (a path, file:///path or "
              "s3://bucket/key) instead of a backup (bootstrap.fromAOF: no manifest to verify against).")
@click.option("--to", "to", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Empty data dir to restore appendonly.aof into.")
@click.option("--if-empty", is_flag=True, help="Do nothing (exit 0) when the data dir has an AOF "
              "already: an init container that runs again after a pod restart keeps the data.")
@click.option("--report", "report", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the result as one JSON object to this file (the init container: "
              "/dev/termination-log, which the operator reads from the pod status).")
@_endpoint_opt
@_region_opt
def restore_command(from_: str | None, cluster: str | None, name: str, aof_url: str | None, to: Path,
                    if_empty: bool, report: Path | None, endpoint_url: str | None,
                    region: str | None) -> None:
    """Restore a backup into an empty data dir, verified (size, md5) before it is placed."""
    if bool(aof_url) == bool(from_ and cluster):
        raise click.UsageError("give --from and --cluster (a backup), or --aof (an existing AOF)")
    started = time.monotonic()

    def done(result: str, message: str, **facts: Any) -> None:
        if report is not None:
            out = {"result": result, "message": message, **facts,
                   "seconds": round(time.monotonic() - started, 3)}
            report.write_text(json.dumps(out)[:4000])  # the kubelet keeps at most 4096 bytes

    aof = to / backup.AOF_FILE
    if if_empty and aof.exists() and aof.stat().st_size > 0:
        click.echo(f"{aof} exists: not restored (--if-empty)")
        done("skipped", f"{aof} exists: not restored (--if-empty)", aofSize=aof.stat().st_size)
        return
    try:
        if aof_url:
            count = backup.restore_aof(aof_url, to, _s3_flags(endpoint_url, region))
            message = f"copied {aof_url} ({count} bytes) into {aof}"
            click.echo(message)
            done("restored", message, aofSize=count, source=aof_url)
            return
        assert from_ is not None and cluster is not None
        catalog = Catalog(open_store(from_, _s3_flags(endpoint_url, region)), cluster)
        m = backup.restore(catalog, name, to)
    except BackupError as exc:
        done("error", str(exc))
        raise click.ClickException(str(exc)) from None
    message = f"restored {m.name} ({m.aof_size} bytes, md5 {m.md5}) into {to / backup.AOF_FILE}"
    click.echo(message)
    done("restored", message, aofSize=m.aof_size, md5=m.md5, backup=m.name, source=catalog.location(m.name))


commands = [backup_command, backups_command, detach_command, restore_command]
