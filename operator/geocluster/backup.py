"""Take a backup from a member and restore one into a data dir, verified both ways.

A backup is a consistent AOF prefix, read over geoserver's own replication protocol on one
connection (so it works against a follower, the leader or a Tile38, with AUTH and TLS)::

    [AUTH pw]  OUTPUT json  SERVER            -> aof_size N, num_objects, version
    AOFMD5 0 N                                -> md5 of the prefix, computed by the member
    AOF 0                                     -> +OK, then the file's bytes: the first N are read

``AOFMD5`` pins the file on that connection: if a shrink or a full resync replaces the AOF
before ``AOF 0``, the member refuses the stream (``aof changed during the handshake``), and a
replacement during the stream closes it, so a backup is always a prefix of one file. The
bytes are hashed while they stream into the store; the backup is complete only when the
count is N, the hash equals the member's ``AOFMD5`` and the stored object's size is what was
sent. Only then is the manifest written.

A restore reads the object back through the same md5, into a temporary file beside the
target, and renames it to ``appendonly.aof`` only when size and md5 match the manifest: a
corrupt or truncated backup is refused with :class:`BackupError` and never served.

Everything here blocks (sockets, boto3); async callers run it with ``asyncio.to_thread``.
"""

from __future__ import annotations

import gzip
import logging
import os
import socket
import ssl
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlparse

import orjson

from .backup_policy import backup_name, expired
from .backupstore import (
    CHUNK,
    BackupError,
    BackupManifest,
    Catalog,
    Counting,
    S3Options,
    check_compression,
    open_store,
)
from .spec import parse_time, rfc3339

log = logging.getLogger(__name__)

AOF_FILE = "appendonly.aof"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"
READ_TIMEOUT = 120.0  # AOFMD5 of a large prefix takes a while on the member


@dataclass(frozen=True)
class Source:
    """A member to read from."""

    name: str
    role: str
    address: str  # host:port
    password: str | None = None
    tls: ssl.SSLContext | None = None
    server_name: str | None = None  # name verified in its certificate (default: the host)


class _Member:
    """One blocking connection to a geoserver (or Tile38) in JSON mode."""

    def __init__(self, source: Source, timeout: float = READ_TIMEOUT):
        host, _, port = source.address.rpartition(":")
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout)
            if source.tls is not None:
                sock = source.tls.wrap_socket(sock, server_hostname=source.server_name or host)
        except (OSError, ValueError) as exc:
            raise BackupError(f"cannot connect to {source.name} ({source.address}): {exc}") from None
        self.sock, self.name = sock, source.name
        self.file = sock.makefile("rb", buffering=CHUNK)

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def send(self, *args: str | bytes) -> None:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            raw = arg if isinstance(arg, bytes) else arg.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        self.sock.sendall(b"".join(parts))

    def line(self) -> bytes:
        line = self.file.readline(1 << 16)
        if not line.endswith(b"\r\n"):
            raise BackupError(f"{self.name}: connection closed")
        return line[:-2]

    def call(self, *args: str | bytes) -> dict[str, Any]:
        """One command; its JSON reply (``ok:false`` raised as BackupError)."""
        self.send(*args)
        head = self.line()
        if head[:1] == b"+":
            return {"ok": True}
        if head[:1] == b"-":
            raise BackupError(f"{self.name}: {args[0]!r}: {head[1:].decode(errors='replace')}")
        if head[:1] != b"$":
            raise BackupError(f"{self.name}: unexpected reply {head[:80]!r}")
        body = self.file.read(int(head[1:]) + 2)[:-2]
        reply = orjson.loads(body)
        if not reply.get("ok"):
            raise BackupError(f"{self.name}: {args[0]!r}: {reply.get('err')}")
        return reply


