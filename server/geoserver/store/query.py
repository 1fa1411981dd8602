"""Spatial candidate filtering for the search commands: pure, vectorised, no reply logic.

Points are asked of the point index (store/index.py: the compiled core or its Python twin) through
its small interface: candidate slots of a box, slots inside a box, a distance ring already
filtered and ordered, coordinates and ids of given slots; circles and polygons then test the
candidates' coordinates in one numpy pass (haversine, shapely's `intersects_xy`). Other
shapes are prefiltered by their bounding boxes and then tested with shapely predicates.
Results come as ordered batches (`Batch`), so the command layer can apply CURSOR / filters /
LIMIT without building Python objects for candidates it never looks at.

Invariants: a point is inside an area when it lies inside or on its boundary (WITHIN and
INTERSECTS agree for points); NEARBY distances of non-point objects are distances to their
bounding box (0 inside), as in Tile38's geodetic rtree distance.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
import shapely

from geoserver.errors import CommandError
from geoserver.store.geometry import EARTH_RADIUS_M, GeoObject, circle_bbox, circle_polygon, haversine_many
from geoserver.store.index import CELL, COARSE, ShapeBoxes, hav_terms

HALF_EARTH_M = math.pi * EARTH_RADIUS_M  # no two points are further apart
# GEOS locates a point in an area by testing the edges whose latitude span holds it (~27 ns
# each): a search that would test more than this many is refused (about 3 s of CPU). A real
# boundary crosses a scan line a few hundred times at most; 100k random vertices, ~33,000.
MAX_EDGE_TESTS = 100_000_000
Points = Any  # a point index: geoserver.store.index.PointIndex (POINT_INDEX_API)


@dataclass(slots=True)
class Area:
    """A search area. `kind` is box | circle | point | shape; the bbox is always set."""

    kind: str
    minlat: float
    minlon: float
    maxlat: float
    maxlon: float
    lat: float = 0.0
    lon: float = 0.0
    meters: float = 0.0
    shape: Any = None  # shapely geometry for kind "shape"

    def geometry(self) -> Any:
        """The area as a shapely geometry (prepared), for predicates on non-point objects."""
        if self.shape is None:
            if self.kind == "box":
                self.shape = shapely.box(self.minlon, self.minlat, self.maxlon, self.maxlat)
            elif self.kind == "circle":
                self.shape = circle_polygon(self.lat, self.lon, self.meters)
            else:
                self.shape = shapely.Point(self.lon, self.lat)
        shapely.prepare(self.shape)
        return self.shape

    def edges_per_line(self) -> float:
        """About how many edges of a "shape" area one point location tests: the edges a
        scan line at a random latitude within the area crosses (sum of |dy| / height)."""
        parts = shapely.get_parts(self.shape)
        while True:  # flatten Multi* and (nested) GeometryCollections
            flat = shapely.get_parts(parts)
            if len(flat) == len(parts):
                break
            parts = flat
        polygons = shapely.get_type_id(parts) == 3
        lines = np.concatenate([shapely.get_rings(parts[polygons]), parts[~polygons]])
        coords, index = shapely.get_coordinates(lines, return_index=True)
        height = self.maxlat - self.minlat
        if len(coords) < 2 or height <= 0:
            return float(len(coords))
        same_edge = index[1:] == index[:-1]
        return float(np.abs(np.diff(coords[:, 1]))[same_edge].sum()) / height


def check_search_cost(area: Area, locations: int) -> None:
    """Refuse a search of `locations` point locations in a shape area past MAX_EDGE_TESTS."""
    if area.kind != "shape" or not locations:
        return
    tests = locations * area.edges_per_line()
    if tests > MAX_EDGE_TESTS:
        raise CommandError(f"area too complex to search: about {tests:.0f} edge tests for "
                           f"{locations} locations (limit {MAX_EDGE_TESTS})")


def box_area(minlat: float, minlon: float, maxlat: float, maxlon: float) -> Area:
    return Area("box", minlat, minlon, maxlat, maxlon)


def circle_area(lat: float, lon: float, meters: float) -> Area:
    return Area("circle", *circle_bbox(lat, lon, meters), lat=lat, lon=lon, meters=meters)


def point_area(lat: float, lon: float) -> Area:
    return Area("point", lat, lon, lat, lon, lat=lat, lon=lon)


def object_area(obj: GeoObject) -> Area:
    """The area of a stored or given object (WITHIN ... GET / OBJECT)."""
    if obj.kind == "point":
        return point_area(obj.lat, obj.lon)
    assert obj.bbox is not None
    minlon, minlat, maxlon, maxlat = obj.bbox
    return Area("shape", minlat, minlon, maxlat, maxlon, shape=obj.shape())


def _grid_box(minlat: float, minlon: float, maxlat: float,
              maxlon: float) -> tuple[float, float, float, float]:
    """A box safe for the grid: a box that wraps the antimeridian spans all longitudes."""
    if minlon < -180.0 or maxlon > 180.0:
        return minlat, -180.0, maxlat, 180.0
    return minlat, minlon, maxlat, maxlon


# ---- ordered results -------------------------------------------------------------------


class Batch:
    """Ordered candidates: ids (directly, or point-index slots resolved lazily through the
    index's `ids_of`, or through a list of ids by slot copied from it) and optional haversine
    terms `hav` (see `hav_terms`), turned into meters only for the rows a reply shows."""

    __slots__ = ("hav", "names", "slots")

    def __init__(self, names: list[Any], slots: np.ndarray | None = None,
                 hav: np.ndarray | None = None) -> None:
        self.names = names
        self.slots = slots
        self.hav = hav

    def __len__(self) -> int:
        return len(self.names) if self.slots is None else len(self.slots)

    def ids(self, a: int, b: int) -> list[str]:
        if self.slots is None:
            return self.names[a:b]
        names = self.names
        if isinstance(names, list):
            return [names[s] for s in self.slots[a:b].tolist()]
        return names.ids_of(self.slots[a:b])

    def dists(self, a: int, b: int) -> list[float] | None:
        if self.hav is None:
            return None
        return (2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(self.hav[a:b])))).tolist()


class KeysBatch:
    """The ids of a collection in id order (SCAN), positions lo..hi only (the range a MATCH
    prefix allows, as Tile38's ScanRange), sliced without copying the key list."""

    __slots__ = ("hi", "items", "lo", "reverse")

    def __init__(self, items: Any, reverse: bool, lo: int = 0, hi: int | None = None) -> None:
        self.items = items
        self.reverse = reverse
        self.lo, self.hi = lo, len(items) if hi is None else hi

    def __len__(self) -> int:
        return self.hi - self.lo

    def ids(self, a: int, b: int) -> list[str]:
        lo, hi = self.lo, self.hi
        if not self.reverse:
            return list(self.items.islice(min(lo + a, hi), min(lo + b, hi)))
        return list(self.items.islice(max(lo, hi - b), max(lo, hi - a), reverse=True))

    def dists(self, a: int, b: int) -> None:
        return None


class KeyWalk(KeysBatch):
    """KeysBatch for a walk that other clients' writes interleave with (a sliced SCAN): after
    its first read (by position, for CURSOR) it resumes after the last id returned (before it,
    DESC), so an id that lives through the walk is returned once, in order. `len()` is the
    range's size at the start, an upper bound for the collector."""

    __slots__ = ("_last", "prefix")

    def __init__(self, items: Any, reverse: bool, prefix: str, lo: int, hi: int) -> None:
        super().__init__(items, reverse, lo, hi)
        self.prefix = prefix
        self._last: str | None = None

    def ids(self, a: int, b: int) -> list[str]:
        if self._last is None:
            out = super().ids(a, b)
        elif self.reverse:
            it = self.items.irange(maximum=self._last, inclusive=(True, False), reverse=True)
            out = [oid for oid in islice(it, b - a)]
        else:
            it = self.items.irange(minimum=self._last, inclusive=(False, True))
            out = [oid for oid in islice(it, b - a)]
        if self.prefix and out and not out[-1].startswith(self.prefix):
            out = [oid for oid in out if oid.startswith(self.prefix)]
        if out:
            self._last = out[-1]
        return out


def walk_ids(items: Any, prefix: str, step: int = 1024) -> Iterator[str]:
    """The ids of `items` that start with `prefix`, in order, reading the live key list `step`
    ids at a time and resuming after the last id read: safe when writes happen between reads."""
    it = items.irange(minimum=prefix or None)
    while True:
        batch = list(islice(it, step))
        if not batch:
            return
        for oid in batch:
            if not oid.startswith(prefix):
                return
            yield oid
        it = items.irange(minimum=batch[-1], inclusive=(False, True))


class IdOrderHits:
    """WITHIN/INTERSECTS hits in id order, found by walking the collection's ids (kept sorted)
    and keeping those that hit. Sorting every hit costs ~0.5 µs each (half a second for a
    LIMIT 10 over a million points); the walk stops after the rows it is asked for, ~0.15 µs
    per id examined. `ids(a, b)` is read front to back by the collector. When `keys` covers
    only a range of ids (a MATCH prefix), `len()` is an upper bound and the walk ends early."""

    __slots__ = ("_count", "_hit_slots", "_iter", "_keys", "_names", "_pos", "_shape_hits", "_slot_of")

    def __init__(self, keys: Callable[[], Iterator[str]], grid: Points, slots: np.ndarray,
                 shape_ids: list[str], names: list[str | None] | None = None) -> None:
        """`names`: a copy of the grid's ids taken with `slots`, when writes may interleave
        with the walk: a slot then counts as a hit only for the id it held (slots are reused)."""
        self._keys, self._slot_of, self._names = keys, grid.slot, names
        hit = np.zeros(grid.capacity(), dtype=np.uint8)
        hit[slots] = 1
        self._hit_slots = bytearray(hit.tobytes())
        self._shape_hits = set(shape_ids)
        self._count = len(slots) + len(self._shape_hits)
        self._iter: Iterator[str] = self._walk()
        self._pos = 0

    def __len__(self) -> int:
        return self._count

    def _walk(self) -> Iterator[str]:
        slot_of, hit, shapes, names = self._slot_of, self._hit_slots, self._shape_hits, self._names
        if names is not None:
            known = len(names)
            for oid in self._keys():
                slot = slot_of(oid)
                if slot < 0:
                    if oid in shapes:
                        yield oid
                elif slot < known and hit[slot] and names[slot] == oid:
                    yield oid
            return
        for oid in self._keys():
            slot = slot_of(oid)
            if (hit[slot] if slot >= 0 else oid in shapes):
                yield oid

    def ids(self, a: int, b: int) -> list[str]:
        if a < self._pos:  # read again from the start (the collector never does)
            self._iter, self._pos = self._walk(), 0
        for _ in range(a - self._pos):
            next(self._iter, None)
        out = [oid for _, oid in zip(range(b - a), self._iter, strict=False)]
        self._pos = a + len(out)
        return out

    def dists(self, a: int, b: int) -> None:
        return None


def walk_is_cheaper(hits: int, total: int, wanted: int | None) -> bool:
    """Whether walking ids in order beats sorting the hits: the walk examines about
    wanted * total / hits ids (all of them when a filter makes `wanted` unknown: None),
    at ~1/3 of the cost per id of sorting one hit."""
    if hits < 1000:
        return False
    examined = total if wanted is None else wanted * total / hits
    return examined < 3 * hits


# ---- WITHIN / INTERSECTS -------------------------------------------------------------------


def points_in(grid: Points, area: Area) -> np.ndarray:
    """Slots of points inside the area or on its boundary."""
    if not len(grid):
        return np.empty(0, dtype=np.int64)
    box = _grid_box(area.minlat, area.minlon, area.maxlat, area.maxlon)
    if area.kind == "circle":
        slots = grid.candidates_in_box(*box)
        lats, lons = grid.coords(slots)
        return slots[haversine_many(area.lat, area.lon, lats, lons) <= area.meters]
    slots = grid.slots_in_box(*box)
    if area.kind == "shape" and len(slots):
        check_search_cost(area, len(slots))
        lats, lons = grid.coords(slots)
        slots = slots[shapely.intersects_xy(area.geometry(), lons, lats)]
    return slots


def shapes_in(shapes: ShapeBoxes, area: Area, within: bool,
              obj_of: Callable[[str], GeoObject | None]) -> list[str]:
    """Ids of non-point objects inside (WITHIN) or touching (INTERSECTS) the area."""
    return _to_end(shapes_in_steps(shapes, area, within, obj_of))


SHAPES_FIRST = 64  # objects tested in a first step of shapes_in_steps
STEP_SECONDS = 0.002  # what a later step of the *_steps generators aims at


def shapes_in_steps(shapes: ShapeBoxes, area: Area, within: bool,
                    obj_of: Callable[[str], GeoObject | None]) -> Generator[None, None, list[str]]:
    """shapes_in as steps of ~STEP_SECONDS of shapely work (the number of objects a step tests
    adapts to what the last one took): the candidates whose boxes overlap the area's are listed
    at the start, each is tested as it is when its step runs (`obj_of`; gone: not a hit).
    The search is refused, as in one go, once the vertices to locate pass MAX_EDGE_TESTS."""
    if not len(shapes):
        return []
    box = _grid_box(area.minlat, area.minlon, area.maxlat, area.maxlon)
    ids = shapes.ids_overlapping(*box)
    if not ids:
        return []
    geom = area.geometry()
    test = shapely.covered_by if within else shapely.intersects
    out: list[str] = []
    vertices = 0
    a, per = 0, SHAPES_FIRST
    while a < len(ids):
        t = time.perf_counter()
        chunk = ids[a : a + per]
        objs = [obj_of(oid) for oid in chunk]
        arr = np.array([obj.shape() if obj is not None else None for obj in objs], dtype=object)
        vertices += int(shapely.get_num_coordinates(arr).sum())
        check_search_cost(area, vertices)  # each vertex is located
        out.extend(oid for oid, ok in zip(chunk, test(arr, geom).tolist(), strict=True) if ok)
        a += per
        took = time.perf_counter() - t
        per = max(16, min(per * 4, int(per * STEP_SECONDS / took))) if took > 0 else per * 4
        if a < len(ids):
            yield
    return out


def _to_end(steps: Generator[None, None, Any]) -> Any:
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value


# ---- NEARBY ------------------------------------------------------------------------------


def _hav_of(meters: float) -> float:
    return math.sin(min(meters / EARTH_RADIUS_M, math.pi) / 2) ** 2


HAV_STEP = 65_536  # haversine terms computed in a step of nearby_steps (~1.5 ms of numpy)
SORT_STEP = 16_384  # ring members put in order in a step (~2 ms: a mask and a stable argsort)


def nearby_steps(grid: Points, shapes: ShapeBoxes, lat: float, lon: float,
                 meters: float) -> Generator[None, None, Batch]:
    """`nearby` as steps of ~2 ms, for a ring of many objects: the same Batch, nearest first,
    ties in the same order. The candidates' coordinates and the ids of the index's slots are
    copied in the first step (the ring describes the data as it was then); their distances
    are computed HAV_STEP at a time, then put in order one distance band at a time: bands
    bounded by quantiles of a sample, each band's members (in candidate order) stably sorted,
    so their concatenation is the one stable sort of `nearby`."""
    hi = _hav_of(meters)
    slots = grid.candidates_in_box(*_grid_box(*circle_bbox(lat, lon, meters)))
    lats, lons = grid.coords(slots)
    names = grid.names()  # a copy: slots may be reused by later writes
    yield
    h = np.empty(len(slots))
    for a in range(0, len(slots), HAV_STEP):
        h[a : a + HAV_STEP] = hav_terms(lat, lon, lats[a : a + HAV_STEP], lons[a : a + HAV_STEP])
        yield
    keep = np.flatnonzero(h <= hi)
    if len(keep) < len(h):
        slots, h = slots[keep], h[keep]
    if len(shapes):  # points first, then shapes: ties keep that order, as in `_ring`
        sids, sh = _shape_havs(shapes, lat, lon)
        skeep = np.flatnonzero(sh <= hi)
        first = len(names)
        names.extend(sids[i] for i in skeep.tolist())  # names() is a copy: extended in place
        slots = np.concatenate([slots, np.arange(first, first + len(skeep), dtype=slots.dtype)])
        h = np.concatenate([h, sh[skeep]])
    yield
    n = len(h)
    if n <= SORT_STEP:
        order = np.argsort(h, kind="stable")
        return Batch(names, slots[order], h[order])
    sample = np.sort(h[:: max(1, n // 4096)])
    bands = -(-n // SORT_STEP)
    edges = np.unique(sample[[len(sample) * k // bands for k in range(1, bands)]])
    slot_parts, hav_parts = [], []
    low = -np.inf
    for high in [*edges.tolist(), np.inf]:
        yield
        idx = np.flatnonzero((h > low) & (h <= high))
        idx = idx[np.argsort(h[idx], kind="stable")]
        slot_parts.append(slots[idx])
        hav_parts.append(h[idx])
        low = high
    yield
    return Batch(names, np.concatenate(slot_parts), np.concatenate(hav_parts))


def _shape_havs(shapes: ShapeBoxes, lat: float, lon: float) -> tuple[list[str | None], np.ndarray]:
    """Haversine terms from (lat, lon) to every shape's bounding box (0 when inside it)."""
    ids, a = shapes.arrays()
    clat = np.clip(lat, a[:, 1], a[:, 3])
    clon = np.clip(lon, a[:, 0], a[:, 2])
    return ids, hav_terms(lat, lon, clat, clon)


def _ring(grid: Points, lat: float, lon: float, inner: float, outer: float,
          shape_h: tuple[list[str | None], np.ndarray] | None) -> Batch:
    """Everything with inner < distance <= outer (inner < 0 includes 0), ordered by distance."""
    hi = _hav_of(outer)
    lo = _hav_of(inner) if inner >= 0 else -1.0
    slots, h = grid.ring(lat, lon, *_grid_box(*circle_bbox(lat, lon, outer)), lo, hi)
    if shape_h is None:
        return Batch(grid, slots, h)
    sids, sh = shape_h  # points first, then shapes: a stable sort keeps ties in that order
    keep = (sh <= hi) & (sh > lo)
    names = grid.ids_of(slots) + [sids[i] for i in np.flatnonzero(keep)]
    both = np.concatenate([h, sh[keep]])
    order = np.argsort(both, kind="stable")
    return Batch([names[i] for i in order.tolist()], None, both[order])


def nearby(grid: Points, shapes: ShapeBoxes, lat: float, lon: float, meters: float) -> Batch:
    """Every spatial object within `meters`, nearest first."""
    shape_h = _shape_havs(shapes, lat, lon) if len(shapes) else None
    return _ring(grid, lat, lon, -1.0, meters, shape_h)


def knn(grid: Points, shapes: ShapeBoxes, lat: float, lon: float, want: int,
        meters: float | None = None) -> Iterator[Batch]:
    """Every spatial object (within `meters` if given), nearest first, in rings of growing
    radius: a caller that stops after `want` hits only pays for the rings it consumed (a
    LIMIT 10 within 20,000 km no longer sorts the whole collection). The first radius is
    guessed from the grid's density so that a typical query needs one or two rings: points per
    cell of the occupied blocks (per occupied cell would be >= 1 by construction, and guess a
    ~9 km first ring for 1M points over the globe, where 10 and 100 km queries then ran 2-4
    rings; src/core/fastpath.cpp run_nearby makes the same guess)."""
    cap = HALF_EARTH_M * 1.01 if meters is None else meters
    shape_h = _shape_havs(shapes, lat, lon) if len(shapes) else None
    per_cell = len(grid) / max(1, grid.num_blocks() * COARSE * COARSE)
    cell_m = CELL * 111_195.0 * max(0.05, math.cos(math.radians(lat)))
    radius = max(50.0, cell_m * math.sqrt(2.0 * max(want, 1) / (math.pi * max(per_cell, 1e-9))))
    inner = -1.0
    while True:
        outer = min(radius, cap)
        yield _ring(grid, lat, lon, inner, outer, shape_h)
        if outer >= cap or outer >= HALF_EARTH_M:
            return
        inner, radius = outer, radius * 4.0


# ---- area modifiers: BUFFER, CLIPBY, SECTOR ----------------------------------------------


def shape_area(shape: Any) -> Area | None:
    """An area from any shapely geometry (None when it is empty: nothing can be inside)."""
    if shape is None or shape.is_empty:
        return None
    minlon, minlat, maxlon, maxlat = shape.bounds
    return Area("shape", minlat, minlon, maxlat, maxlon, shape=shape)


def buffered(area: Area, meters: float) -> Area | None:
    """The area grown by `meters` (BUFFER): a point or circle stays an exact circle; other
    shapes are buffered in a local equirectangular frame at their mean latitude (exact along
    meridians, within a fraction of a percent across a city-sized area)."""
    if meters <= 0:
        return area
    if area.kind == "point":
        return circle_area(area.lat, area.lon, meters)
    if area.kind == "circle":
        return circle_area(area.lat, area.lon, area.meters + meters)
    k = max(1e-6, math.cos(math.radians((area.minlat + area.maxlat) / 2)))
    flat = shapely.transform(area.geometry(), lambda xy: xy * np.array([k, 1.0]))
    grown = shapely.buffer(flat, math.degrees(meters / EARTH_RADIUS_M), quad_segs=16)
    return shape_area(shapely.transform(grown, lambda xy: xy / np.array([k, 1.0])))


def clipped_by(area: Area, minlat: float, minlon: float, maxlat: float, maxlon: float) -> Area | None:
    """The part of the area inside a rectangle (CLIPBY)."""
    return shape_area(shapely.clip_by_rect(area.geometry(), minlon, minlat, maxlon, maxlat))


def sparse_pick(boxes: list[tuple[str, tuple[float, float, float, float]]],
                rect: tuple[float, float, float, float], depth: int) -> list[str]:
    """SPARSE `depth`: the area's bounding rect (minlon, minlat, maxlon, maxlat) is split into
    4**depth quads, visited as Tile38 does (recursively north-west, north-east, south-west,
    south-east); each quad yields its first candidate not already yielded. `boxes` are the
    candidates in their order (id order here, Tile38's R-tree order there) with their boxes.
    A box spanning more than 1024 quads is placed by its center only."""
    minx, miny, maxx, maxy = rect
    side = 1 << depth
    w = (maxx - minx) or 1.0
    h = (maxy - miny) or 1.0

    def col(x: float) -> int:
        return min(side - 1, max(0, int((x - minx) / w * side)))

    def row(y: float) -> int:  # from the top
        return min(side - 1, max(0, int((maxy - y) / h * side)))

    def key(r: int, c: int) -> int:
        k = 0
        for bit in range(depth - 1, -1, -1):
            k = (k << 2) | (((r >> bit) & 1) << 1) | ((c >> bit) & 1)
        return k

    quads: dict[int, list[str]] = {}
    for oid, (bx0, by0, bx1, by1) in boxes:
        c0, c1, r0, r1 = col(bx0), col(bx1), row(by1), row(by0)
        if (c1 - c0 + 1) * (r1 - r0 + 1) > 1024:
            c0 = c1 = col((bx0 + bx1) / 2)
            r0 = r1 = row((by0 + by1) / 2)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                quads.setdefault(key(r, c), []).append(oid)
    picked: list[str] = []
    seen: set[str] = set()
    for k in sorted(quads):
        for oid in quads[k]:
            if oid not in seen:
                seen.add(oid)
                picked.append(oid)
                break
    return picked
