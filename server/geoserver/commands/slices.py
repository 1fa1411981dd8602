"""Long commands in slices, so one client's big request does not freeze the others.

A long command is written once, as a generator that yields between bounded pieces of work.
`run` drives it to the end at once (small inputs, AOF replay, the follower stream: they need a
plain result), `run_sliced` returns a coroutine that drives it with a loop turn between pieces
of at most BUDGET seconds; dispatch awaits it and the connection holds its later pipelined
commands meanwhile (replies stay in order).

A sliced write must not interleave with other writes to the same key, or its AOF record (the
command as sent, replayed in one go) would no longer describe what it did: `hold` marks the key
while it runs and dispatch makes any other write to that key (or FLUSHDB) wait until it ends.
Reads are not held; docs/commands.md says what a read that overlaps a sliced command sees.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from contextlib import asynccontextmanager
from itertools import islice, repeat
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
import shapely

from geoserver.protocol.output import Chunks, dumps_json, elapsed_text, encode_resp
from geoserver.protocol.resp import Raw
from geoserver.store import query

if TYPE_CHECKING:
    from sortedcontainers import SortedDict

    from geoserver.commands.base import Ctx
    from geoserver.server import Client
    from geoserver.store.database import Database

BUDGET = 0.005  # seconds of work between loop turns
SLICE = 10_000  # inputs above this many items run sliced (below: one go, as before)
STEP = 1_000  # items a step handles between clock reads

Steps = Generator[None, None, Any]


def prefix_batches(keys: SortedDict, prefix: str) -> Iterator[list[Any]]:
    """The keys of `keys` that start with `prefix`, in order, STEP a batch. Each batch resumes
    after the last key of the one before, so keys may come and go between batches: a key that
    lives through the whole walk is seen exactly once."""
    last = None
    while True:
        if last is None:
            batch = list(islice(keys.irange(minimum=prefix or None), STEP))
        else:
            batch = list(islice(keys.irange(minimum=last, inclusive=(False, True)), STEP))
        done = len(batch) < STEP
        if batch and not batch[-1].startswith(prefix):  # the walk left the prefix's range
            batch = [key for key in batch if key.startswith(prefix)]
            done = True
        if batch:
            yield batch
        if done:
            return
        last = batch[-1]


def run(steps: Steps) -> Any:
    """Drive the steps to the end now; their result."""
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value


async def run_sliced(steps: Steps) -> Any:
    """Drive the steps, giving the loop a turn every BUDGET seconds; their result."""
    deadline = time.perf_counter() + BUDGET
    try:
        while True:
            next(steps)
            if time.perf_counter() >= deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + BUDGET
    except StopIteration as stop:
        return stop.value


def start(steps: Steps) -> tuple[bool, Any]:
    """Run the steps for up to BUDGET seconds now: (True, their result) when they end within
    it, else (False, a coroutine that finishes them in slices). For work whose cost is only
    known while doing it (a complex search area): cheap cases keep their one-go reply."""
    deadline = time.perf_counter() + BUDGET
    try:
        while True:
            next(steps)
            if time.perf_counter() >= deadline:
                return False, run_sliced(steps)
    except StopIteration as stop:
        return True, stop.value


def sliced(ctx: Ctx, size: int) -> bool:
    """Whether work over `size` items runs sliced: only for a client (replay stays synchronous)."""
    return ctx.client is not None and size > SLICE


def drive(ctx: Ctx, steps: Steps, size: int) -> Any:
    """The result now, or a coroutine of it when the work is big enough to slice."""
    return run_sliced(steps) if sliced(ctx, size) else run(steps)


# ---- locating points in a complex area, in slices --------------------------------------------

EDGE_TESTS = 100_000  # edge tests in a first step (~3 ms of GEOS; store/query.py MAX_EDGE_TESTS)
STEP_SECONDS = 0.002  # what later steps aim at


def points_in_steps(grid: query.Points, area: query.Area) -> Steps:
    """query.points_in for a shape area, STEP-wise: the points of the area's bounding box are
    located against the shape ~2 ms of GEOS at a time (a search just under the 10^8 edge-test
    cap is ~3 s in one call otherwise). The coordinates are read once, at the start; returns
    the slots inside, as points_in does."""
    bbox = query.box_area(area.minlat, area.minlon, area.maxlat, area.maxlon)
    slots = query.points_in(grid, bbox)
    if not len(slots):
        return slots
    query.check_search_cost(area, len(slots))
    lats, lons = grid.coords(slots)
    geometry = area.geometry()
    per = max(16, int(EDGE_TESTS / max(1.0, area.edges_per_line())))
    inside = np.zeros(len(slots), dtype=bool)
    a = 0
    while a < len(slots):  # the estimate can be off by 10x for clustered points: adapt `per`
        t = time.perf_counter()
        inside[a : a + per] = shapely.intersects_xy(geometry, lons[a : a + per], lats[a : a + per])
        a += per
        took = time.perf_counter() - t
        per = max(16, min(per * 4, int(per * STEP_SECONDS / took))) if took > 0 else per * 4
        yield
    return slots[inside]


# ---- holding writes while a sliced write runs -------------------------------------------------

_held: weakref.WeakKeyDictionary[Database, dict[bytes, asyncio.Future]] = weakref.WeakKeyDictionary()
generation = 0  # moves whenever a key is held or released (fastpath.modes caches blocker())


@asynccontextmanager
async def hold(db: Database, key: bytes) -> AsyncIterator[None]:
    """Mark `key` as written by a sliced command until the block ends (after waiting for
    another sliced write on it: two may have been accepted in the same loop turn)."""
    global generation
    keys = _held.setdefault(db, {})
    while key in keys:
        await asyncio.shield(keys[key])
    done = asyncio.get_running_loop().create_future()
    keys[key] = done
    generation += 1
    try:
        yield
    finally:
        del keys[key]
        generation += 1
        done.set_result(None)


def blocker(db: Database, name: str, argv: list[bytes]) -> asyncio.Future | None:
    """What a write must wait for before it runs: a sliced write on a key it touches."""
    keys = _held.get(db)
    if not keys:
        return None
    if name == "flushdb":
        return next(iter(keys.values()))
    for key in argv[1:3] if name in ("rename", "renamenx") else argv[1:2]:
        if key in keys:
            return keys[key]
    return None


# ---- replies built in slices ------------------------------------------------------------------


def reply(ctx: Ctx, values: list[Any], json_key: str, *, resp_head: tuple[Any, ...] = (),
          json_head: dict[str, Any] | None = None, json_tail: dict[str, Any] | None = None,
          resp_value: Callable[[Any], Any] | None = None,
          json_value: Callable[[Any], Any] | None = None) -> Steps:
    """Encode a reply holding a long list, STEP values a step; returns it as Chunks (for a
    RESP or HTTP connection: sent piece by piece, never joined) or Raw bytes (no connection),
    the same bytes the one-go encoding gives.

    RESP: `[*resp_head, values]` (just `values` without a head). JSON: dispatch's envelope
    around `{**json_head, json_key: values, **json_tail}`. `resp_value` / `json_value` turn each
    value into what is encoded (rows are built as they are encoded, never all at once).
    `values` is consumed: each step drops the values it encoded, so they are freed a step at
    a time instead of all at once when the reply is done."""
    parts = Chunks()
    if not ctx.json:
        if resp_head:
            parts.append(b"*%d\r\n" % (len(resp_head) + 1) + b"".join(encode_resp(h) for h in resp_head))
        parts.append(b"*%d\r\n" % len(values))
        for a in range(0, len(values), STEP):
            chunk = values[a : a + STEP]
            values[a : a + STEP] = repeat(None, len(chunk))
            if resp_value is not None:
                chunk = [resp_value(v) for v in chunk]
            parts.append(b"".join([encode_resp(v) for v in chunk]))
            del chunk
            yield
        return _whole(ctx, parts)
    head = b'{"ok":true,'
    if json_head:
        head += dumps_json(json_head)[1:-1] + b","
    parts.append(head + orjson.dumps(json_key) + b":[")
    for a in range(0, len(values), STEP):
        chunk = values[a : a + STEP]
        values[a : a + STEP] = repeat(None, len(chunk))
        if json_value is not None:
            chunk = [json_value(v) for v in chunk]
        parts.append((b"," if a else b"") + dumps_json(chunk)[1:-1])
        del chunk
        yield
    tail = b"]"
    if json_tail:
        tail += b"," + dumps_json(json_tail)[1:-1]
    elapsed = int((time.time() - ctx.now) * 1e9)
    parts.append(tail + b',"elapsed":"' + elapsed_text(elapsed).encode() + b'"}')
    resp_conn = ctx.client.resp_conn if ctx.client is not None else True
    if resp_conn:  # JSON over RESP travels as a bulk string
        parts.insert(0, b"$%d\r\n" % parts.nbytes)
        parts.append(b"\r\n")
    return _whole(ctx, parts)


def _whole(ctx: Ctx, parts: Chunks) -> Chunks | Raw:
    """Chunks for a connection (RESP: the Client sends them; HTTP: protocol/http.py writes
    them after its head); joined for callers without one (scripts)."""
    if ctx.client is not None:
        return parts
    return Raw(b"".join(parts))


# ---- sending a reply in pieces ----------------------------------------------------------------


async def send(client: Client, chunks: Chunks) -> None:
    """Hand a big reply to the client's transport piece by piece: a loop turn every BUDGET
    seconds, and while the transport holds more than its high-water mark (the 4 MB batch
    pause) the next piece waits for it to drain. Over the client's hard output limit the
    client is disconnected, as for a reply sent in one piece. Pieces are dropped once written."""
    transport = client.transport
    if transport is None or transport.is_closing():
        return
    size = chunks.nbytes
    hard = client.output.limit.hard
    held = transport.get_write_buffer_size() + size
    if hard and held > hard:
        client.disconnect(f"output buffer {held} bytes over the hard limit {hard}")
        return
    client.pending_output = size
    chunks.reverse()  # pop() from the end: each piece freed as it goes
    deadline = time.perf_counter() + BUDGET
    try:
        while chunks:
            if transport.is_closing():
                return
            piece = chunks.pop()
            client.pending_output -= len(piece)
            transport.write(piece)
            del piece
            if client.write_paused:
                await client.drained()
                deadline = time.perf_counter() + BUDGET
            elif time.perf_counter() >= deadline:
                await asyncio.sleep(0)
                deadline = time.perf_counter() + BUDGET
    finally:
        client.pending_output = 0
