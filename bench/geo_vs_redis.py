"""geoserver vs redis-server, side by side, with the same client (redis-benchmark).

    python bench/geo_vs_redis.py [--quick] [--aof] [--no-docs]

Starts geoserver and a real redis-server (Debian package `redis-server`, installed with
apt-get when missing) on free 127.0.0.1 ports, without persistence (or both with AOF
everysec: --aof), loads the same 100k random points of an ~80 km city box into both and runs:

    SET fleet <id> POINT <lat> <lon>                   vs  GEOADD fleet <lon> <lat> <id>
    NEARBY fleet LIMIT 100 IDS POINT <lat> <lon> 1000
                                  vs  GEOSEARCH fleet FROMLONLAT <lon> <lat> BYRADIUS 1 km

with 50 clients, unpipelined (-P 1) and pipelined (-P 16). redis-benchmark replaces each
`__rand_int__` with its own random 12-digit number below -r (an `int`, drawn with the 31-bit
random(), so a placeholder can only vary the low digits). `__rand_int__e-9` with
-r 720000000 is therefore a coordinate in [0, 0.72): the city box is 0..0.72 N, 0..0.72 E
(~80 km x 80 km at the equator), where the 100k points are loaded too (~50 points within 1 km
of a random position). Ids are `__rand_int__`, so SET mostly inserts new objects, as GEOADD does.
NEARBY runs before SET so both searches see the same 100k points.

Prints ops/s and the ratio geoserver/redis and, unless --no-docs, writes the table with a
machine description into docs/benchmarks.md. A benchmark, not a test: it never fails CI.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import platform
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- geo_vs_redis:begin -->", "<!-- geo_vs_redis:end -->"

MIN_LAT, MIN_LON, SPAN = 0.0, 0.0, 0.72  # the box `__rand_int__e-9` covers with RAND_RANGE
RAND_RANGE = "720000000"  # placeholders 000000000000..000719999999; x 1e-9 -> [0, 0.72)
COORD = "__rand_int__e-9"
POINTS = 100_000
CLIENTS = 50
TARGETS = {("SET", 1): 0.8, ("NEARBY", 1): 0.5, ("SET", 16): 0.3, ("NEARBY", 16): 0.3}

WORKLOADS = {
    "NEARBY": (
        ["NEARBY", "fleet", "LIMIT", "100", "IDS", "POINT", COORD, COORD, "1000"],
        ["GEOSEARCH", "fleet", "FROMLONLAT", COORD, COORD, "BYRADIUS", "1", "km"],
    ),
    "SET": (
        ["SET", "fleet", "__rand_int__", "POINT", COORD, COORD],
        ["GEOADD", "fleet", COORD, COORD, "__rand_int__"],
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_redis() -> None:
    """Install the Debian package (redis-server + redis-benchmark) when missing."""
    if shutil.which("redis-server") and shutil.which("redis-benchmark"):
        return
    print("redis-server not found: installing the Debian package with apt-get ...", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "redis-server"], check=True, env=env)
    if not (shutil.which("redis-server") and shutil.which("redis-benchmark")):
        raise SystemExit("apt-get installed redis-server but redis-server/redis-benchmark are not on PATH")


def wait_port(port: int, proc: subprocess.Popen, name: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{name} did not start on port {port}")


def start_geoserver(port: int, workdir: Path, aof: bool) -> subprocess.Popen:
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    cmd = [sys.executable, "-m", "geoserver", "--host", "127.0.0.1", "--port", str(port),
           "--dir", str(workdir / "geo"), "-q", *persistence]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(workdir / "geo.log", "wb"))  # noqa: SIM115
    wait_port(port, proc, "geoserver")
    return proc


def start_redis(port: int, workdir: Path, aof: bool) -> subprocess.Popen:
    (workdir / "redis").mkdir(exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
           "--dir", str(workdir / "redis"), "--daemonize", "no", "--protected-mode", "no", *persistence]
    proc = subprocess.Popen(cmd, stdout=open(workdir / "redis.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    wait_port(port, proc, "redis-server")
    return proc


def encode(args: list[str]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def call(port: int, args: list[str]) -> bytes:
    """One command, one reply line (enough for the probes here)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode(args))
        return s.recv(1 << 16)