def take(catalog: Catalog, source: Source, *, compression: str = "gzip", now: datetime | None = None,
         name: str | None = None) -> BackupManifest:
    """Stream ``source``'s AOF prefix into ``catalog`` as a new backup; verify; write the manifest."""
    check_compression(compression)
    started = time.monotonic()
    moment = now or datetime.now(UTC)
    name = name or backup_name(moment)
    member = _Member(source)
    try:
        if source.password:
            member.call("AUTH", source.password)
        member.call("OUTPUT", "json")
        stats = member.call("SERVER").get("stats", {})
        size = int(stats["aof_size"])
        if size > 0:
            md5 = member.call("AOFMD5", "0", str(size))["md5"]
            member.send("AOF", "0")
            ok = member.line()
            if ok != b"+OK":
                raise BackupError(f"{source.name}: AOF 0 refused: {ok.decode(errors='replace')}")
        else:  # an empty AOF: AOFMD5 and AOF have nothing to read
            md5 = EMPTY_MD5
        stream = Counting(member.file, limit=size)
        try:
            obj, stored = catalog.put_data(name, stream, compression)
        except OSError as exc:  # socket timeouts included
            raise BackupError(f"{source.name}: stream cut after {stream.count} of {size} "
                              f"bytes: {exc}") from None
    except KeyError as exc:
        raise BackupError(f"{source.name}: SERVER has no {exc}") from None
    finally:
        member.close()
    if stream.count != size:
        raise BackupError(f"{source.name}: stream ended after {stream.count} of {size} bytes "
                          "(AOF replaced or connection closed); backup incomplete")
    if stream.md5.hexdigest() != md5:
        raise BackupError(f"{source.name}: md5 of the streamed prefix {stream.md5.hexdigest()} != "
                          f"AOFMD5 {md5}; backup incomplete")
    if catalog.stored_size(name, obj) != stored:
        raise BackupError(f"{catalog.location(name)}/{obj}: stored size differs from what was sent")
    manifest = BackupManifest(
        name=name,
        cluster=catalog.cluster,
        time=rfc3339(moment),
        source=source.name,
        source_role=source.role,
        aof_size=size,
        md5=md5,
        objects=stats.get("num_objects"),
        server_version=str(stats.get("version", "")),
        compression=compression,
        object=obj,
        stored_size=stored,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    catalog.put_manifest(manifest)  # last: a backup without it is incomplete
    log.info("backup done", extra={"backup": name, "source": source.name, "aof_size": size,
                                   "stored": stored, "seconds": manifest.duration_seconds})
    return manifest


def restore(catalog: Catalog, name: str, data_dir: Path) -> BackupManifest:
    """Put backup ``name`` (or ``latest``) as ``data_dir/appendonly.aof``, verified first."""
    manifest = catalog.get(name)
    stored = catalog.stored_size(manifest.name, manifest.object)
    where = f"{catalog.location(manifest.name)}/{manifest.object}"
    if stored is None:
        raise BackupError(f"backup {manifest.name} refused: {where} is missing")
    if stored != manifest.stored_size:
        raise BackupError(f"backup {manifest.name} refused: {where} has {stored} bytes, the manifest "
                          f"says {manifest.stored_size} (truncated or replaced)")
    try:
        with catalog.open_aof(manifest) as source:
            count, md5 = _write_verified(source, data_dir, manifest.aof_size)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, _zstd_error()) as exc:
        raise BackupError(f"backup {manifest.name} refused: {where} is corrupt: {exc}") from None
    if count != manifest.aof_size or md5 != manifest.md5:
        (data_dir / f".{AOF_FILE}.restore").unlink(missing_ok=True)
        raise BackupError(f"backup {manifest.name} refused: restored {count} bytes with md5 {md5}, "
                          f"the manifest says {manifest.aof_size} bytes with md5 {manifest.md5}")
    os.replace(data_dir / f".{AOF_FILE}.restore", data_dir / AOF_FILE)
    log.info("backup restored", extra={"backup": manifest.name, "dir": str(data_dir), "aof_size": count})
    return manifest


def _zstd_error() -> type[Exception]:
    try:
        import zstandard

        return zstandard.ZstdError
    except ImportError:
        return BackupError


