"""Replay an AOF at start-up through the command table.

Every record Tile38 1.30-1.37 writes loads: RESP arrays, and inline command lines (telnet
style, `SET fleet truck0 POINT 10 10\\r\\n`), framed by the same RequestReader as client
requests, which decides per record as Tile38 does. Runs of NUL bytes between records (blocks
pre-allocated before a crash, Tile38 issue #230) are skipped; a torn final record is cut off
with a warning. Anything else that does not parse or apply stops start-up with Tile38's error
text and the byte offset of the bad record: silently skipping data would lose writes.

Tile38's legacy binary format (`<dir>/aof`: little-endian uint32 length, command line, the same
length again, a NUL byte) is migrated to `appendonly.aof` first, as aofmigrate.go does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

from geoserver.errors import GeoServerError, ProtocolError
from geoserver.protocol.framing import FrameLimits, RequestReader, split_command_line
from geoserver.protocol.resp import encode_command

log = logging.getLogger(__name__)

CHUNK = 1 << 20
YIELD_EVERY = 2000  # records between yields to the event loop (LOADING replies stay fast)
_HUGE = 1 << 40  # the AOF holds what was acknowledged: no request limits apply to it
LIMITS = FrameLimits(max_args=_HUGE, max_bulk=_HUGE, max_inline=_HUGE, max_request=_HUGE)


class AofCorruptError(Exception):
    """A record that cannot be parsed or applied; `reason` is Tile38's error text."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: bad AOF record at byte offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


async def load_aof(path: Path, apply: Callable[[list[bytes]], None],
                   progress: Callable[[int, int], None] | None = None,
                   fast: Callable[[RequestReader], int] | None = None) -> int:
    """Replay the file; returns the number of valid bytes (the file is truncated to it).
    `fast` (geoserver.fastpath.replayer) applies a run of records at the reader's position
    itself, as `apply` would, and returns how many (0: `apply` takes the next one)."""
    total = path.stat().st_size if path.exists() else 0
    offset = 0  # start of the next unparsed record
    records = 0
    next_yield = YIELD_EVERY
    with open(path, "rb") as fh:
        reader = RequestReader(LIMITS)
        fed = 0  # file offset up to which the reader was fed
        while True:
            chunk = fh.read(CHUNK)
            if chunk:
                reader.feed(chunk)
                fed += len(chunk)
            while True:
                if fast is not None and (done := fast(reader)):
                    records += done
                    if records >= next_yield:
                        next_yield = records + YIELD_EVERY
                        if progress:
                            progress(fed - reader.buffered, total)
                        await asyncio.sleep(0)
                offset = fed - reader.buffered
                try:
                    argv = reader.next()
                except ProtocolError as exc:
                    argv, error = None, exc
                else:
                    error = None
                    if argv is None:
                        break
                if error is not None or argv[0][:1] == b"\0":
                    skip = _nul_run(fh, offset, total)
                    if skip is None:
                        assert error is not None  # a first byte NUL is a run of at least one
                        raise AofCorruptError(path, offset, error.message) from None
                    if offset + skip >= total:
                        _truncate(path, offset, total, "trailing NUL bytes")
                        return offset
                    log.warning("skipping %d NUL bytes at AOF offset %d", skip, offset)
                    offset += skip
                    fh.seek(offset)
                    fed = offset
                    reader = RequestReader(LIMITS)
                    break
                try:
                    apply(argv)
                except GeoServerError as exc:
                    raise AofCorruptError(path, offset, exc.message) from None
                except Exception as exc:  # a bug must still name the record
                    raise AofCorruptError(path, offset, f"internal error: {exc}") from None
                records += 1
                if records >= next_yield:
                    next_yield = records + YIELD_EVERY
                    if progress:
                        progress(offset, total)
                    await asyncio.sleep(0)
            if not chunk and fed >= total:
                break
        offset = fed - reader.buffered
    if offset < total:
        if _nul_run_to_end(path, offset, total):
            _truncate(path, offset, total, "trailing NUL bytes")
        else:
            _truncate(path, offset, total, "an incomplete final record")
    log.info("AOF loaded", extra={"records": records, "bytes": offset})
    return offset


def _nul_run(fh, offset: int, total: int) -> int | None:
    """Length of the run of NUL bytes starting at offset, or None if there is none."""
    pos = offset
    fh.seek(pos)
    while pos < total:
        block = fh.read(CHUNK)
        stripped = block.lstrip(b"\0")
        pos += len(block) - len(stripped)
        if stripped:
            break
    return pos - offset if pos > offset else None


def _nul_run_to_end(path: Path, offset: int, total: int) -> bool:
    with open(path, "rb") as fh:
        run = _nul_run(fh, offset, total)
    return run is not None and offset + run >= total


def _truncate(path: Path, offset: int, total: int, why: str) -> None:
    log.warning("Truncating %d bytes of %s at the end of %s", total - offset, why, path)
    with open(path, "r+b") as fh:
        fh.truncate(offset)
        os.fsync(fh.fileno())


# --- Tile38's legacy AOF (aofmigrate.go) -------------------------------------------------

class LegacyAofError(Exception):
    """The legacy file is corrupt (Tile38: `corrupted aof file`) or ends inside a record
    (Tile38: `unexpected EOF`)."""


def legacy_records(data: bytes) -> Iterator[bytes]:
    """The command lines of a legacy AOF: `<u32 len><line><u32 len>\\0` each."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise LegacyAofError("unexpected EOF")
        (size,) = struct.unpack_from("<I", data, pos)
        end = pos + 4 + size
        if len(data) < end + 5:
            raise LegacyAofError("unexpected EOF")
        (again,) = struct.unpack_from("<I", data, end)
        if again != size or data[end + 4] != 0:
            raise LegacyAofError("corrupted aof file")
        yield data[pos + 4:end]
        pos = end + 5


def migrate_legacy(dir: Path, target: Path) -> bool:
    """Tile38's migrateAOF: when `target` does not exist and `<dir>/aof` does, rewrite each
    legacy record as a RESP array (a final `{...}` word runs to the end of the line, as
    Tile38's tokenizer has it) into `target`, atomically. True when it migrated."""
    legacy = dir / "aof"
    if target.exists() or not legacy.is_file():
        return False
    log.warning("Migrating aof to new format", extra={"from": str(legacy), "to": str(target)})
    tmp = dir / "migrate.aof"
    count = 0
    with open(tmp, "wb") as out:
        for line in legacy_records(legacy.read_bytes()):
            out.write(encode_command(split_command_line(line)))
            count += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    log.info("AOF migrated", extra={"records": count})
    return True