def load(port: int, commands: list[list[str]]) -> float:
    """Pipelined load in batches of 5000 over one connection; returns seconds."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        for i in range(0, len(commands), 5000):
            batch = commands[i : i + 5000]
            s.sendall(b"".join(encode(c) for c in batch))
            seen = 0
            buf = b""
            while seen < len(batch):
                buf += s.recv(1 << 20)
                lines = buf.split(b"\r\n")
                buf = lines.pop()
                for line in lines:
                    if line.startswith(b"-"):
                        raise SystemExit(f"load failed: {line.decode()}")
                    seen += 1
    return time.perf_counter() - started


def dataset(n: int, seed: int = 38) -> list[tuple[str, float, float]]:
    rnd = random.Random(seed)
    return [(f"truck{i}", MIN_LAT + rnd.random() * SPAN, MIN_LON + rnd.random() * SPAN) for i in range(n)]


def benchmark(port: int, command: list[str], pipeline: int, requests: int) -> float:
    """ops/s reported by redis-benchmark for one command."""
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS),
           "-n", str(requests), "-P", str(pipeline), "-r", RAND_RANGE, "--csv", *command]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    rows = [r for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"]
    if out.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed ({out.returncode}): "
                           f"{out.stdout[-500:]} {out.stderr[-500:]}")
    return float(rows[-1][1])


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    words = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    rv = next((w.split("=", 1)[1] for w in words if w.startswith("v=")), "?")
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return (f"{cpu}, {os.cpu_count()} CPUs{mem}; {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()} ({loop}); redis-server {rv}; "
            f"redis-benchmark and both servers on the same machine")


@dataclass
class Result:
    workload: str
    pipeline: int
    geo: float | None
    redis: float
    note: str = ""

    @property
    def ratio(self) -> float | None:
        return self.geo / self.redis if self.geo and self.redis else None


def render(results: list[Result], args: argparse.Namespace, env: str) -> str:
    mode = "AOF everysec for both" if args.aof else "no persistence for both"
    lines = [
        f"Run: `python bench/geo_vs_redis.py{' --quick' if args.quick else ''}"
        f"{' --aof' if args.aof else ''}` "
        f"({time.strftime('%Y-%m-%d')}; {mode}; {POINTS // 1000}k points loaded; {CLIENTS} clients; "
        f"{args.requests} requests per SET run, {args.nearby_requests} per NEARBY run).",
        "",
        f"Machine: {env}.",
        "",
        "| workload | pipeline | geoserver ops/s | redis ops/s | geoserver/redis | target |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        target = TARGETS.get((r.workload, r.pipeline))
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else "-"
        verdict = "" if r.ratio is None or target is None else (" ok" if r.ratio >= target else " below")
        geo = f"{r.geo:,.0f}" if r.geo else (r.note or "-")
        lines.append(f"| {r.workload} | -P {r.pipeline} | {geo} | {r.redis:,.0f} | {ratio} | "
                     f"≥ {target}x{verdict} |")
    return "\n".join(lines) + "\n"


def write_docs(section: str) -> None:
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section}{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## geoserver vs redis-server (latest run)\n\n" + block + "\n"
    DOCS.write_text(text)
    print(f"wrote {DOCS.relative_to(REPO)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer requests (a smoke run, ~1 minute)")
    p.add_argument("--aof", action="store_true", help="both servers with AOF, fsync everysec")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--requests", type=int, default=None, help="requests per SET run")
    p.add_argument("--nearby-requests", type=int, default=None, help="requests per NEARBY run")
    args = p.parse_args()
    args.requests = args.requests or (20_000 if args.quick else 200_000)
    args.nearby_requests = args.nearby_requests or (10_000 if args.quick else 60_000)

    ensure_redis()
    env = machine()
    print(env)
    points = dataset(POINTS)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="geo_vs_redis-") as tmp:
        workdir = Path(tmp)
        geo_port, redis_port = free_port(), free_port()
        geo = start_geoserver(geo_port, workdir, args.aof)
        red = start_redis(redis_port, workdir, args.aof)
        try:
            t_geo = load(geo_port, [["SET", "fleet", i, "POINT", repr(la), repr(lo)] for i, la, lo in points])
            t_red = load(redis_port, [["GEOADD", "fleet", repr(lo), repr(la), i] for i, la, lo in points])
            print(f"loaded {POINTS} points: geoserver {t_geo:.2f}s, redis {t_red:.2f}s")
            probe = call(geo_port, ["NEARBY", "fleet", "COUNT", "POINT", "0.36", "0.36", "1000"])
            nearby_ok = not probe.startswith(b"-")
            if nearby_ok:
                hits = call(redis_port, ["GEOSEARCH", "fleet", "FROMLONLAT", "0.36", "0.36",
                                         "BYRADIUS", "1", "km"]).split(b"\r\n", 1)[0].decode()
                print(f"hits within 1 km of the box center: geoserver {probe.decode().strip()}, "
                      f"redis {hits}")
            else:
                print(f"NEARBY not available in this geoserver yet: {probe.decode(errors='replace').strip()}")
            for name in ("NEARBY", "SET"):
                geo_cmd, redis_cmd = WORKLOADS[name]
                n = args.nearby_requests if name == "NEARBY" else args.requests
                for pipeline in (1, 16):
                    r_ops = benchmark(redis_port, redis_cmd, pipeline, n)
                    g_ops: float | None = None
                    note = ""
                    if name == "SET" or nearby_ok:
                        g_ops = benchmark(geo_port, geo_cmd, pipeline, n)
                    else:
                        note = "not implemented yet"
                    res = Result(name, pipeline, g_ops, r_ops, note)
                    results.append(res)
                    ratio = f"{res.ratio:.2f}x" if res.ratio is not None else "-"
                    print(f"{name:7s} -P {pipeline:<2d} geoserver {g_ops or 0:>10,.0f} ops/s   "
                          f"redis {r_ops:>10,.0f} ops/s   ratio {ratio}", flush=True)
        finally:
            for proc in (geo, red):
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    section = render(results, args, env)
    print()
    print(section)
    if not args.no_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
