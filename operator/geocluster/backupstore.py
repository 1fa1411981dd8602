"""Where backups live: a destination URL (``file:///path`` or ``s3://bucket/prefix``), the
objects of each backup in it, and their manifests.

Layout (as CloudNativePG's ``destinationPath``/``serverName``)::

    <destination>/<cluster>/<backup name>/appendonly.aof[.gz|.zst]   the AOF prefix
    <destination>/<cluster>/<backup name>/backup.json                its manifest, written last

A backup without ``backup.json`` is incomplete (interrupted upload): never listed, never
restored, removed by retention like any other. Backup names are UTC times
(``20301231T030000Z``), so they sort by age and ``latest`` is the last complete one.

Everything streams: ``put`` reads its source in chunks (boto3 ``upload_fileobj`` makes a
multipart upload of ``PART_SIZE`` parts, at most ``PART_CONCURRENCY`` in memory), ``open``
returns a readable stream. No backup is ever held whole in memory.

S3 goes through boto3, the reference S3 client (botocore's signing, retries and endpoint
rules are what every S3-compatible store tests against), with path-style addressing when an
``endpointURL`` is given (MinIO, Ceph RGW: buckets as path segments, no wildcard DNS needed).
Credentials are given explicitly or come from boto3's default chain (env, IRSA, instance role).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

MANIFEST = "backup.json"
AOF_OBJECT = "appendonly.aof"
CHUNK = 1 << 20
PART_SIZE = 16 << 20  # multipart part size: an upload of N bytes holds ~PART_CONCURRENCY parts
PART_CONCURRENCY = 2
COMPRESSIONS = ("none", "gzip", "zstd")
SUFFIX = {"none": "", "gzip": ".gz", "zstd": ".zst"}


class BackupError(Exception):
    """A backup or restore that cannot proceed (bad destination, missing, corrupt, truncated)."""


@dataclass(frozen=True)
class S3Options:
    """How to reach an S3-compatible store (all optional: boto3 defaults otherwise)."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None


