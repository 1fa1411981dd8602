"""Spatial index of one collection.

Points (nearly all objects in practice) live in a uniform grid of CELL-degree cells over
slot-addressed numpy coordinate arrays: an insert is a dict/list append (~µs), and a query
gathers candidate slots from the covered cells and filters them in one vectorised pass.
A second, coarse level (blocks of COARSE x COARSE cells) lists the occupied cells of each block,
so a box over many cells of sparse data (1M points over the world, 100 km: ~30,000 cells, most
empty) visits the few occupied cells of its blocks instead of probing every cell. When a query
box covers more cells than are occupied, it filters every slot instead, so huge areas cost O(n)
numpy work rather than O(cells) Python work. Other shapes (polygons, lines, bounds) keep their
bounding boxes in arrays updated in place.
docs/spatial-index.md records the measurements behind this choice (grid vs rtree).

The point index has two implementations behind one small interface (`POINT_INDEX_API`):
`PointGrid` here, pure Python and numpy, and the compiled `geoserver._core.PointGrid` (C++,
src/core/pointgrid.cpp), the same algorithm step for step, so answers and their order agree
(tests/server/test_core_differential.py). Callers see slots (ints), ids (str) and numpy arrays
returned by its methods, never its storage. `PointIndex` is the one collections use: the
compiled core unless `GEOSERVER_CORE=python` (or the extension is not built; `GEOSERVER_CORE=cpp`
makes that an error). `GEOSERVER_CORE_LIB=/path/to/_core.so` loads another build of the core
(the sanitizer build of bench/sanitize_core.sh).
"""

from __future__ import annotations

import importlib.util
import math
import os
from typing import Any

import numpy as np

CELL = 0.01  # degrees; ~1.1 km of latitude, a few dozen points per cell in a dense city
COARSE_SHIFT = 4  # a block is 2^4 x 2^4 cells (0.16 degrees, ~18 km)
COARSE = 1 << COARSE_SHIFT
FINE_PROBES = 64  # boxes of at most this many cells probe each cell; larger ones ask the blocks first


# Cells are keyed by one int, row * _ROW + column: hashing an int beats building and hashing a
# tuple on every insert and every cell a query visits.
_ROW = 1 << 16  # > 360 / CELL columns
_COL0 = 1 << 15  # offset that keeps columns (from -18000) non-negative


def _key(cy: int, cx: int) -> int:
    return cy * _ROW + cx + _COL0


def _cell(lat: float, lon: float) -> tuple[int, int]:
    return math.floor(lat / CELL), math.floor(lon / CELL)


_RAD = math.pi / 180.0
_HALF_RAD = math.pi / 360.0
_NO_SLOTS = np.empty(0, dtype=np.int64)


