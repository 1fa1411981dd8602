"""The compiled point index (geoserver._core.PointGrid) against its pure-Python twin
(geoserver.store.index.PointGrid): random sequences of inserts, moves, removes and box, ring and
circle queries, near the poles, the antimeridian, cell edges and in one crowded cell, with ids
that are not UTF-8 (surrogateescape). Every answer is compared exactly (slots, their order, ids,
haversine terms), and so are the query layer's NEARBY / WITHIN batches built on each index.

Run under AddressSanitizer and UndefinedBehaviorSanitizer by bench/sanitize_core.sh."""

from __future__ import annotations

import os

import numpy as np
import pytest
from geoserver.store import index, query
from geoserver.store.index import POINT_INDEX_API, PointGrid
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

core = pytest.importorskip("geoserver._core") if index._core is None else index._core

IDS = ["a", "b", "truck1", "truck2", "", "é", "\U0001f69a", "x" * 40,
       b"\xff\xfe".decode("utf-8", "surrogateescape"), b"id\x00\x80".decode("utf-8", "surrogateescape"),
       "c", "d"]

lats = st.one_of(
    st.floats(-90, 90),
    st.floats(89.9, 90), st.floats(-90, -89.9),  # the poles
    st.floats(33.0, 33.02),  # a city: a few crowded cells
    st.sampled_from([-90.0, 90.0, 0.0, 33.0, 33.01, -0.01, 89.99]),  # cell edges
)
lons = st.one_of(
    st.floats(-180, 180),
    st.floats(179.9, 180), st.floats(-180, -179.9),  # the antimeridian
    st.floats(-115.02, -115.0),
    st.sampled_from([-180.0, 180.0, 0.0, -115.0, -115.01, 179.99, -0.01]),
)
meters = st.one_of(st.floats(0, 5_000), st.floats(0, 25_000_000), st.sampled_from([0.0, 1000.0]))

ops = st.lists(st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(IDS), lats, lons),
    st.tuples(st.just("insert"), st.sampled_from(IDS), lats, lons),
    st.tuples(st.just("move"), st.sampled_from(IDS), st.floats(-0.02, 0.02), st.floats(-0.02, 0.02)),
    st.tuples(st.just("remove"), st.sampled_from(IDS)),
    st.tuples(st.just("box"), lats, lons, lats, lons),
    st.tuples(st.just("ring"), lats, lons, meters, meters),
    st.tuples(st.just("circle"), lats, lons, meters),
), max_size=60)


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.tolist() == b.tolist()


def compare_state(c, p, ids: list[str]) -> None:
    assert len(c) == len(p)
    assert c.capacity() == p.capacity()
    assert c.num_cells() == p.num_cells()
    assert c.names() == p.names()
    assert [c.slot(oid) for oid in ids] == [p.slot(oid) for oid in ids]
    assert [c.point(oid) for oid in ids] == [p.point(oid) for oid in ids]
    assert c.bounds() == p.bounds()
    live = np.array([s for s, oid in enumerate(p.names()) if oid is not None], dtype=np.int64)
    assert c.ids_of(live) == p.ids_of(live)
    for x, y in zip(c.coords(live), p.coords(live), strict=True):
        same(x, y)


def batch_rows(batch: query.Batch) -> tuple[list[str], list[float] | None]:
    return batch.ids(0, len(batch)), batch.dists(0, len(batch))