@dataclass
class BackupManifest:
    """What ``backup.json`` records of one backup (camelCase in the file)."""

    name: str
    cluster: str
    time: str  # when the AOF size was read (RFC 3339)
    source: str  # member the prefix came from
    source_role: str
    aof_size: int  # bytes of the AOF prefix (uncompressed)
    md5: str  # AOFMD5 0 aof_size on the source
    objects: int | None  # num_objects on the source when aof_size was read
    server_version: str
    compression: str
    object: str  # the data object's name inside the backup
    stored_size: int  # bytes of that object (compressed)
    duration_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        raw = asdict(self)
        return (json.dumps({_camel(k): v for k, v in raw.items()}, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> BackupManifest:
        try:
            raw = json.loads(data)
            return cls(**{_snake(k): v for k, v in raw.items()})
        except (ValueError, TypeError) as exc:
            raise BackupError(f"unreadable backup manifest: {exc}") from None


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class Store(Protocol):
    """Objects under one destination; names are ``/``-separated relative keys."""

    url: str

    def put(self, key: str, source: IO[bytes]) -> int: ...
    def open(self, key: str) -> IO[bytes]: ...
    def size(self, key: str) -> int | None: ...
    def keys(self, prefix: str) -> Iterator[str]: ...
    def delete(self, keys: list[str]) -> None: ...


class FileStore:
    """A directory (a mounted volume, a local disk). Objects are written to a temporary name,
    fsynced and renamed, so a reader never sees half an object under its real name."""

    def __init__(self, root: Path, url: str):
        self.root, self.url = root, url

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents and path != self.root.resolve():
            raise BackupError(f"object key {key!r} escapes {self.root}")
        return path

    def put(self, key: str, source: IO[bytes]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path.stat().st_size

    def open(self, key: str) -> IO[bytes]:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise BackupError(f"{self.url}/{key}: no such object") from None

    def size(self, key: str) -> int | None:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return None

    def keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            if path.is_file() and not path.name.endswith(".part"):
                yield path.relative_to(self.root).as_posix()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            for parent in path.parents:  # drop emptied backup folders
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break


class S3Store:
    """A bucket and key prefix of an S3-compatible store, through boto3."""

    def __init__(self, bucket: str, prefix: str, url: str, options: S3Options):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket, self.prefix, self.url = bucket, prefix.strip("/"), url
        config = Config(
            s3={"addressing_style": "path" if options.endpoint_url else "auto"},
            retries={"max_attempts": 5, "mode": "standard"},
        )
        self.client = boto3.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region,
            aws_access_key_id=options.access_key_id,
            aws_secret_access_key=options.secret_access_key,
            aws_session_token=options.session_token,
            config=config,
        )
        self.transfer = TransferConfig(multipart_chunksize=PART_SIZE, multipart_threshold=PART_SIZE,
                                       max_concurrency=PART_CONCURRENCY, use_threads=True)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, source: IO[bytes]) -> int:
        self.client.upload_fileobj(source, self.bucket, self._key(key), Config=self.transfer)
        size = self.size(key)
        if size is None:
            raise BackupError(f"{self.url}/{key}: uploaded but not found")
        return size

    def open(self, key: str) -> IO[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as exc:
            raise BackupError(f"{self.url}/{key}: {_s3_error(exc)}") from None
        except BotoCoreError as exc:  # no credentials, endpoint unreachable ...
            raise BackupError(f"{self.url}/{key}: {exc}") from None

    def size(self, key: str) -> int | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise BackupError(f"{self.url}/{key}: {_s3_error(exc)}") from None
        except BotoCoreError as exc:
            raise BackupError(f"{self.url}/{key}: {exc}") from None

    def keys(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix)
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full)
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except ClientError as exc:
            raise BackupError(f"{self.url}: {_s3_error(exc)}") from None
        except BotoCoreError as exc:
            raise BackupError(f"{self.url}: {exc}") from None

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self._key(k)} for k in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})


def _s3_error(exc: Any) -> str:
    err = exc.response.get("Error", {})
    return f"{err.get('Code', '?')}: {err.get('Message', exc)}"


