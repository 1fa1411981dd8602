"""Point index comparison behind docs/spatial-index.md: geoserver's PointGrid vs an rtree
(libspatialindex) on 100k points in an ~80 km city box, 1 km radius queries and KNN.

Not run in CI. Needs `pip install rtree` (measurement only; not a project dependency):

    .venv/bin/python bench/index_compare.py [--points 100000] [--queries 5000]
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
from geoserver.store import query
from geoserver.store.geometry import circle_bbox, haversine_many
from geoserver.store.index import PointGrid, ShapeBoxes

LAT0, LON0, SPAN_LAT, SPAN_LON = 33.0, -115.0, 0.72, 0.86  # ~80 x 80 km


def per_op_us(seconds: float, n: int) -> float:
    return seconds / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=5_000)
    ap.add_argument("--radius", type=float, default=1000.0)
    opts = ap.parse_args()
    try:
        from rtree import index as rindex
    except ImportError:
        raise SystemExit("pip install rtree (into the venv, for this measurement only)") from None

    rnd = random.Random(1)
    pts = [(LAT0 + rnd.random() * SPAN_LAT, LON0 + rnd.random() * SPAN_LON) for _ in range(opts.points)]
    ids = [f"p{i}" for i in range(opts.points)]
    centers = [(LAT0 + rnd.random() * SPAN_LAT, LON0 + rnd.random() * SPAN_LON) for _ in range(opts.queries)]
    rows: list[tuple[str, float, float]] = []

    grid = PointGrid()
    t = time.perf_counter()
    for oid, (lat, lon) in zip(ids, pts, strict=True):
        grid.insert(oid, lat, lon)
    grid_insert = per_op_us(time.perf_counter() - t, opts.points)

    rt = rindex.Index()
    t = time.perf_counter()
    for i, (lat, lon) in enumerate(pts):
        rt.insert(i, (lon, lat, lon, lat))
    rt_insert = per_op_us(time.perf_counter() - t, opts.points)
    t = time.perf_counter()
    bulk = rindex.Index(((i, (lon, lat, lon, lat), None) for i, (lat, lon) in enumerate(pts)))
    rt_bulk = per_op_us(time.perf_counter() - t, opts.points)
    del bulk
    lats = np.array([p[0] for p in pts])
    lons = np.array([p[1] for p in pts])
    rows.append(("insert (per point)", grid_insert, rt_insert))

    shapes = ShapeBoxes()
    hits = 0
    t = time.perf_counter()
    for lat, lon in centers:
        batch = query.nearby(grid, shapes, lat, lon, opts.radius)
        hits += len(batch)
        batch.ids(0, 100)
    grid_q = per_op_us(time.perf_counter() - t, opts.queries)

    rt_hits = 0
    t = time.perf_counter()
    for lat, lon in centers:
        minlat, minlon, maxlat, maxlon = circle_bbox(lat, lon, opts.radius)
        cand = np.fromiter(rt.intersection((minlon, minlat, maxlon, maxlat)), dtype=np.int64)
        d = haversine_many(lat, lon, lats[cand], lons[cand])
        keep = d <= opts.radius
        order = np.argsort(d[keep], kind="stable")
        found = cand[keep][order]
        rt_hits += len(found)
        [ids[i] for i in found[:100].tolist()]
    rt_q = per_op_us(time.perf_counter() - t, opts.queries)
    assert hits == rt_hits, (hits, rt_hits)
    rows.append((f"{opts.radius:.0f} m radius query, sorted, first 100 ids", grid_q, rt_q))

    t = time.perf_counter()
    for lat, lon in centers:
        got: list[str] = []
        for batch in query.knn(grid, shapes, lat, lon, 100):  # widen rings until 100 found
            got += batch.ids(0, 100 - len(got))
            if len(got) >= 100:
                break
    grid_knn = per_op_us(time.perf_counter() - t, opts.queries)
    t = time.perf_counter()
    for lat, lon in centers:
        found = list(rt.nearest((lon, lat, lon, lat), 100))  # planar (degree) distance, not geodesic
        [ids[i] for i in found[:100]]
    rt_knn = per_op_us(time.perf_counter() - t, opts.queries)
    rows.append(("KNN 100 nearest ids", grid_knn, rt_knn))

    print(f"{opts.points} points, {opts.queries} queries, ~{hits / opts.queries:.0f} hits per radius query")
    print(f"{'operation':48} {'grid µs':>10} {'rtree µs':>10} {'rtree/grid':>10}")
    for name, g, r in rows:
        print(f"{name:48} {g:10.1f} {r:10.1f} {r / g:10.2f}")
    print(f"{'rtree bulk load (per point, stream)':48} {'':>10} {rt_bulk:10.1f}")


if __name__ == "__main__":
    main()
