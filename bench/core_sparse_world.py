"""Sparse world-wide data: NEARBY at 1, 10 and 100 km beside redis-server GEOSEARCH.

    python bench/core_sparse_world.py [--points 1000000] [--cores cpp,nofast] [--repeats 3]
                                      [--no-docs] [--quick]

tile38-benchmark's dataset shape: N points uniform in latitude and longitude over the world
(ids `truckN`; latitudes within redis's GEOADD limit of +-85.05112878 degrees), loaded into
redis-server (GEOADD) and one geoserver per `--cores` entry (cpp, nofast: cpp with
GEOSERVER_FASTPATH=0, python, or
`label@/path/to/_core.so` for another build of the core, e.g. the fixed-grid core of an older
commit; see bench/geo_vs_redis.py). Then, with redis-benchmark
(50 clients, -P 1 and -P 16):

    NEARBY fleet LIMIT 100 IDS POINT <lat> <lon> <r>
                  vs  GEOSEARCH fleet FROMLONLAT <lon> <lat> BYRADIUS <r> m ASC COUNT 100

(the same answer: the nearest 100 within r, nearest first). redis-benchmark draws its
placeholders non-negative from one range, so query positions are uniform in [0, 60) degrees of
latitude and of longitude (`__rand_int__e-7`, -r 600000000); the data is uniform in longitude,
so a quarter of the longitudes is as good as all of them. Servers on CPU 0, the client on
CPU 1; alternating repeats, medians; server CPU µs per op (psutil) is the figure that survives
the other sessions' load on the machine. Writes its table into docs/benchmarks.md unless
--no-docs. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geo_vs_redis import (
    Result,
    call,
    ensure_redis,
    free_port,
    label,
    load,
    machine,
    measure,
    pin,
    start_geoserver,
    start_redis,
    stop,
    write_docs,
)

MAX_LAT = 85.05112878  # redis GEOADD refuses points nearer the poles
BEGIN, END = "<!-- core_sparse_world:begin -->", "<!-- core_sparse_world:end -->"
COORD = "__rand_int__e-7"  # with -r 600000000: [0, 60)
RAND_RANGE = "600000000"
RADII = (1_000, 10_000, 100_000)
TARGET = 0.5


def world(n: int, seed: int = 38) -> list[tuple[str, float, float]]:
    rnd = random.Random(seed)
    return [(f"truck{i}", rnd.uniform(-MAX_LAT, MAX_LAT), rnd.uniform(-180, 180)) for i in range(n)]


def commands(meters: int) -> tuple[list[str], list[str]]:
    geo = ["NEARBY", "fleet", "LIMIT", "100", "IDS", "POINT", COORD, COORD, str(meters)]
    redis = ["GEOSEARCH", "fleet", "FROMLONLAT", COORD, COORD, "BYRADIUS", str(meters), "m",
             "ASC", "COUNT", "100"]
    return geo, redis


def render(results: list[Result], cores: list[str], args: argparse.Namespace, env: str) -> str:
    pinned = "servers on CPU 0, redis-benchmark on CPU 1" if pin(0) else "not pinned"
    lines = [
        f"Run: `python bench/core_sparse_world.py --points {args.points} --repeats {args.repeats}` "
        f"({time.strftime('%Y-%m-%d')}; {args.points:,} points uniform over the world; 50 clients; "
        f"{pinned}; medians of {args.repeats} alternating repeats; requests per run: "
        + ", ".join(f"{m // 1000} km {n:,}" for m, n in zip(RADII, args.per_radius, strict=True)) + ").",
        "",
        f"Machine: {env}.",
        "",
        "geoserver/redis: ops/s ratio, and in brackets the CPU ratio (redis CPU µs per op / "
        "geoserver CPU µs per op).",
        "",
        "| radius | pipeline | redis ops/s (CPU µs/op) | "
        + " | ".join(f"geoserver {c} ops/s (CPU µs/op) | {c}/redis" for c in cores) + " | target |",
        "|---|---:|---:|" + "---:|---:|" * len(cores) + "---:|",
    ]
    for r in results:
        row = [r.workload, f"-P {r.pipeline}", f"{r.med_ops('redis'):,.0f} ({r.med_cpu('redis'):.1f})"]
        for c in cores:
            row += [f"{r.med_ops(c):,.0f} ({r.med_cpu(c):.1f})", f"{r.ratio(c):.2f}x ({r.cpu_ratio(c):.2f}x)"]
        row.append(f"≥ {TARGET}x")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--cores", default="cpp,nofast",
                   help="comma-separated: cpp, nofast (cpp without the fast path), python, "
                        "label@/path/to/_core.so")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    args = p.parse_args()
    args.per_radius = (4_000, 4_000, 2_000) if args.quick else (40_000, 30_000, 20_000)
    specs = args.cores.split(",")
    cores = [label(c) for c in specs]
    ensure_redis()
    env = machine()
    print(env)
    points = world(args.points)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="core_sparse_world-") as tmp:
        workdir = Path(tmp)
        procs: dict[str, tuple[int, subprocess.Popen]] = {}
        try:
            port = free_port()
            procs["redis"] = (port, start_redis(port, workdir, False))
            for spec in specs:
                port = free_port()
                procs[label(spec)] = (port, start_geoserver(port, workdir, False, spec))
            for name, (port, _proc) in procs.items():
                if name == "redis":
                    cmds = [["GEOADD", "fleet", repr(lo), repr(la), i] for i, la, lo in points]
                    probe = ["GEOSEARCH", "fleet", "FROMLONLAT", "30", "30", "BYRADIUS", "100", "km"]
                else:
                    cmds = [["SET", "fleet", i, "POINT", repr(la), repr(lo)] for i, la, lo in points]
                    probe = ["NEARBY", "fleet", "COUNT", "POINT", "30", "30", "100000"]
                took = load(port, cmds)
                hits = call(port, probe).split(b"\r\n", 1)[0].decode().strip()
                print(f"loaded {args.points:,} points into {name}: {took:.1f}s; "
                      f"within 100 km of (30, 30): {hits}", flush=True)
            order = list(procs)
            for meters, n in zip(RADII, args.per_radius, strict=True):
                geo_cmd, redis_cmd = commands(meters)
                for pipeline in (1, 16):
                    res = Result(f"{meters // 1000} km", pipeline)
                    measure(res, procs, order, args.repeats, geo_cmd, redis_cmd, n, RAND_RANGE)
                    results.append(res)
                    each = [f"{c} {res.med_ops(c):>8,.0f}/s {res.med_cpu(c):6.1f} µs "
                            f"{res.ratio(c):.2f}x ({res.cpu_ratio(c):.2f}x cpu)" for c in cores]
                    print(f"{res.workload:>6s} -P {pipeline:<2d} redis {res.med_ops('redis'):>8,.0f}/s "
                          f"{res.med_cpu('redis'):6.1f} µs  " + "  ".join(each), flush=True)
        finally:
            stop(procs)
    section = render(results, cores, args, env)
    print()
    print(section)
    if not args.no_docs:
        write_docs(section, BEGIN, END, "Sparse world-wide data (latest run)")


if __name__ == "__main__":
    main()