def open_store(url: str, s3: S3Options | None = None) -> Store:
    """The store a destination URL names; :class:`BackupError` for anything else."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise BackupError(f"{url}: file URLs name a local path (file:///path)")
        path = Path(unquote(parsed.path))
        if not path.is_absolute() or not parsed.path:
            raise BackupError(f"{url}: file URLs need an absolute path (file:///path)")
        return FileStore(path, url.rstrip("/"))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise BackupError(f"{url}: s3 URLs name a bucket (s3://bucket/prefix)")
        return S3Store(parsed.netloc, parsed.path, url.rstrip("/"), s3 or S3Options())
    raise BackupError(f"{url}: unsupported destination (use file:///path or s3://bucket/prefix)")


# --- compression, as pull-based streams ------------------------------------------------------


def check_compression(name: str) -> None:
    if name not in COMPRESSIONS:
        raise BackupError(f"unknown compression {name!r} (one of {', '.join(COMPRESSIONS)})")
    if name == "zstd":
        try:
            import zstandard  # noqa: F401
        except ImportError:
            raise BackupError("compression zstd needs the zstandard package (pip install "
                              "zstandard); use gzip or none") from None


class _GzipReader(io.RawIOBase):
    """Reads ``source`` and yields its gzip encoding, one chunk at a time."""

    def __init__(self, source: IO[bytes], level: int = 6):
        self.source = source
        self.encoder = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip framing
        self.pending = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self.pending and not self.done:
            chunk = self.source.read(CHUNK)
            if chunk:
                self.pending = self.encoder.compress(chunk)
            else:
                self.pending, self.done = self.encoder.flush(), True
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        return n


def compressing(source: IO[bytes], compression: str) -> IO[bytes]:
    """A readable stream of ``source`` compressed."""
    if compression == "gzip":
        return io.BufferedReader(_GzipReader(source), CHUNK)
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().stream_reader(source, read_size=CHUNK)  # type: ignore[return-value]
    return source


def decompressing(source: IO[bytes], compression: str) -> IO[bytes]:
    """A readable stream of ``source`` decompressed."""
    check_compression(compression)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(source, read_size=CHUNK)  # type: ignore[return-value]
    return source


class Counting(io.RawIOBase):
    """Passes ``source`` through, counting bytes and hashing them (md5), stopping at ``limit``."""

    def __init__(self, source: IO[bytes], limit: int | None = None):
        self.source, self.limit = source, limit
        self.count = 0
        self.md5 = hashlib.md5(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer) if self.limit is None else min(len(buffer), self.limit - self.count)
        if want <= 0:
            return 0
        data = self.source.read(want)
        n = len(data)
        buffer[:n] = data
        self.count += n
        self.md5.update(data)
        return n


# --- backups in a destination -----------------------------------------------------------------


class Catalog:
    """The backups of one cluster in one destination."""

    def __init__(self, store: Store, cluster: str):
        self.store, self.cluster = store, cluster

    def key(self, name: str, obj: str) -> str:
        return f"{self.cluster}/{name}/{obj}"

    def location(self, name: str) -> str:
        return f"{self.store.url}/{self.cluster}/{name}"

    def list(self) -> list[BackupManifest]:
        """Complete backups (those with a manifest), oldest first."""
        out = []
        for key in self.store.keys(f"{self.cluster}/"):
            parts = key.split("/")
            if len(parts) == 3 and parts[2] == MANIFEST:
                with self.store.open(key) as f:
                    out.append(BackupManifest.from_json(f.read()))
        return sorted(out, key=lambda m: m.name)

    def names(self) -> list[str]:
        """Every backup folder, complete or not, oldest first."""
        return sorted({k.split("/")[1] for k in self.store.keys(f"{self.cluster}/") if k.count("/") == 2})

    def get(self, name: str) -> BackupManifest:
        """The manifest of backup ``name`` (``latest``: the newest complete one)."""
        if name == "latest":
            found = self.list()
            if not found:
                raise BackupError(f"no complete backup of {self.cluster!r} in {self.store.url}")
            return found[-1]
        try:
            with self.store.open(self.key(name, MANIFEST)) as f:
                return BackupManifest.from_json(f.read())
        except BackupError:
            why = f"no complete backup {name!r} of {self.cluster!r} in {self.store.url}"
            raise BackupError(why) from None

    def put_data(self, name: str, source: IO[bytes], compression: str) -> tuple[str, int]:
        obj = AOF_OBJECT + SUFFIX[compression]
        return obj, self.store.put(self.key(name, obj), compressing(source, compression))

    def put_manifest(self, manifest: BackupManifest) -> None:
        self.store.put(self.key(manifest.name, MANIFEST), io.BytesIO(manifest.to_json()))

    def stored_size(self, name: str, obj: str) -> int | None:
        return self.store.size(self.key(name, obj))

    def open_aof(self, manifest: BackupManifest) -> IO[bytes]:
        """The backup's AOF bytes, decompressed, as a stream."""
        return decompressing(self.store.open(self.key(manifest.name, manifest.object)), manifest.compression)

    def delete(self, names: list[str]) -> None:
        """Remove whole backups: the manifest first, so a half-deleted one is never restorable."""
        for name in names:
            keys = list(self.store.keys(f"{self.cluster}/{name}/"))
            self.store.delete([k for k in keys if k.endswith(MANIFEST)])
            self.store.delete([k for k in keys if not k.endswith(MANIFEST)])
            log.info("backup deleted", extra={"backup": name, "location": self.location(name)})
