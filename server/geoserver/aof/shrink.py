"""Online AOFSHRINK: rewrite the AOF from the live dataset without stopping clients.

1. Flush the live AOF and start capturing every record appended to it from now on.
2. fork(): the child writes one canonical SET record per object of its copy-on-write
   snapshot into `<aof>-shrink`, fsyncs and exits, as Redis's BGREWRITEAOF does. It dies
   with its parent (PR_SET_PDEATHSIG on Linux): a kill -9 of the server leaves no orphan
   writing a file nobody will read, and the next start removes that file. The parent's
   event loop keeps serving; it polls for the child's exit every 20 ms and logs the bytes
   written every 5 s.
   Where fork() does not exist, the same walk runs in the loop in ~1 ms slices instead.
3. Atomically (no await between these steps): flush the live AOF, append the captured
   records to the new file, fsync, rename it over the AOF, reopen, set aof_size, and cut the
   replication streams so followers re-handshake (after their 1 s retry delay).

The snapshot is exact at step 1 and the captured records are every change after it, so the
new file replays to exactly the live dataset. On any error the old file stays in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geoserver.aof.log import private_file
from geoserver.binary import raw
from geoserver.protocol.resp import encode_command, format_float
from geoserver.store.fields import field_arg

if TYPE_CHECKING:
    from geoserver.server import Server
    from geoserver.store.collection import Item

log = logging.getLogger(__name__)

FLUSH_BYTES = 4 << 20
POLL_SECONDS = 0.02  # how often the parent checks whether the child is done
PROGRESS_SECONDS = 5.0
SLICE_SECONDS = 0.001  # in-loop fallback: longest stretch of work between yields


@dataclass
class ShrinkState:
    running: bool = False
    last_time: float = 0.0  # unix seconds of the last completion
    last_result: str = ""  # "" (never), "ok", or "error: ..."
    last_duration: float = 0.0
    last_size_before: int = 0
    last_size_after: int = 0


def object_record(key: str, oid: str, item: Item, now: float) -> bytes:
    """One SET record that recreates the object, its fields and its remaining TTL."""
    args = [b"SET", raw(key), raw(oid)]  # the exact bytes clients sent (geoserver.binary)
    for name, value in item.field_list():
        args += [b"FIELD", raw(name), raw(field_arg(value))]  # re-parses to the same JSON kind
    if item.expires_at is not None:
        remaining = max(0.1, item.expires_at - now)
        args += [b"EX", format_float(round(remaining, 3)).encode()]
    obj = item.obj
    if obj.kind == "point":
        args += [b"POINT", format_float(obj.lat).encode(), format_float(obj.lon).encode()]
        if obj.z is not None:
            args.append(format_float(obj.z).encode())
    elif obj.kind == "geojson":
        args += [b"OBJECT", obj.json_text().encode()]
    else:
        args += [b"STRING", raw(obj.text or "")]
    return encode_command(args)


async def run_shrink(server: Server) -> None:
    """Run one shrink to completion; a second call while one runs returns at once."""
    state = server.shrink
    aof = server.aof
    if aof is None or state.running:
        return
    state.running = True
    started = time.monotonic()
    size_before = aof.size
    log.info("AOF shrink started", extra={"aof_size": size_before,
                                          "objects": server.db.stats()["num_objects"]})
    tmp = Path(f"{aof.path}-shrink")
    generation = aof.generation
    try:
        aof.flush()
        aof.capture = captured = []
        if hasattr(os, "fork"):
            await _write_snapshot_in_child(server, tmp)
        else:  # pragma: no cover - non-POSIX platforms
            await _write_snapshot_in_loop(server, tmp)
        # The swap: no awaits from here on, so no write can slip between the steps.
        if aof.generation != generation or server.follower is not None:
            # a full resync replaced the file (this server began following meanwhile): the
            # snapshot is of a dataset that is gone, and swapping it in would break the prefix
            raise RuntimeError("the AOF was replaced while shrinking (now a follower); not swapped")
        aof.flush()
        with open(tmp, "ab") as out:
            for record in captured:
                out.write(record)
            out.flush()
            os.fsync(out.fileno())
        aof.capture = None
        aof.replace_with(tmp)
        server.cut_replication_streams("AOF shrink replaced the file")
        state.last_result = "ok"
        server.metrics.shrinks.labels("ok").inc()
    except Exception as exc:  # disk full, permissions, a crashed child: keep the old AOF
        log.exception("AOF shrink failed")
        state.last_result = f"error: {exc}"
        server.metrics.shrinks.labels("error").inc()
        tmp.unlink(missing_ok=True)
    except asyncio.CancelledError:
        state.last_result = "error: cancelled (server stopping)"
        tmp.unlink(missing_ok=True)
        raise
    finally:
        aof.capture = None
        state.running = False
        state.last_time = time.time()
        state.last_duration = time.monotonic() - started
        state.last_size_before = size_before
        state.last_size_after = aof.size
        log.info("AOF shrink finished", extra={
            "result": state.last_result, "seconds": round(state.last_duration, 3),
            "aof_size_before": size_before, "aof_size_after": aof.size})


async def _write_snapshot_in_child(server: Server, tmp: Path) -> None:
    # Move every existing object to the GC's permanent generation: a collection in the parent
    # would otherwise write to the header of every object and copy each shared page (CoW).
    gc.freeze()
    parent = os.getpid()
    try:
        pid = os.fork()
    except OSError:
        gc.unfreeze()
        raise
    if pid == 0:  # the child: write, fsync, and leave without running any parent cleanup
        gc.disable()
        code = 1
        try:
            _die_with_parent(parent)
            # Drop the inherited sockets and files at once: a client the parent closes must
            # see EOF now, not when this child exits, and the listener must not linger here.
            os.closerange(3, _max_fd())
            with private_file(tmp) as out:
                for chunk in _snapshot_chunks(server):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            code = 0
        finally:
            os._exit(code)
    try:
        status = await _wait_child(pid, tmp)
    except asyncio.CancelledError:  # shutdown: do not leave the child writing
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        gc.unfreeze()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"shrink child exited with {code}")


async def _wait_child(pid: int, tmp: Path) -> int:
    """Poll the child without blocking the loop, logging progress every PROGRESS_SECONDS."""
    next_log = time.monotonic() + PROGRESS_SECONDS
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        await asyncio.sleep(POLL_SECONDS)
        if time.monotonic() >= next_log:
            next_log += PROGRESS_SECONDS
            with contextlib.suppress(OSError):
                log.info("AOF shrink progress", extra={"bytes_written": tmp.stat().st_size})


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """In the shrink child: get SIGKILL when the server dies (Linux; elsewhere a no-op), and
    leave at once if it died before the request took effect."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):  # pragma: no cover
        return 65536