def run(sequence: list[tuple], ids: list[str] = IDS, check_every: int = 1) -> None:
    """Apply the operations to both, compare every answer, and their whole state after every
    `check_every`-th operation and at the end."""
    c, p = core.PointGrid(), PointGrid()
    where: dict[str, tuple[float, float]] = {}
    for step, op in enumerate(sequence):
        kind = op[0]
        if kind in ("insert", "move"):
            oid, lat, lon = op[1:]
            if kind == "move":  # a small step from where it is: often within its cell
                base = where.get(oid, (33.005, -115.005))
                lat, lon = max(-90.0, min(90.0, base[0] + lat)), max(-180.0, min(180.0, base[1] + lon))
            c.insert(oid, lat, lon)
            p.insert(oid, lat, lon)
            where[oid] = (lat, lon)
        elif kind == "remove":
            c.remove(op[1])
            p.remove(op[1])
            where.pop(op[1], None)
        elif kind == "box":
            minlat, minlon = min(op[1], op[3]), min(op[2], op[4])
            maxlat, maxlon = max(op[1], op[3]), max(op[2], op[4])
            same(c.candidates_in_box(minlat, minlon, maxlat, maxlon),
                 p.candidates_in_box(minlat, minlon, maxlat, maxlon))
            same(c.slots_in_box(minlat, minlon, maxlat, maxlon),
                 p.slots_in_box(minlat, minlon, maxlat, maxlon))
            area = query.box_area(minlat, minlon, maxlat, maxlon)
            same(query.points_in(c, area), query.points_in(p, area))
        elif kind == "ring":
            lat, lon, m1, m2 = op[1:]
            inner, outer = (min(m1, m2), max(m1, m2)) if m1 != m2 else (-1.0, m1)
            hi, lo = query._hav_of(outer), query._hav_of(inner) if inner >= 0 else -1.0
            box = query._grid_box(*query.circle_bbox(lat, lon, outer))
            (cs, ch), (ps, ph) = c.ring(lat, lon, *box, lo, hi), p.ring(lat, lon, *box, lo, hi)
            same(cs, ps)
            same(ch, ph)
            assert batch_rows(query.nearby(c, index.ShapeBoxes(), lat, lon, outer)) == \
                batch_rows(query.nearby(p, index.ShapeBoxes(), lat, lon, outer))
            kc = [batch_rows(b) for b in query.knn(c, index.ShapeBoxes(), lat, lon, 3, outer)]
            kp = [batch_rows(b) for b in query.knn(p, index.ShapeBoxes(), lat, lon, 3, outer)]
            assert kc == kp
        else:
            area = query.circle_area(op[1], op[2], op[3])
            same(query.points_in(c, area), query.points_in(p, area))
        if step % check_every == 0:
            compare_state(c, p, ids)
    compare_state(c, p, ids)


def test_both_implement_the_interface() -> None:
    for name in POINT_INDEX_API:
        assert hasattr(core.PointGrid, name) and hasattr(PointGrid, name), name


EXAMPLES = int(os.environ.get("GEOSERVER_DIFF_EXAMPLES", "300"))  # bench/sanitize_core.sh asks for more


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_core_matches_python_twin(sequence: list[tuple]) -> None:
    run(sequence)


def test_many_points_in_one_cell_and_slot_reuse() -> None:
    """Swap-removal in a crowded bucket, the free list, table growth past its first size."""
    rnd = np.random.default_rng(7)
    sequence: list[tuple] = []
    for i in range(3000):
        oid = f"p{rnd.integers(0, 400)}"
        r = rnd.random()
        if r < 0.6:
            sequence.append(("insert", oid, 33.0 + rnd.random() * 0.005, -115.0 - rnd.random() * 0.005))
        elif r < 0.85:
            sequence.append(("remove", oid))
        elif i % 10 == 0:
            sequence.append(("ring", 33.002, -115.002, float(rnd.random() * 800), -1.0))
    run(sequence, [f"p{i}" for i in range(400)])


