"""Replay an AOF at start-up through the command table.

A torn final record (crash mid-write) and trailing NUL bytes (pre-allocated blocks after a
crash) are cut off with a warning. Anything else that does not parse or apply stops start-up
with the byte offset of the bad record: silently skipping data would lose writes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import hiredis

from geoserver.protocol.resp import command_length

log = logging.getLogger(__name__)

CHUNK = 1 << 20
YIELD_EVERY = 2000  # records between yields to the event loop (LOADING replies stay fast)


class AofCorruptError(Exception):
    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt AOF record at byte offset {offset}: {reason}")
        self.offset = offset


async def load_aof(path: Path, apply: Callable[[list[bytes]], None],
                   progress: Callable[[int, int], None] | None = None) -> int:
    """Replay the file; returns the number of valid bytes (the file is truncated to it)."""
    total = path.stat().st_size if path.exists() else 0
    offset = 0  # start of the next unparsed record
    records = 0
    with open(path, "rb") as fh:
        reader = hiredis.Reader()
        read_pos = 0
        while True:
            chunk = fh.read(CHUNK)
            if chunk:
                reader.feed(chunk)
                read_pos += len(chunk)
            while True:
                try:
                    item = reader.gets()
                except hiredis.ProtocolError as exc:
                    skip = _nul_run(fh, offset, total)
                    if skip is None:
                        raise AofCorruptError(path, offset, f"protocol error: {exc}") from None
                    if offset + skip >= total:
                        _truncate(path, offset, total, "trailing NUL bytes")
                        return offset
                    log.warning("skipping %d NUL bytes at AOF offset %d", skip, offset)
                    offset += skip
                    fh.seek(offset)
                    read_pos = offset
                    reader = hiredis.Reader()
                    break
                if item is False:
                    break
                if not isinstance(item, list) or not item or not all(isinstance(a, bytes) for a in item):
                    raise AofCorruptError(path, offset, "record is not an array of bulk strings")
                try:
                    apply(item)
                except Exception as exc:
                    raise AofCorruptError(path, offset, f"cannot apply record: {exc}") from None
                offset += command_length(item)
                records += 1
                if records % YIELD_EVERY == 0:
                    if progress:
                        progress(offset, total)
                    await asyncio.sleep(0)
            if not chunk and read_pos >= total:
                break
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
