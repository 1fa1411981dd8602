"""The local runtime's manifest and state directory (no processes, no policy here).

A state dir holds everything one local GeoCluster owns, so ``geocluster up`` resumes with its
data and ``status``/``shrink``/``resync``/``down`` find a running ``up`` from another terminal:

    cluster.json        name, created, generation, the supervisor's pid, members (name, role,
                        port, pid, restarts, memory) -- rewritten by ``up`` every tick
    status.json         the GeoCluster ``.status`` (same shape as the operator's)
    triggers/<kind>     manual requests (``shrink``; ``resync`` holding a member name), consumed
                        by the control loop like the operator's annotations
    members/<name>/     each member's geoserver --dir (AOF, config)
    logs/<name>.log     each member's output; logs/geocluster.log is the control loop's
    tls/                with ``up --tls``: the cluster's CA and member certificates (localtls.py)

Files are replaced atomically (write to a temp file, then rename). A pid is trusted only
together with its process start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from .spec import API_VERSION, KIND, GeoClusterSpec, SpecError, check_name, parse_spec

EXAMPLE = """\
# The built-in example of `geocluster up`: a leader, two followers, an AOF shrink every
# 5 minutes (followers resynced after each), and quick divergence healing.
apiVersion: geo.geocluster.io/v1alpha1
kind: GeoCluster
metadata:
  name: local
spec:
  followers: 2
  aofShrink:
    schedule: "*/5 * * * *"
  followerResync:
    afterShrink: true
  divergence:
    probeIntervalSeconds: 2
    gracePeriodSeconds: 10
    toleranceBytes: 4096
    maxRepairsPerHour: 6
"""
BUILT_IN = "built-in example"
PASSWORD_ENV = "GEOCLUSTER_PASSWORD"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_TOP_LEVEL = {"apiVersion", "kind", "metadata", "spec", "status"}


@dataclass(frozen=True)
class Manifest:
    """A validated GeoCluster manifest, as the local runtime needs it."""

    name: str
    spec: GeoClusterSpec
    password: str | None
    source: str
    path: str | None = None  # the manifest file, absolute (None: the built-in example)


def load_manifest(path: Path | None) -> Manifest:
    """Read and validate a manifest (the built-in example when ``path`` is None).

    Raises :class:`SpecError` with a message naming the bad field.
    """
    source = str(path) if path else BUILT_IN
    try:
        text = path.read_text() if path else EXAMPLE
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError(f"{source}: {exc}") from None
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == KIND]
    if len(found) != 1:
        raise SpecError(f"{source}: expected one document of kind {KIND}, found {len(found)}")
    doc = found[0]
    errors = [f"{key}: unknown field" for key in doc if key not in _TOP_LEVEL]
    if doc.get("apiVersion") != API_VERSION:
        errors.append(f"apiVersion: must be {API_VERSION}, got {doc.get('apiVersion')!r}")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    name = meta.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        errors.append(f"metadata.name: must be a DNS label (a-z, 0-9, '-'), got {name!r}")
    else:
        try:  # the operator's rule too: the same name runs here and in Kubernetes, or neither
            check_name(name)
        except SpecError as exc:
            errors.append(str(exc))
    if doc.get("spec") is not None and not isinstance(doc.get("spec"), dict):
        errors.append(f"spec: must be an object, got {type(doc.get('spec')).__name__}")
    try:
        spec = parse_spec(doc.get("spec") if isinstance(doc.get("spec"), dict) else None)
    except SpecError as exc:
        errors.append(str(exc))
    if errors:
        raise SpecError(f"{source}: " + "; ".join(errors))
    return Manifest(name, spec, _password(spec, docs, source), source, str(path.resolve()) if path else None)


def _password(spec: GeoClusterSpec, docs: list[Any], source: str) -> str | None:
    """The authSecretRef's password: a Secret in the same file, else $GEOCLUSTER_PASSWORD."""
    ref = spec.server.auth_secret_ref
    if ref is None:
        return None
    secrets = [d for d in docs if isinstance(d, dict) and d.get("kind") == "Secret"]
    for d in secrets:
        if (d.get("metadata") or {}).get("name") == ref.name:
            if ref.key in (d.get("stringData") or {}):
                return str(d["stringData"][ref.key])
            if ref.key in (d.get("data") or {}):
                try:
                    return base64.b64decode(d["data"][ref.key], validate=True).decode()
                except (ValueError, UnicodeDecodeError) as exc:  # binascii.Error is a ValueError
                    why = f"Secret {ref.name!r} data.{ref.key}: not base64: {exc}"
                    raise SpecError(f"{source}: {why}") from None
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    raise SpecError(
        f"{source}: spec.server.authSecretRef: no Secret {ref.name!r} with key {ref.key!r} in the "
        f"file, and ${PASSWORD_ENV} is not set"
    )


