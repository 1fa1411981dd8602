"""Online AOFSHRINK: rewrite the AOF from the live dataset without stopping clients.

1. Start capturing every record appended to the live AOF (synchronously, before any yield).
2. Walk collections and ids in order, a bounded batch at a time, yielding to the event loop
   between batches; each object becomes one canonical SET record in `<aof>-shrink`.
3. fsync the new file in a worker thread.
4. Atomically (no await between these steps): flush the live AOF, append the captured
   records, fsync, rename over the AOF, reopen, set aof_size, cut the replication streams
   so followers re-handshake at once.

Objects changed while the walk runs are written twice (their state when visited, then the
captured command), which replays to the same final state. RENAME/DROP/FLUSHDB during a walk
can break that equivalence, so the shrink restarts once and reports an error if it recurs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geoserver.protocol.resp import encode_command, format_float

if TYPE_CHECKING:
    from geoserver.server import Server
    from geoserver.store.collection import Item

log = logging.getLogger(__name__)

BATCH = 2000  # objects per batch between yields
FLUSH_BYTES = 4 << 20
_KEY_LEVEL = {b"rename", b"renamenx", b"drop", b"flushdb"}


@dataclass
class ShrinkState:
    running: bool = False
    last_time: float = 0.0  # unix seconds of the last completion
    last_result: str = ""  # "" (never), "ok", or "error: ..."
    last_duration: float = 0.0
    last_size_before: int = 0
    last_size_after: int = 0
    progress: int = 0  # objects written so far in the running shrink


def object_record(key: str, oid: str, item: Item, now: float) -> bytes:
    """One SET record that recreates the object, its fields and its remaining TTL."""
    args = [b"SET", key.encode(), oid.encode()]
    for name, value in item.field_list():
        args += [b"FIELD", name.encode(), (value if isinstance(value, str) else format_float(value)).encode()]
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
        args += [b"STRING", (obj.text or "").encode()]
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
    log.info("AOF shrink started", extra={"aof_size": size_before})
    try:
        for attempt in (1, 2):
            if await _shrink_once(server):
                state.last_result = "ok"
                break
            log.warning("AOF shrink restarting: a key-level command ran during the walk",
                        extra={"attempt": attempt})
        else:
            state.last_result = "error: restarted twice because of RENAME/DROP/FLUSHDB"
    except Exception as exc:  # disk full, permissions: the old AOF stays in place
        log.exception("AOF shrink failed")
        state.last_result = f"error: {exc}"
        server.metrics.shrinks.labels("error").inc()
    else:
        server.metrics.shrinks.labels("ok" if state.last_result == "ok" else "error").inc()
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


async def _shrink_once(server: Server) -> bool:
    aof = server.aof
    assert aof is not None
    tmp = Path(f"{aof.path}-shrink")
    aof.flush()
    aof.capture = captured = []
    written = 0
    with open(tmp, "wb") as out:
        buf = bytearray()
        for key in list(server.db.collections.keys()):
            last: str | None = None
            while True:
                col = server.db.get(key)
                if col is None:
                    break
                now = time.time()
                if last is None:
                    ids = iter(col.items)
                else:
                    ids = col.items.irange(minimum=last, inclusive=(True, True))
                batch = 0
                for oid in ids:
                    if oid == last:
                        continue
                    item = col.items[oid]
                    if item.expires_at is None or item.expires_at > now:
                        buf += object_record(key, oid, item, now)
                    last = oid
                    batch += 1
                    if batch >= BATCH:
                        break
                written += batch
                server.shrink.progress = written
                if len(buf) >= FLUSH_BYTES:
                    out.write(buf)
                    buf.clear()
                if batch < BATCH:
                    break
                await asyncio.sleep(0)
                if written % 100_000 < BATCH:
                    log.info("AOF shrink progress", extra={"objects": written})
        out.write(buf)
        out.flush()
        await asyncio.to_thread(os.fsync, out.fileno())
    if any(_command_name(r) in _KEY_LEVEL for r in captured):
        aof.capture = None
        tmp.unlink(missing_ok=True)
        return False
    # The swap: no awaits from here on, so no write can slip between the steps.
    aof.flush()
    with open(tmp, "ab") as out:
        for record in captured:
            out.write(record)
        out.flush()
        os.fsync(out.fileno())
    aof.capture = None
    aof.replace_with(tmp)
    server.cut_replication_streams("AOF shrink replaced the file")
    return True


def _command_name(record: bytes) -> bytes:
    """The lower-cased command name of a canonical record (`*N\\r\\n$L\\r\\nNAME\\r\\n...`)."""
    first = record.index(b"\r\n")
    second = record.index(b"\r\n", first + 2)
    third = record.index(b"\r\n", second + 2)
    return record[second + 2 : third].lower()
