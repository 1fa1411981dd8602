"""Pathological polygons of issue 9: how long SET and WITHIN/INTERSECTS with them take, and
what a canary client waits meanwhile.

    python bench/geojson_pathological.py [--baseline-src DIR] [--only NAME ...] [--points N]

Starts a real geoserver with N random points and 100 small polygons in [-10, 10]², then for
each polygon: `SET shapes <name> OBJECT <polygon>`, and `WITHIN pts COUNT OBJECT <polygon>`,
`INTERSECTS pts COUNT OBJECT <polygon>`, each given WAIT seconds (">" means it was given up
and the server restarted). `--baseline-src DIR` runs the same against another checkout (the
commit before the change: `git archive <commit> server | tar -x -C DIR`). Not a test.
"""

from __future__ import annotations

import argparse
import math
import random
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "server"))

from baseline import baseline_env  # noqa: E402
from canary import Canary  # noqa: E402
from helpers import GeoServer, _encode  # noqa: E402

WAIT = 60.0


def random_ring(n: int) -> list[list[float]]:
    """n random vertices: ~n²/4 self-crossings, the worst case for repairing."""
    rng = random.Random(n)
    pts = [[rng.uniform(-10, 10), rng.uniform(-10, 10)] for _ in range(n)]
    return [*pts, pts[0]]


def star_ring(n: int, windings: int = 7) -> list[list[float]]:
    pts = []
    for i in range(n):
        a = 2 * math.pi * i / n * windings
        r = 6.0 if i % 2 else 9.0
        pts.append([r * math.cos(a), r * math.sin(a)])
    return [*pts, pts[0]]


def spiral_ring(turns: int) -> list[list[float]]:
    """A valid polygon (a thin square spiral turned 45°) whose validity check is quadratic in
    GEOS: every edge's envelope overlaps most others."""
    out, back = [], []
    x = y = 0.0
    step = 0.0
    dirs = [(1, 0), (0, 1), (-1, 0), (0, -1)]
    for i in range(turns):
        step += 1.0
        dx, dy = dirs[i % 4]
        x, y = x + dx * step, y + dy * step
        out.append((x, y))
        back.append((x + 0.3 * (dy - dx), y + 0.3 * (-dx - dy)))
    scale = 9.0 / (step * 0.75)
    c = s = math.sqrt(0.5)
    ring = [[(px * c - py * s) * scale, (px * s + py * c) * scale] for px, py in out + back[::-1]]
    return [*ring, ring[0]]


CASES: dict[str, Callable[[], list[list[float]]]] = {
    "random 1000 (self-intersecting)": lambda: random_ring(1000),
    "random 4000 (self-intersecting)": lambda: random_ring(4000),
    "random 100k (self-intersecting)": lambda: random_ring(100_000),
    "star 100k, 7 windings": lambda: star_ring(100_000),
    "square spiral 20k (valid)": lambda: spiral_ring(10_000),
}


def timed(port: int, args: list[object]) -> tuple[float, str]:
    """Seconds until the reply (or WAIT), and its first bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        start = time.perf_counter()
        sock.sendall(_encode(list(args)))
        try:
            data = sock.recv(200)
        except TimeoutError:
            return math.inf, "no reply"
        return time.perf_counter() - start, data.decode("latin-1").replace("\r\n", " ")[:40]


def seed(server: GeoServer, points: int) -> None:
    rng = random.Random(1)
    pipe = server.client().pipeline(transaction=False)
    for i in range(points):
        pipe.execute_command("SET", "pts", f"p{i}", "POINT", rng.uniform(-10, 10), rng.uniform(-10, 10))
    for i in range(100):
        x, y = rng.uniform(-10, 9), rng.uniform(-10, 9)
        box = [[x, y], [x + 0.5, y], [x + 0.5, y + 0.5], [x, y + 0.5], [x, y]]
        pipe.execute_command("SET", "pts", f"s{i}", "OBJECT",
                             orjson.dumps({"type": "Polygon", "coordinates": [box]}))
    pipe.execute()


def run(label: str, env: dict[str, str], names: list[str], points: int) -> list[tuple[str, ...]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        n = 0
        server = GeoServer(Path(tmp) / "d0", env=env).start()
        seed(server, points)
        try:
            for name in names:
                geojson = orjson.dumps({"type": "Polygon", "coordinates": [CASES[name]()]})
                figures = []
                with Canary(server.port) as canary:
                    for args in (["SET", "shapes", "x", "OBJECT", geojson],
                                 ["WITHIN", "pts", "COUNT", "OBJECT", geojson],
                                 ["INTERSECTS", "pts", "COUNT", "OBJECT", geojson]):
                        seconds, reply = timed(server.port, args)
                        figures.append((seconds, reply))
                        if seconds == math.inf:
                            break
                worst = canary.worst * 1000
                cells = [f"> {WAIT:.0f} s" if s == math.inf else f"{s:.2f} s" for s, _ in figures]
                cells += ["-"] * (3 - len(cells))
                rows.append((name, label, *cells, f"{worst:.0f}", figures[0][1]))
                print(f"{label:9} {name:34} SET {cells[0]:>8}  WITHIN {cells[1]:>8}  "
                      f"INTERSECTS {cells[2]:>8}  canary worst {worst:8.0f} ms  {figures[0][1]}", flush=True)
                if any(s == math.inf for s, _ in figures):
                    server.kill9()
                    n += 1
                    server = GeoServer(Path(tmp) / f"d{n}", env=env).start()
                    seed(server, points)
        finally:
            server.kill9()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="another checkout to run side by side")
    parser.add_argument("--only", nargs="*", default=list(CASES), help="case names to run")
    parser.add_argument("--points", type=int, default=10_000, help="points in the searched key")
    args = parser.parse_args()
    baseline = baseline_env(parser, args.baseline_src) if args.baseline_src else None
    rows = run("now", {}, args.only, args.points)
    if baseline is not None:
        rows += run("baseline", baseline, args.only, args.points)
    head = f"| polygon | build | SET | WITHIN {args.points} points | INTERSECTS | canary worst ms | reply |"
    print("\n" + head)
    print("|---|---|---:|---:|---:|---:|---|")
    for row in sorted(rows, key=lambda r: (list(CASES).index(r[0]), r[1])):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
