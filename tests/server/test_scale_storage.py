"""The compiled point index's storage (each cell's points contiguous in its bucket, slots pointing
at them) against the pure-Python twin, on the cases where storage order and slot order part: many
points on a few exact duplicate coordinates (ties in the haversine term) spread over several
cells, loaded in shuffled order, removed, re-inserted and moved, so that buckets are reordered by
swap-removal and freed slots are reused. Every answer is compared exactly, including the order of
ties in a box of more cells than are occupied ("every live slot in slot order"), which the core
reads in storage order and must return as the twin does."""

from __future__ import annotations

import random

import numpy as np
import pytest
from geoserver.store import index
from geoserver.store.index import PointGrid

core = pytest.importorskip("geoserver._core") if index._core is None else index._core

# A few exact points in different cells (and two in one cell), each shared by many ids: ties.
SPOTS = [(33.0, -115.0), (33.005, -115.005), (33.021, -115.0), (33.0, -114.97), (-0.01, 179.99),
         (0.0, -180.0), (33.0049, -115.0049)]
HUGE = (-90.0, -180.0, 90.0, 180.0)  # covers more cells than are occupied


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.tolist() == b.tolist()


def check(c, p, ids: list[str], rnd: random.Random) -> None:
    assert len(c) == len(p) and c.capacity() == p.capacity() and c.num_cells() == p.num_cells()
    assert c.names() == p.names() and c.bounds() == p.bounds()
    assert [c.point(i) for i in ids] == [p.point(i) for i in ids]
    live = np.array([s for s, oid in enumerate(p.names()) if oid is not None], dtype=np.int64)
    for x, y in zip(c.coords(live), p.coords(live), strict=True):
        same(x, y)
    boxes = [HUGE, (32.9, -115.1, 33.1, -114.9), (33.0, -115.0, 33.0, -115.0), (-1.0, 179.0, 1.0, 180.0)]
    for _ in range(3):
        lat, lon = rnd.choice(SPOTS)
        d = rnd.choice([0.001, 0.01, 0.05])
        boxes.append((lat - d, lon - d, lat + d, lon + d))
    for box in boxes:
        same(c.candidates_in_box(*box), p.candidates_in_box(*box))
        same(c.slots_in_box(*box), p.slots_in_box(*box))
        for lat, lon in SPOTS[:3]:
            for lo, hi in ((-1.0, 1.0), (-1.0, 1e-9), (0.0, 1e-8), (1e-12, 1.0)):
                (cs, ch), (ps, ph) = c.ring(lat, lon, *box, lo, hi), p.ring(lat, lon, *box, lo, hi)
                same(cs, ps)
                same(ch, ph)


@pytest.mark.parametrize("seed", range(6))
def test_duplicates_reordered_buckets(seed: int) -> None:
    rnd = random.Random(seed)
    c, p = core.PointGrid(), PointGrid()
    ids = [f"truck{i}" for i in range(300)]
    order = ids[:]
    rnd.shuffle(order)
    for oid in order:
        lat, lon = rnd.choice(SPOTS)
        c.insert(oid, lat, lon)
        p.insert(oid, lat, lon)
    check(c, p, ids, rnd)
    for _ in range(4):
        for oid in rnd.sample(ids, 120):  # removes reorder buckets, free slots are reused LIFO
            c.remove(oid)
            p.remove(oid)
        check(c, p, ids, rnd)
        for oid in rnd.sample(ids, 150):  # inserts, moves within a cell and across cells
            if rnd.random() < 0.3 and p.point(oid) is not None:
                lat, lon = p.point(oid)
                lat, lon = lat + rnd.choice([0.0, 1e-6, 0.002]), lon
            else:
                lat, lon = rnd.choice(SPOTS)
            c.insert(oid, lat, lon)
            p.insert(oid, lat, lon)
        check(c, p, ids, rnd)


def test_crowded_cell_grows_empties_and_is_reused() -> None:
    """One cell's bucket through many reallocations, emptied (its pool entry freed) and refilled."""
    rnd = random.Random(7)
    c, p = core.PointGrid(), PointGrid()
    ids = [f"p{i}" for i in range(3000)]
    for oid in ids:
        lat, lon = 10.0 + rnd.random() * 0.0099, 20.0 + rnd.random() * 0.0099
        c.insert(oid, lat, lon)
        p.insert(oid, lat, lon)
    check(c, p, ids[:50], rnd)
    for oid in rnd.sample(ids, len(ids)):
        c.remove(oid)
        p.remove(oid)
    assert len(c) == 0 and c.num_cells() == 0 and c.bounds() is None
    for oid in ids[:500]:
        lat, lon = rnd.choice([(10.005, 20.005), (10.015, 20.005), (10.005, 20.0151)])
        c.insert(oid, lat, lon)
        p.insert(oid, lat, lon)
    check(c, p, ids[:500], rnd)