async def _write_snapshot_in_loop(server: Server, tmp: Path) -> None:
    """Fallback without fork(): the walk yields to the loop every SLICE_SECONDS. Objects
    changed behind the walk are written twice (walk, then captured command); RENAME/DROP of
    a key mid-walk can make that replay differ, which is why fork() is preferred."""
    with private_file(tmp) as out:
        deadline = time.perf_counter() + SLICE_SECONDS
        for chunk in _snapshot_chunks(server, slice_bytes=64 << 10):
            out.write(chunk)
            if time.perf_counter() > deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + SLICE_SECONDS
        out.flush()
        await asyncio.to_thread(os.fsync, out.fileno())


def _snapshot_chunks(server: Server, slice_bytes: int = FLUSH_BYTES):
    """Records for every live object, in key then id order, in chunks of ~slice_bytes."""
    now = time.time()
    buf = bytearray()
    for key, col in list(server.db.collections.items()):
        items = col.items
        # Ids only, then one Item at a time: a compact plain point has no Item until it is read,
        # and materialising them all at once cost ~300 MB at 1M points.
        for oid in list(items.keys()):
            item = items.get(oid)  # None: deleted behind the in-loop walk
            if item is not None and (item.expires_at is None or item.expires_at > now):
                buf += object_record(key, oid, item, now)
                if len(buf) >= slice_bytes:
                    yield bytes(buf)
                    buf.clear()
    for hook in server.fences.registry(server.db).hooks.values():  # SETHOOK / SETCHAN
        if not hook.expired(now):
            buf += encode_command(hook.shrink_record(now))
    if buf:
        yield bytes(buf)
