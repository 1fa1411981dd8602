"""All collections of one server, plus the expiry schedule.

Expiry keeps a heap of (deadline, key, id); entries made stale by a later SET/PERSIST are
skipped when popped, so scheduling is O(log n) and nothing scans all objects. Stale entries
are also dropped whenever the heap has doubled since it was last compacted: rewriting the same
few ids with `EX 3600` no longer grows memory with every write (it did, ~225 bytes a write).
"""

from __future__ import annotations

import heapq
from collections.abc import Generator, Iterator
from typing import Any

from geoserver.store import reclaim
from geoserver.store.collection import Collection, IdOrdered, byte_ordered


class Database:
    def __init__(self) -> None:
        self.collections: IdOrdered = IdOrdered()  # keys in byte order, as Tile38's KEYS lists them
        self._expiry: list[tuple[float, str, str]] = []
        self._compacted_size = 0  # heap entries after the last compaction

    def get(self, key: str) -> Collection | None:
        return self.collections.get(key)

    def get_or_create(self, key: str) -> Collection:
        col = self.collections.get(key)
        if col is None:
            col = self.collections[key] = Collection()
        return col

    def drop(self, key: str) -> bool:
        """Detach the collection at once; its objects are freed in slices (store/reclaim.py)."""
        col = self.collections.pop(key, None)
        if col is None:
            return False
        reclaim.later(col)
        return True

    def drop_if_empty(self, key: str) -> None:
        col = self.collections.get(key)
        if col is not None and not len(col):
            del self.collections[key]

    def flush(self) -> None:
        """Detach everything at once; the old objects are freed in slices (store/reclaim.py)."""
        old, self.collections = self.collections, IdOrdered()
        reclaim.later(old)
        reclaim.later(self._expiry)
        self._expiry = []
        self._compacted_size = 0

    def schedule_expiry(self, key: str, oid: str, deadline: float) -> None:
        heapq.heappush(self._expiry, (deadline, key, oid))
        if len(self._expiry) > 2 * self._compacted_size + 4096:
            self._compact_expiry()

    def _compact_expiry(self) -> None:
        """Keep only the entries that are still an object's deadline (amortised O(1) a write)."""
        current = []
        for entry in self._expiry:
            deadline, key, oid = entry
            col = self.collections.get(key)
            item = col.get(oid) if col is not None else None
            if item is not None and item.expires_at == deadline:
                current.append(entry)
        heapq.heapify(current)
        self._expiry = current
        self._compacted_size = len(current)

    def due_expirations(self, now: float, limit: int = 10_000) -> Iterator[tuple[str, str]]:
        """Pop (key, id) pairs whose current deadline has passed, at most `limit` per call."""
        heap = self._expiry
        count = 0
        while heap and heap[0][0] <= now and count < limit:
            _deadline, key, oid = heapq.heappop(heap)
            col = self.collections.get(key)
            item = col.get(oid) if col is not None else None
            if item is not None and item.expired(now):
                count += 1
                yield key, oid

    def may_have_expired(self, now: float) -> bool:
        """False when no object can have expired yet (the earliest deadline is ahead): reads
        then skip the per-object expiry check."""
        return bool(self._expiry) and self._expiry[0][0] <= now

    def prune_expiry(self, now: float) -> None:
        """Drop schedule entries that no longer match an object (a follower's objects are
        deleted by its leader's DELs, so only the bookkeeping needs trimming there)."""
        heap = self._expiry
        while heap and heap[0][0] <= now:
            deadline, key, oid = heap[0]
            col = self.collections.get(key)
            item = col.get(oid) if col is not None else None
            if item is not None and item.expires_at == deadline:
                return  # still due: the leader's DEL is on its way
            heapq.heappop(heap)

    def stats(self) -> dict[str, int]:
        steps = self.stats_steps()
        while True:
            try:
                next(steps)
            except StopIteration as stop:
                return stop.value[0]

    def stats_steps(self, step: int = 2000, largest: int = 0) -> Generator[None, None, Any]:
        """The totals of `stats()`, `step` collections at a time (yields between; the caller
        may serve others meanwhile: each collection is counted as it is at its step), and the
        `largest` collections by objects: returns (totals, [(key, collection) ...])."""
        cols = list(dict.items(self.collections))  # a copy of the refs: ~4 ms at 100k keys
        objects = points = strings = weight = 0
        top: list[tuple[int, str, Collection]] = []
        for a in range(0, len(cols), step):
            for key, col in cols[a : a + step]:
                n = len(col)
                objects += n
                points += col.num_points
                strings += col.num_strings
                weight += col.weight
                if largest:
                    if len(top) < largest:
                        heapq.heappush(top, (n, key, col))
                    elif n > top[0][0]:
                        heapq.heapreplace(top, (n, key, col))
            yield
        totals = {
            "num_collections": len(cols),
            "num_objects": objects,
            "num_points": points,
            "num_strings": strings,
            "in_memory_size": weight,
        }
        return totals, sorted((byte_ordered(key), col) for _n, key, col in top)
