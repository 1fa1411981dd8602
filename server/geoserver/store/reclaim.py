"""Free detached data in slices: DROP and FLUSHDB detach a collection (or all of them) at once,
and the objects are deallocated here, a few milliseconds per event-loop turn, by one
background task. Deallocating a million objects in one go stalls the loop for ~0.5 s.

Nothing here is visible to readers: what is handed over is already unreachable from the
dataset. Without a running loop (tests, tools) the data is freed at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedDict

log = logging.getLogger(__name__)

BUDGET = 0.004  # seconds of freeing per loop turn
STEP = 512  # objects freed between clock reads

_pending: deque[Any] = deque()
_task: asyncio.Task | None = None


def later(obj: Any) -> None:
    """Take ownership of `obj` (a Collection, a mapping of them, a list) and free it in slices."""
    global _task
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return  # no loop: the caller's reference was the last one, freed now
    _pending.append(obj)
    if _task is None or _task.done():
        _task = loop.create_task(_drain(), name="reclaim")


def pending() -> int:
    """Structures still waiting to be freed (for tests and SERVER-style reporting)."""
    return len(_pending) + (1 if _task is not None and not _task.done() else 0)


async def _drain() -> None:
    steps = _steps()
    deadline = time.perf_counter() + BUDGET
    for _ in steps:
        if time.perf_counter() >= deadline:
            await asyncio.sleep(0)
            deadline = time.perf_counter() + BUDGET


def _steps() -> Iterator[None]:
    while _pending:
        obj = _pending.popleft()
        try:
            yield from _free(obj)
        except Exception:  # freeing must never take the loop down; the rest goes at once
            log.exception("reclaim failed")
        del obj


def _free(obj: Any) -> Iterator[None]:
    """Empty `obj` STEP entries at a time, recursing into the containers it holds."""
    from geoserver.store.collection import Collection

    if isinstance(obj, Collection):
        yield from _free(obj.items)
        for part in (obj.points, obj.shapes):
            for value in vars(part).values() if hasattr(part, "__dict__") else ():
                yield from _free(value)
        return
    if isinstance(obj, dict):  # a SortedDict too: its popitem takes the last key, O(1)
        # SortedDict's own popitem: the stored value (a collection's Items would build an Item
        # for each compact point first)
        popitem = SortedDict.popitem if isinstance(obj, SortedDict) else dict.popitem
        while obj:
            for _ in range(min(STEP, len(obj))):
                value = popitem(obj)[1]
                if _is_big(value):
                    yield from _free(value)
                del value
            yield
        return
    if isinstance(obj, list):
        while obj:
            tail = obj[-STEP:]
            del obj[-STEP:]
            for value in tail:
                if _is_big(value):
                    yield from _free(value)
            del tail
            yield


def _is_big(value: Any) -> bool:
    from geoserver.store.collection import Collection

    return isinstance(value, Collection | dict | list) and len(value) > STEP