def world_sequence(seed: int, points: int, queries: int) -> list[tuple]:
    """Points uniform over the world (tile38-benchmark's shape; most cells hold one point or
    none), some removed and moved, then boxes and rings of 1 to 1,000 km: boxes of many cells
    that take the blocks' path, and at the poles and the antimeridian."""
    rnd = np.random.default_rng(seed)
    sequence: list[tuple] = []
    for i in range(points):
        sequence.append(("insert", f"w{i}", float(rnd.uniform(-90, 90)), float(rnd.uniform(-180, 180))))
    for _ in range(points // 10):
        sequence.append(("remove", f"w{rnd.integers(0, points)}"))
        sequence.append(("insert", f"w{rnd.integers(0, points)}", float(rnd.uniform(-90, 90)),
                         float(rnd.uniform(-180, 180))))
    centres = [(float(rnd.uniform(-90, 90)), float(rnd.uniform(-180, 180))) for _ in range(queries)]
    centres += [(89.95, 10.0), (-89.95, -10.0), (0.0, 179.95), (10.0, -179.95)]
    for lat, lon in centres:
        m = float(rnd.choice([1_000.0, 10_000.0, 100_000.0, 1_000_000.0]))
        sequence.append(("ring", lat, lon, m, -1.0))
        sequence.append(("ring", lat, lon, m / 4, m))
        sequence.append(("circle", lat, lon, m))
        d = m / 111_000.0
        sequence.append(("box", max(-90.0, lat - d), max(-180.0, lon - d), min(90.0, lat + d),
                         min(180.0, lon + d)))
    return sequence


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sparse_world_takes_the_blocks_path_identically(seed: int) -> None:
    """Sparse world-wide data: box candidates via the blocks' occupied-cell lists (boxes of
    thousands of mostly empty cells), cells leaving and entering blocks as points move."""
    run(world_sequence(seed, 3000, 25), ids=[f"w{i}" for i in range(0, 3000, 7)], check_every=97)


def test_blocks_path_returns_the_cells_of_the_box() -> None:
    """The blocks' path yields exactly the slots of the cells the box touches (those a probe
    of every cell finds), and is the one taken: a 2 degree box over sparse data."""
    rnd = np.random.default_rng(11)
    g = PointGrid()
    for i in range(50_000):
        g.insert(f"p{i}", float(rnd.uniform(-30, 30)), float(rnd.uniform(-180, 180)))
    (ay, ax), (by, bx) = index._cell(10.0, 20.0), index._cell(12.0, 22.0)
    ncells = (by - ay + 1) * (bx - ax + 1)
    s = index.COARSE_SHIFT
    occupied = sum(len(g.blocks.get(index._key(r, c), ())) for r in range(ay >> s, (by >> s) + 1)
                   for c in range(ax >> s, (bx >> s) + 1))
    assert index.FINE_PROBES < ncells <= g.num_cells() and occupied < ncells  # the blocks' path
    got = g.candidates_in_box(10.0, 20.0, 12.0, 22.0)
    probed = [slot for slot in range(g.capacity()) if g.ids[slot] is not None
              and ay <= index._cell(g.lats[slot], g.lons[slot])[0] <= by
              and ax <= index._cell(g.lats[slot], g.lons[slot])[1] <= bx]
    assert sorted(got.tolist()) == sorted(probed) and len(got) > 0
    c = core.PointGrid()
    for oid, la, lo in zip(g.names(), g.lats, g.lons, strict=False):
        c.insert(oid, float(la), float(lo))
    same(c.candidates_in_box(10.0, 20.0, 12.0, 22.0), got)


def test_bad_input() -> None:
    g = core.PointGrid()
    with pytest.raises(ValueError):
        g.insert("a", float("nan"), 0.0)
    with pytest.raises(TypeError):
        g.insert(b"a", 0.0, 0.0)
    with pytest.raises(IndexError):
        g.ids_of(np.array([0], dtype=np.int64))
    g.insert("a", 1e300, -1e300)  # beyond any valid coordinate: clamped for the cell, kept as given
    assert g.coords(np.array([0]))[0].tolist() == [1e300] and len(g.slots_in_box(-90, -180, 90, 180)) == 0
    assert len(g) == 1 and g.slot("a") == 0 and g.slot("b") == -1