def _write_verified(source: IO[bytes], data_dir: Path, limit: int | None) -> tuple[int, str]:
    """Copy ``source`` to ``data_dir/.appendonly.aof.restore`` (fsynced), at most ``limit`` + 1
    bytes (one more shows a backup longer than its manifest). Returns (bytes, md5)."""
    _check_empty(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{AOF_FILE}.restore"
    counter = Counting(source, None if limit is None else limit + 1)
    try:
        with open(tmp, "wb") as out:
            while chunk := counter.read(CHUNK):
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return counter.count, counter.md5.hexdigest()


def _check_empty(data_dir: Path) -> None:
    aof = data_dir / AOF_FILE
    if aof.exists() and aof.stat().st_size > 0:
        raise BackupError(f"{aof} exists and is not empty: a bootstrap only fills an empty data dir")


def restore_aof(url: str, data_dir: Path, s3: S3Options | None = None) -> int:
    """Copy an existing AOF (a path, ``file:///path`` or ``s3://bucket/key``) into ``data_dir``.
    There is no manifest to check it against: geoserver's loader refuses a corrupt file at start."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme else url)
        try:
            source: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise BackupError(f"fromAOF {url}: {exc.strerror}") from None
    elif parsed.scheme == "s3":
        bucket_url, _, key = url.rpartition("/")
        source = open_store(bucket_url, s3).open(key)
    else:
        raise BackupError(f"fromAOF {url}: use a path, file:///path or s3://bucket/key")
    with source:
        count, _ = _write_verified(source, data_dir, None)
    os.replace(data_dir / f".{AOF_FILE}.restore", data_dir / AOF_FILE)
    return count


def verify(catalog: Catalog, name: str) -> BackupManifest:
    """Read a backup through (without keeping it) and check its size and md5."""
    manifest = catalog.get(name)
    try:
        with catalog.open_aof(manifest) as source:
            counter = Counting(source, manifest.aof_size + 1)
            while counter.read(CHUNK):
                pass
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, _zstd_error()) as exc:
        raise BackupError(f"backup {manifest.name} is corrupt: {exc}") from None
    if counter.count != manifest.aof_size or counter.md5.hexdigest() != manifest.md5:
        raise BackupError(f"backup {manifest.name} is corrupt: {counter.count} bytes with md5 "
                          f"{counter.md5.hexdigest()}, the manifest says {manifest.aof_size} / "
                          f"{manifest.md5}")
    return manifest


def s3_options(store: Any, secret: Any = None) -> S3Options:
    """S3Options from an ObjectStoreSpec; ``secret(name, key) -> str`` reads s3Credentials
    (the local runtime: a Secret in the manifest file; Kubernetes: the API)."""
    creds = getattr(store, "s3_credentials", None)
    keys: dict[str, str | None] = {"access_key_id": None, "secret_access_key": None, "session_token": None}
    if creds is not None:
        if secret is None:
            raise BackupError("s3Credentials given but no way to read Secrets here")
        keys["access_key_id"] = secret(creds.secret_name, creds.access_key_id_key)
        keys["secret_access_key"] = secret(creds.secret_name, creds.secret_access_key_key)
        if creds.session_token_key:
            keys["session_token"] = secret(creds.secret_name, creds.session_token_key)
    return S3Options(endpoint_url=store.endpoint_url, region=store.region, **keys)


@dataclass(frozen=True)
class Outcome:
    """What :func:`run` did: the settle() arguments of backup_policy."""

    size: int
    aof_size: int
    duration: float
    location: str
    backups: int
    deleted: tuple[str, ...] = ()


def run(spec: Any, cluster: str, source: Source, name: str, now: datetime, s3: S3Options) -> Outcome:
    """Take backup ``name`` per ``spec`` (a BackupSpec), then apply its retention. A retention
    failure is logged, never fails the backup that was just taken."""
    catalog = Catalog(open_store(spec.destination, s3), cluster)
    manifest = take(catalog, source, compression=spec.compression, now=now, name=name)
    deleted: list[str] = []
    complete: list[BackupManifest] = []
    try:
        complete = catalog.list()
        known = {m.name for m in complete}
        dated = [(m.name, parse_time(m.time) or now) for m in complete]
        incomplete = [n for n in catalog.names() if n not in known]
        deleted = expired(dated, incomplete, spec.retention, now, in_flight=name,
                          incomplete_after=timedelta(seconds=spec.timeout_seconds))
        catalog.delete(deleted)
    except Exception as exc:  # the backup itself is done and verified
        log.warning("backup retention failed", extra={"backup": name, "error": str(exc)})
    remaining = len([m for m in complete if m.name not in deleted]) or 1
    return Outcome(manifest.stored_size, manifest.aof_size, manifest.duration_seconds,
                   catalog.location(name), remaining, tuple(deleted))