def hav_terms(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """The haversine term a = sin²(d / 2R) from (lat, lon) to each point: monotonic in the
    distance d, so it filters and orders without arcsin (in-place ufuncs: per-call overhead
    dominates here). The core computes it with the same operations in the same order."""
    sp = np.sin((lats - lat) * _HALF_RAD)
    sp *= sp
    sl = np.sin((lons - lon) * _HALF_RAD)
    sl *= sl
    cp = np.cos(lats * _RAD)
    cp *= math.cos(math.radians(lat))
    cp *= sl
    cp += sp
    return cp


# What collections, queries and commands may call on a point index (both implementations):
POINT_INDEX_API = (
    "__len__", "insert", "remove",  # by id
    "slot", "point", "capacity", "num_cells", "num_blocks",  # slot (-1: none) and (lat, lon)
    # (None) of an id, slots ever used, occupied cells and blocks
    "ids_of", "names", "coords",  # ids / (lats, lons) of slots; a copy of the ids by slot
    "candidates_in_box", "slots_in_box", "ring", "bounds",  # searches
)


class PointGrid:
    """Slots of (lat, lon) with ids, bucketed by grid cell.

    ``where[slot]`` is the slot's index in its cell's bucket, so a removal swaps the bucket's
    last slot into the hole: O(1) even when one cell holds every object (a depot, a test
    fleet parked on one point), where ``list.remove`` made each update O(n).

    ``blocks[key]`` lists the occupied cells, ``(row, column, key)``, of one block of
    COARSE x COARSE cells (keyed like cells, by block row and column); ``block_pos[key]`` is a
    cell's block and index there (swap-removal again). A cell enters its block when its bucket is created
    and leaves when it empties."""

    def __init__(self) -> None:
        self.lats = np.zeros(64)
        self.lons = np.zeros(64)
        self.ids: list[str | None] = [None] * 64
        self.where: list[int] = [0] * 64
        self.alive = np.zeros(64, dtype=bool)
        self.slot_of: dict[str, int] = {}
        self.cells: dict[int, list[int]] = {}
        self.blocks: dict[int, list[tuple[int, int, int]]] = {}
        self.block_pos: dict[int, tuple[int, int]] = {}  # cell key -> (block key, index there)
        self._free: list[int] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self.slot_of)

    def insert(self, oid: str, lat: float, lon: float) -> None:
        cy, cx = _cell(lat, lon)
        key = _key(cy, cx)
        slot = self.slot_of.get(oid)
        if slot is not None:
            if _key(*_cell(self.lats[slot], self.lons[slot])) == key:  # moved within its cell
                self.lats[slot] = lat
                self.lons[slot] = lon
                return
            self.remove(oid)
        slot = self._free.pop() if self._free else self._grow()
        self.lats[slot] = lat
        self.lons[slot] = lon
        self.ids[slot] = oid
        self.alive[slot] = True
        self.slot_of[oid] = slot
        bucket = self.cells.get(key)
        if bucket is None:
            bucket = self.cells[key] = []
            bkey = _key(cy >> COARSE_SHIFT, cx >> COARSE_SHIFT)
            block = self.blocks.setdefault(bkey, [])
            self.block_pos[key] = (bkey, len(block))
            block.append((cy, cx, key))
        self.where[slot] = len(bucket)
        bucket.append(slot)

    def remove(self, oid: str) -> None:
        slot = self.slot_of.pop(oid, None)
        if slot is None:
            return
        key = _key(*_cell(self.lats[slot], self.lons[slot]))
        bucket = self.cells[key]
        last = bucket.pop()
        if last != slot:
            hole = self.where[slot]
            bucket[hole] = last
            self.where[last] = hole
        elif not bucket:
            del self.cells[key]
            self._leave_block(key)
        self.ids[slot] = None
        self.alive[slot] = False
        self._free.append(slot)

    def _leave_block(self, key: int) -> None:
        bkey, pos = self.block_pos.pop(key)
        block = self.blocks[bkey]
        last = block.pop()
        if last[2] != key:
            block[pos] = last
            self.block_pos[last[2]] = (bkey, pos)
        elif not block:
            del self.blocks[bkey]

    def _grow(self) -> int:
        slot = self._next
        if slot >= len(self.lats):
            size = len(self.lats) * 2
            self.lats = np.resize(self.lats, size)
            self.lons = np.resize(self.lons, size)
            self.alive = np.concatenate([self.alive, np.zeros(size - len(self.alive), bool)])
            self.ids.extend([None] * (size - len(self.ids)))
            self.where.extend([0] * (size - len(self.where)))
        self._next += 1
        return slot

    def candidates_in_box(self, minlat: float, minlon: float, maxlat: float, maxlon: float) -> np.ndarray:
        """Slots in the cells the box touches (a superset of the box: callers filter exactly).

        Every live slot when the box covers more cells than are occupied. A box of more than
        FINE_PROBES cells first collects the occupied-cell lists of the blocks it touches: when
        they hold fewer cells than the box covers, those cells are tested against the box (block
        by block, row-major; in list order within a block); otherwise each cell of the box is
        probed, row-major, as for a small box."""
        ay, ax = _cell(minlat, minlon)
        by, bx = _cell(maxlat, maxlon)
        ncells = (by - ay + 1) * (bx - ax + 1)
        if ncells > len(self.cells):
            return np.flatnonzero(self.alive[: self._next])
        found: list[int] = []
        if ncells > FINE_PROBES:
            lists = []
            occupied = 0
            bget = self.blocks.get
            bax, bbx = ax >> COARSE_SHIFT, bx >> COARSE_SHIFT
            for row in range(_key(ay >> COARSE_SHIFT, bax), _key(by >> COARSE_SHIFT, bax) + 1, _ROW):
                for bkey in range(row, row + bbx - bax + 1):
                    block = bget(bkey)
                    if block:
                        lists.append(block)
                        occupied += len(block)
            if occupied < ncells:
                cells = self.cells
                for block in lists:
                    for cy, cx, key in block:
                        if ay <= cy <= by and ax <= cx <= bx:
                            found += cells[key]
                return np.fromiter(found, dtype=np.int64, count=len(found))
        get = self.cells.get
        for row in range(_key(ay, ax), _key(by, ax) + 1, _ROW):
            for key in range(row, row + bx - ax + 1):
                bucket = get(key)
                if bucket:
                    found += bucket
        return np.fromiter(found, dtype=np.int64, count=len(found))

    def slots_in_box(self, minlat: float, minlon: float, maxlat: float, maxlon: float) -> np.ndarray:
        """Slots whose point lies inside the box (edges included)."""
        slots = self.candidates_in_box(minlat, minlon, maxlat, maxlon)
        if not len(slots):
            return slots
        lats, lons = self.lats[slots], self.lons[slots]
        mask = (lats >= minlat) & (lats <= maxlat) & (lons >= minlon) & (lons <= maxlon)
        return slots[mask]

    # ---- the rest of the point index interface (POINT_INDEX_API) ----

    def slot(self, oid: str) -> int:
        return self.slot_of.get(oid, -1)

    def point(self, oid: str) -> tuple[float, float] | None:
        slot = self.slot_of.get(oid)
        return None if slot is None else (float(self.lats[slot]), float(self.lons[slot]))

    def capacity(self) -> int:
        """Slots ever used: every slot is below it."""
        return self._next

    def num_cells(self) -> int:
        return len(self.cells)

    def num_blocks(self) -> int:
        """Occupied blocks (of COARSE x COARSE cells): knn's density guess."""
        return len(self.blocks)

    def ids_of(self, slots: np.ndarray) -> list[str | None]:
        ids = self.ids
        return [ids[s] for s in slots.tolist()]

    def names(self) -> list[str | None]:
        """A copy of the ids by slot (None for a free slot), for walks that writes interleave with."""
        return self.ids[: self._next]

    def coords(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.lats[slots], self.lons[slots]

    def ring(self, lat: float, lon: float, minlat: float, minlon: float, maxlat: float, maxlon: float,
             lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        """(slots, haversine terms) of the box's candidates with lo < term <= hi (lo < 0:
        term <= hi), ordered by the term (stable: ties keep candidate order)."""
        if not self.slot_of:
            return _NO_SLOTS, np.empty(0)
        slots = self.candidates_in_box(minlat, minlon, maxlat, maxlon)
        h = hav_terms(lat, lon, self.lats[slots], self.lons[slots])
        keep = (h <= hi) & (h > lo) if lo >= 0 else h <= hi
        slots, h = slots[keep], h[keep]
        order = np.argsort(h, kind="stable")
        return slots[order], h[order]

    def bounds(self) -> tuple[float, float, float, float] | None:
        """(minlon, minlat, maxlon, maxlat) of every point, or None."""
        if not self.slot_of:
            return None
        alive = self.alive
        lats, lons = self.lats[alive], self.lons[alive]
        return float(lons.min()), float(lats.min()), float(lons.max()), float(lats.max())


def _load_core() -> Any:
    """The compiled core module, or None for the pure-Python index (see the module docstring)."""
    choice = os.environ.get("GEOSERVER_CORE", "auto").lower()
    if choice == "python":
        return None
    if choice not in ("auto", "cpp"):
        raise RuntimeError(f"GEOSERVER_CORE must be auto, cpp or python, not {choice!r}")
    try:
        path = os.environ.get("GEOSERVER_CORE_LIB")
        if path:
            spec = importlib.util.spec_from_file_location("geoserver._core", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
        from geoserver import _core  # type: ignore[attr-defined]

        return _core
    except ImportError:
        if choice == "cpp":
            raise
        return None


_core = _load_core()
CORE = "cpp" if _core is not None else "python"  # which point index collections use
PointIndex: Any = _core.PointGrid if _core is not None else PointGrid



class ShapeBoxes:
    """Bounding boxes of non-point spatial objects in slot-addressed rows of one array: a write
    updates its row in place (rebuilding the array after every write made the next query cost
    ~20 ms at 100k shapes), a query tests every row in one vectorised pass. Free rows hold
    NaN, which no comparison accepts, so callers never see them."""

    def __init__(self) -> None:
        self._arr = np.full((16, 4), np.nan)  # (minlon, minlat, maxlon, maxlat) per slot
        self.ids: list[str | None] = [None] * 16
        self.slot_of: dict[str, int] = {}
        self._free: list[int] = []
        self._next = 0

    def __len__(self) -> int:
        return len(self.slot_of)

    def insert(self, oid: str, bbox: tuple[float, float, float, float]) -> None:
        slot = self.slot_of.get(oid)
        if slot is None:
            slot = self._free.pop() if self._free else self._grow()
            self.slot_of[oid] = slot
            self.ids[slot] = oid
        self._arr[slot] = bbox

    def remove(self, oid: str) -> None:
        slot = self.slot_of.pop(oid, None)
        if slot is not None:
            self._arr[slot] = np.nan
            self.ids[slot] = None
            self._free.append(slot)

    def _grow(self) -> int:
        slot = self._next
        if slot >= len(self._arr):
            self._arr = np.concatenate([self._arr, np.full(self._arr.shape, np.nan)])
            self.ids.extend([None] * (len(self._arr) - len(self.ids)))
        self._next += 1
        return slot

    def arrays(self) -> tuple[list[str | None], np.ndarray]:
        """(ids by slot, boxes by slot); a free slot's id is None and its row NaN."""
        return self.ids, self._arr[: self._next]

    def ids_overlapping(self, minlat: float, minlon: float, maxlat: float, maxlon: float) -> list[str]:
        if not self.slot_of:
            return []
        ids, a = self.arrays()
        mask = (a[:, 0] <= maxlon) & (a[:, 2] >= minlon) & (a[:, 1] <= maxlat) & (a[:, 3] >= minlat)
        return [ids[i] for i in np.flatnonzero(mask)]  # type: ignore[misc]
