"""AOF writer: records are buffered by `append` and reach the OS in `flush`, which the server
calls before it sends the replies of a batch, so an acknowledged write is in the file.
`flushed` counts the bytes a reply may depend on: with `appendfsync always` only bytes whose
fsync succeeded (a failed write or fsync is undone and retried whole, never acknowledged).
Listeners (live replication streams) get each chunk, in order, once it counts in `flushed`.

Temporary files next to the AOF (`-shrink`, `-resync`) belong to one process's run; a crash
can leave them behind, and opening the log removes them (`remove_stale_files`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

FSYNC_POLICIES = ("always", "everysec", "no")
TEMP_SUFFIXES = ("-shrink", "-resync")  # AOFSHRINK's and a full resync's files


class AofLog:
    def __init__(self, path: Path, fsync: str = "everysec") -> None:
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"appendfsync must be one of {', '.join(FSYNC_POLICIES)}")
        self.path = path
        self.fsync = fsync
        remove_stale_files(path)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.flushed = os.fstat(self._fd).st_size  # bytes in the file
        self._buffer = bytearray()
        self._unsynced = False
        self._torn = False  # the file may hold bytes past `flushed` (an undone failed flush)
        self.listeners: list[Callable[[bytes], None]] = []
        self.capture: list[bytes] | None = None  # records copied aside while a shrink runs
        # Bumped whenever the file is replaced (shrink, full resync): a follower's handshake
        # (SERVER/AOFMD5 ... AOF pos) is only valid against one generation of the file.
        self.generation = 0

    @property
    def size(self) -> int:
        """Logical size: what is in the file plus what is buffered for the next flush."""
        return self.flushed + len(self._buffer)

    def append(self, record: bytes) -> None:
        self._buffer += record
        if self.capture is not None:
            self.capture.append(record)

    def flush(self) -> None:
        """Write the buffer to the OS (and the disk with `always`), then feed listeners.

        After an OSError (disk full, I/O error) the error propagates; `flushed` counts exactly
        the bytes that may be acknowledged and listeners have received exactly those:
        - `everysec` / `no`: bytes leave the buffer once written (they are in the OS);
        - `always`: all or nothing. Bytes count only after their fsync succeeded; on a failed
          write or fsync the file is cut back to `flushed` (before the next attempt when the
          cut itself fails) and the whole buffer is kept, so the retry writes and fsyncs it
          again and no reply depending on it goes out before that."""
        if self._torn:
            os.ftruncate(self._fd, self.flushed)  # O_APPEND: the retry must start at `flushed`
            self._torn = False
        if not self._buffer:
            return
        data = bytes(self._buffer)
        if self.fsync == "always":
            self._flush_synced(data)
            return
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
        finally:
            if written:
                self._unsynced = True
                self._flushed_bytes(data[:written])

    def _flush_synced(self, data: bytes) -> None:
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError:  # the caller (Server.flush_aof) logs it and refuses writes
            if written:
                self._torn = True
                try:
                    os.ftruncate(self._fd, self.flushed)
                    self._torn = False
                except OSError:
                    pass  # cut again before the next write
            raise
        self._flushed_bytes(data)

    def _flushed_bytes(self, data: bytes) -> None:
        del self._buffer[:len(data)]
        self.flushed += len(data)
        for listener in list(self.listeners):
            listener(data)

    async def sync(self) -> None:
        """The once-a-second fsync of `everysec`, in a worker thread on a duplicate of the fd
        (the loop may replace the file meanwhile)."""
        if not self._unsynced:
            return
        self._unsynced = False
        fd = os.dup(self._fd)
        try:
            await asyncio.to_thread(os.fsync, fd)
        finally:
            os.close(fd)

    def read(self, pos: int, size: int) -> bytes:
        return os.pread(self._fd, size, pos)

    async def md5(self, pos: int, size: int) -> str:
        """md5 of bytes [pos, pos+size) of the file. Hashing a large prefix takes seconds, so
        it runs in a worker thread on a duplicate of the fd, off the event loop."""
        self.flush()
        fd = os.dup(self._fd)
        try:
            return await asyncio.to_thread(_md5_range, fd, pos, size)
        finally:
            os.close(fd)

    def replace_with(self, new_path: Path) -> None:
        """Atomically make `new_path` (already fsynced) the AOF and continue appending to it."""
        self.flush()
        os.replace(new_path, self.path)
        _fsync_dir(self.path.parent)
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self.flushed = os.fstat(self._fd).st_size
        self._unsynced = False
        self.generation += 1

    def truncate(self, size: int) -> None:
        """Cut the file at `size` (a torn tail found at load)."""
        os.ftruncate(self._fd, size)
        self.flushed = size

    def close(self) -> None:
        try:
            self.flush()
            os.fsync(self._fd)
        finally:
            os.close(self._fd)


def _md5_range(fd: int, pos: int, size: int) -> str:
    digest = hashlib.md5()
    end = pos + size
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        if not chunk:
            break
        digest.update(chunk)
        pos += len(chunk)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_files(path: Path) -> None:
    """Remove `<aof>-shrink` / `<aof>-resync` left by a crash (no one else writes them: a
    shrink child dies with its parent, and a new run starts its own files)."""
    for suffix in TEMP_SUFFIXES:
        stale = Path(f"{path}{suffix}")
        try:
            size = stale.stat().st_size
            stale.unlink()
        except FileNotFoundError:
            continue
        log.warning("removed a stale temporary AOF file left by a crash",
                    extra={"path": str(stale), "bytes": size})


def private_file(path: Path) -> BinaryIO:
    """A new owner-only (0600) file, as the AOF it will replace (a leftover is removed first:
    O_CREAT keeps an existing file's mode)."""
    path.unlink(missing_ok=True)
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