# --- processes -------------------------------------------------------------------------------


def proc_id(pid: int) -> dict[str, Any]:
    """What identifies a running process beyond its pid (its start time)."""
    return {"pid": pid, "started": psutil.Process(pid).create_time()}


def process_of(ident: dict[str, Any] | None) -> psutil.Process | None:
    """The process recorded as ``{"pid", "started"}`` if it still runs (not a recycled pid).
    Signal it through this object: psutil re-checks its identity before each signal."""
    if not ident or not ident.get("pid"):
        return None
    try:
        p = psutil.Process(ident["pid"])
        same = abs(p.create_time() - ident.get("started", 0)) < 1
        return p if same and p.status() != psutil.STATUS_ZOMBIE else None
    except psutil.Error:
        return None


def alive(ident: dict[str, Any] | None) -> bool:
    """Whether the process recorded as ``{"pid", "started"}`` still runs."""
    return process_of(ident) is not None


# --- the state directory ---------------------------------------------------------------------


def state_root() -> Path:
    """Where local clusters live by default: $XDG_STATE_HOME/geocluster or ~/.local/state/..."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "geocluster"


class StateDir:
    """Paths and atomic reads/writes of one local cluster's state."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock: Any = None

    def lock(self) -> bool:
        """Take the state dir for this process (`up`); False if another process holds it. The
        kernel drops the lock when the holder dies, even by kill -9, so no stale lock remains."""
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / "lock", "a")  # noqa: SIM115 - held for the life of `up`
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock = handle
        return True

    @property
    def cluster_file(self) -> Path:
        return self.path / "cluster.json"

    @property
    def status_file(self) -> Path:
        return self.path / "status.json"

    def member_dir(self, name: str) -> Path:
        return self.path / "members" / name

    def log_file(self, name: str) -> Path:
        return self.path / "logs" / f"{name}.log"

    def read_cluster(self) -> dict[str, Any] | None:
        return _read_json(self.cluster_file)

    def write_cluster(self, data: dict[str, Any]) -> None:
        _write_json(self.cluster_file, data)

    def read_status(self) -> dict[str, Any] | None:
        return _read_json(self.status_file)

    def write_status(self, status: dict[str, Any]) -> None:
        def clean(v: Any) -> Any:  # the nulls of a merge-patch mean "absent" here
            return {k: x for k, x in v.items() if x is not None} if isinstance(v, dict) else v

        _write_json(self.status_file, {k: clean(v) for k, v in status.items() if v is not None})

    def supervisor(self) -> int | None:
        """Pid of the ``geocluster up`` running this cluster, or None."""
        ident = (self.read_cluster() or {}).get("supervisor")
        return ident["pid"] if alive(ident) else None

    # manual triggers: one file per kind, consumed by the loop only if unchanged since read
    def request(self, kind: str, value: str = "") -> None:
        _write_text(self.path / "triggers" / kind, value)

    def clear_triggers(self) -> None:
        """Requests left by an earlier run (their CLI gave up waiting): not acted on later."""
        for path in (self.path / "triggers").glob("*"):
            path.unlink(missing_ok=True)

    def triggers(self) -> dict[str, str]:
        folder = self.path / "triggers"
        return {p.name: p.read_text() for p in folder.glob("*") if p.is_file() and "." not in p.name}

    def consume(self, kind: str, value: str) -> None:
        path = self.path / "triggers" / kind
        try:
            if path.read_text() == value:
                path.unlink()
        except OSError:
            pass


def find_state_dir(state_dir: Path | None, name: str | None) -> StateDir:
    """The state dir the user means: explicit, by name, or the only (running) one."""
    if state_dir:
        return StateDir(state_dir)
    root = state_root()
    if name:
        return StateDir(root / name)
    known = [StateDir(p) for p in sorted(root.glob("*")) if (p / "cluster.json").exists()]
    running = [s for s in known if s.supervisor()]
    for pick in (running, known):
        if len(pick) == 1:
            return pick[0]
    if not known:
        raise FileNotFoundError(f"no local GeoCluster under {root}; start one with `geocluster up`")
    names = ", ".join(s.path.name for s in known)
    raise FileNotFoundError(f"several local GeoClusters ({names}); pick one with --name or --state-dir")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
