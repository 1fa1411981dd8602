"""A dynamic spatial index of fence areas: a hierarchy of uniform grids (a loose quadtree).

A fence of bounding box B lives on the finest level whose cell is at least as large as B's
longer side, in the (at most 2x2) cells B touches there. A lookup of a box visits, on each
level in use, only the cells the box touches, then keeps the fences whose box overlaps it.
So a write costs in proportion to the fences near it, whatever their total, and adding or
removing a fence is O(1) (an STRtree would be rebuilt on every SETHOOK).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable

Box = tuple[float, float, float, float]  # minlon, minlat, maxlon, maxlat

BASE_CELL = 0.01  # degrees: the finest level (a fence a city block wide)
FACTOR = 2
MAX_CELLS = 64  # a lookup touching more cells on a level checks that level's fences instead
LEVELS = 17  # 0.01 * 2**16 = 655 degrees: the coarsest level holds any fence in one cell


_SIZES = [BASE_CELL * FACTOR**level for level in range(LEVELS)]


def _level_of(box: Box) -> int:
    span = max(box[2] - box[0], box[3] - box[1])
    if span <= BASE_CELL:
        return 0
    return min(LEVELS - 1, math.ceil(math.log(span / BASE_CELL, FACTOR)))


class FenceGrid:
    """Names (any hashable) with bounding boxes; `overlapping(box)` finds those near a box."""

    __slots__ = ("_boxes", "_cells", "_levels")

    def __init__(self) -> None:
        self._boxes: dict[Hashable, tuple[Box, int]] = {}
        self._cells: dict[tuple[int, int, int], set[Hashable]] = {}
        self._levels: dict[int, set[Hashable]] = {}  # level -> the fences on it

    def __len__(self) -> int:
        return len(self._boxes)

    @staticmethod
    def _cells_of(box: Box, level: int) -> Iterable[tuple[int, int, int]]:
        size = BASE_CELL * FACTOR**level
        x0, x1 = math.floor(box[0] / size), math.floor(box[2] / size)
        y0, y1 = math.floor(box[1] / size), math.floor(box[3] / size)
        for x in range(x0, x1 + 1):
            for y in range(y0, y1 + 1):
                yield level, x, y

    def insert(self, name: Hashable, box: Box) -> None:
        self.remove(name)
        level = _level_of(box)
        self._boxes[name] = (box, level)
        self._levels.setdefault(level, set()).add(name)
        for cell in self._cells_of(box, level):
            self._cells.setdefault(cell, set()).add(name)

    def remove(self, name: Hashable) -> None:
        entry = self._boxes.pop(name, None)
        if entry is None:
            return
        box, level = entry
        on_level = self._levels[level]
        on_level.discard(name)
        if not on_level:
            del self._levels[level]
        for cell in self._cells_of(box, level):
            names = self._cells.get(cell)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._cells[cell]

    def overlapping(self, box: Box) -> list[Hashable]:
        """Names whose box overlaps `box` (edges included)."""
        minx, miny, maxx, maxy = box
        if minx == maxx and miny == maxy:
            return self.at_point(minx, miny)
        found: list[Hashable] = []
        seen: set[Hashable] = set()
        cells, boxes = self._cells, self._boxes
        for level, on_level in self._levels.items():
            size = BASE_CELL * FACTOR**level
            span = (math.floor(maxx / size) - math.floor(minx / size) + 1) * (
                math.floor(maxy / size) - math.floor(miny / size) + 1)
            # a box wider than the level's cells: its fences are fewer than its cells
            groups = [on_level] if span > MAX_CELLS else (cells.get(c) for c in self._cells_of(box, level))
            for names in groups:
                if not names:
                    continue
                for name in names:
                    if name in seen:
                        continue
                    seen.add(name)
                    b = boxes[name][0]
                    if b[0] <= maxx and minx <= b[2] and b[1] <= maxy and miny <= b[3]:
                        found.append(name)
        return found

    def at_point(self, x: float, y: float) -> list[Hashable]:
        """`overlapping` for a point (the write of a point: the hot path), one cell a level."""
        found: list[Hashable] = []
        cells, boxes, floor = self._cells, self._boxes, math.floor
        for level in self._levels:
            size = _SIZES[level]
            names = cells.get((level, floor(x / size), floor(y / size)))
            if names:
                for name in names:
                    b = boxes[name][0]
                    if b[0] <= x <= b[2] and b[1] <= y <= b[3]:
                        found.append(name)
        return found  # a fence lives in one cell a level: no duplicates
