"""geoserver vs redis-server, side by side, with the same client (redis-benchmark).

    python bench/geo_vs_redis.py [--quick] [--aof] [--no-docs] [--cores cpp,python] [--repeats 3]
                                 [--baseline-src DIR]

Starts geoserver and a real redis-server (Debian package `redis-server`, installed with
apt-get when missing) on free 127.0.0.1 ports, without persistence (or both with AOF
everysec: --aof), loads the same 100k random points of an ~80 km city box into both and runs:

    SET fleet <id> POINT <lat> <lon>                   vs  GEOADD fleet <lon> <lat> <id>
    NEARBY fleet LIMIT 100 IDS POINT <lat> <lon> 1000
                                  vs  GEOSEARCH fleet FROMLONLAT <lon> <lat> BYRADIUS 1 km
    NEARBY ... OBJECTS ... (OBJECTS)                   vs  GEOSEARCH ... WITHCOORD
    GET gfleet <id> POINT                              vs  GEOPOS gfleet <id>
    SCAN gfleet LIMIT 100 (SCAN)                       vs  ZRANGE gfleet 0 99 WITHSCORES
    SET fleet <id> FIELD speed 55 FIELD heading 270 POINT <lat> <lon>   (SETFIELDS, by name only)
                                                       vs  GEOADD fleet <lon> <lat> <id>
    FSET gfleet <id> speed <n> (FSET, by name only)    vs  HSET <id> speed <n>

with 50 clients, unpipelined (-P 1) and pipelined (-P 16). redis-benchmark replaces each
`__rand_int__` with its own random 12-digit number below -r (an `int`, drawn with the 31-bit
random(), so a placeholder can only vary the low digits). `__rand_int__e-9` with
-r 720000000 is therefore a coordinate in [0, 0.72): the city box is 0..0.72 N, 0..0.72 E
(~80 km x 80 km at the equator), where the 100k points are loaded too (~50 points within 1 km
of a random position). Ids are `__rand_int__`, so SET mostly inserts new objects, as GEOADD does.
The searches run before SET so that they see the same 100k points (`--workloads` picks some).

One geoserver runs per `--cores` entry (default `cpp,nofast`: the compiled core with and without
the fast path for whole commands, GEOSERVER_FASTPATH=0; `python`: the numpy twin of the point
index), beside one redis-server. The servers
are pinned to CPU 0 and redis-benchmark to CPU 1 (taskset, when there are 2+ CPUs); each
measurement is repeated `--repeats` times, alternating the order of the servers, and the median
is reported. Besides ops/s it reads each server's CPU time (user + system, psutil) around every
run: server CPU µs per operation is the figure that survives a noisy machine, and
redis µs / geoserver µs is the ratio the issues quote (higher is better for geoserver).

Prints ops/s, CPU µs/op and the ratios and, unless --no-docs, writes the table with a machine
description into docs/benchmarks.md. A benchmark, not a test: it never fails CI.
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
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import baseline_env

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- geo_vs_redis:begin -->", "<!-- geo_vs_redis:end -->"

MIN_LAT, MIN_LON, SPAN = 0.0, 0.0, 0.72  # the box `__rand_int__e-9` covers with RAND_RANGE
RAND_RANGE = "720000000"  # placeholders 000000000000..000719999999; x 1e-9 -> [0, 0.72)
COORD = "__rand_int__e-9"
POINTS = 100_000
CLIENTS = 50
# issue 15's goals (CPU ratio to redis)
TARGETS = {("SET", 1): 0.8, ("SET", 16): 1.0, ("NEARBY", 1): 1.0, ("NEARBY", 16): 1.0,
           ("GET", 1): 0.6, ("GET", 16): 0.6, ("OBJECTS", 1): 0.5, ("OBJECTS", 16): 0.5,
           ("SCAN", 1): 0.5, ("SCAN", 16): 0.5}

WORKLOADS = {
    "NEARBY": (
        ["NEARBY", "fleet", "LIMIT", "100", "IDS", "POINT", COORD, COORD, "1000"],
        ["GEOSEARCH", "fleet", "FROMLONLAT", COORD, COORD, "BYRADIUS", "1", "km"],
    ),
    "SET": (
        ["SET", "fleet", "__rand_int__", "POINT", COORD, COORD],
        ["GEOADD", "fleet", COORD, COORD, "__rand_int__"],
    ),
    "SETFIELDS": (  # a fleet tracker's SET: two numeric fields (redis has no fields: GEOADD)
        ["SET", "fleet", "__rand_int__", "FIELD", "speed", "55", "FIELD", "heading", "270",
         "POINT", COORD, COORD],
        ["GEOADD", "fleet", COORD, COORD, "__rand_int__"],
    ),
    "GET": (  # ids g000000000000..g000000099999 of a second key (GET_RANGE): every GET hits
        ["GET", "gfleet", "g__rand_int__", "POINT"],
        ["GEOPOS", "gfleet", "g__rand_int__"],
    ),
    "OBJECTS": (  # NEARBY ... OBJECTS: each hit's GeoJSON, against GEOSEARCH's coordinates
        ["NEARBY", "fleet", "LIMIT", "100", "OBJECTS", "POINT", COORD, COORD, "1000"],
        ["GEOSEARCH", "fleet", "FROMLONLAT", COORD, COORD, "BYRADIUS", "1", "km", "WITHCOORD"],
    ),
    "FSET": (  # one numeric field of an existing object (gfleet's ids: every FSET hits; run it last,
        # it turns those plain points into items with a field), against one field of a redis hash
        ["FSET", "gfleet", "g__rand_int__", "speed", "1__rand_int__"],
        ["HSET", "g__rand_int__", "speed", "1__rand_int__"],
    ),
    "SCAN": (  # the first 100 objects of the second key in id order, against its first 100 members
        ["SCAN", "gfleet", "LIMIT", "100"],
        ["ZRANGE", "gfleet", "0", "99", "WITHSCORES"],
    ),
}
ALL_WORKLOADS = "NEARBY,OBJECTS,SCAN,SET,GET"  # searches before SET: same 100k points
MORE_WORKLOADS = "SETFIELDS,FSET"  # by name only (--workloads SET,SETFIELDS,FSET): not issue 15's goals
GET_RANGE = str(POINTS)


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
                if s.recv(128).startswith((b"+PONG", b"$")):  # $: a JSON reply (--output json)
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{name} did not start on port {port}")


def pin(cpu: int) -> list[str]:
    """A taskset prefix that pins a process to one CPU (nothing on a 1-CPU machine)."""
    return ["taskset", "-c", str(cpu)] if (os.cpu_count() or 1) > 1 and shutil.which("taskset") else []


def core_env(core: str) -> dict[str, str]:
    """The environment selecting a point index: `cpp`, `python`, or `label@/path/to/_core.so`
    (another build of the core, e.g. one of an older commit, through GEOSERVER_CORE_LIB)."""
    if "@" in core:
        lib = core.split("@", 1)[1]
        return {"GEOSERVER_CORE": "cpp", "GEOSERVER_CORE_LIB": lib} if lib else {"GEOSERVER_CORE": "auto"}
    if core == "nofast":  # the compiled core without the fast path for whole commands
        return {"GEOSERVER_CORE": "cpp", "GEOSERVER_FASTPATH": "0"}
    return {"GEOSERVER_CORE": core}


def label(core: str) -> str:
    return core.split("@", 1)[0]


GEO_OUTPUT = ["resp"]  # --output json: geoservers reply in JSON (as pyle38 reads them)


def start_geoserver(port: int, workdir: Path, aof: bool, core: str = "cpp",
                    extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    name = label(core)
    cmd = [*pin(0), sys.executable, "-m", "geoserver", "--host", "127.0.0.1", "--port", str(port),
           "--dir", str(workdir / f"geo-{name}"), "-q", *persistence, "--output", GEO_OUTPUT[0]]
    env = {**os.environ, **core_env(core), **(extra_env or {})}
    log = open(workdir / f"geo-{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
    wait_port(port, proc, "geoserver")
    return proc


def start_redis(port: int, workdir: Path, aof: bool) -> subprocess.Popen:
    (workdir / "redis").mkdir(exist_ok=True)
    persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
    cmd = [*pin(0), "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
           "--dir", str(workdir / "redis"), "--daemonize", "no", "--protected-mode", "no", *persistence]
    proc = subprocess.Popen(cmd, stdout=open(workdir / "redis.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115
    wait_port(port, proc, "redis-server")
    return proc


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


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
                    if line.startswith(b"$"):  # a JSON reply's bulk header (--output json)
                        continue
                    if line.startswith(b"-") or line.startswith(b'{"ok":false'):
                        raise SystemExit(f"load failed: {line.decode()}")
                    seen += 1
    return time.perf_counter() - started


def dataset(n: int, seed: int = 38) -> list[tuple[str, float, float]]:
    rnd = random.Random(seed)
    return [(f"truck{i}", MIN_LAT + rnd.random() * SPAN, MIN_LON + rnd.random() * SPAN) for i in range(n)]


def benchmark(port: int, pid: int, command: list[str], pipeline: int, requests: int,
              rand_range: str = RAND_RANGE) -> tuple[float, float]:
    """(ops/s reported by redis-benchmark, server CPU µs per request) for one command."""
    cmd = [*pin(1), "redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(CLIENTS),
           "-n", str(requests), "-P", str(pipeline), "-r", rand_range, "--csv", *command]
    before = cpu_seconds(pid)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    used = cpu_seconds(pid) - before
    rows = [r for r in csv.reader(io.StringIO(out.stdout)) if r and r[0] != "test"]
    if out.returncode != 0 or not rows:
        raise RuntimeError(f"redis-benchmark failed ({out.returncode}): "
                           f"{out.stdout[-500:]} {out.stderr[-500:]}")
    return float(rows[-1][1]), used / requests * 1e6


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
    ops: dict[str, list[float]] = field(default_factory=dict)  # server -> ops/s per repeat
    cpu: dict[str, list[float]] = field(default_factory=dict)  # server -> CPU µs/op per repeat

    def add(self, server: str, ops: float, cpu: float) -> None:
        self.ops.setdefault(server, []).append(ops)
        self.cpu.setdefault(server, []).append(cpu)

    def med_ops(self, server: str) -> float:
        return statistics.median(self.ops[server])

    def med_cpu(self, server: str) -> float:
        return statistics.median(self.cpu[server])

    def ratio(self, server: str) -> float:
        """geoserver / redis in ops/s."""
        return self.med_ops(server) / self.med_ops("redis")

    def cpu_ratio(self, server: str) -> float:
        """redis CPU per op / geoserver CPU per op: how many redis-equivalents of work per op."""
        return self.med_cpu("redis") / self.med_cpu(server)


def measure(res: Result, procs: dict[str, tuple[int, subprocess.Popen]], order: list[str], repeats: int,
            geo_cmd: list[str], redis_cmd: list[str], requests: int, rand_range: str = RAND_RANGE) -> None:
    """`repeats` runs of every server, the order reversed on every other repeat so that no
    server always runs first on a warming (or noisy) machine."""
    for repeat in range(repeats):
        for name in order if repeat % 2 == 0 else order[::-1]:
            port, proc = procs[name]
            cmd = redis_cmd if name == "redis" else geo_cmd
            res.add(name, *benchmark(port, proc.pid, cmd, res.pipeline, requests, rand_range))


def stop(procs: dict[str, tuple[int, subprocess.Popen]]) -> None:
    for _port, proc in procs.values():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def render(results: list[Result], args: argparse.Namespace, env: str) -> str:
    mode = "AOF everysec for both" if args.aof else "no persistence for both"
    cores = [label(c) for c in args.cores.split(",")]
    pinned = "servers on CPU 0, redis-benchmark on CPU 1" if pin(0) else "not pinned"
    lines = [
        f"Run: `python bench/geo_vs_redis.py{' --quick' if args.quick else ''}"
        f"{' --aof' if args.aof else ''}{' --output json' if args.output == 'json' else ''}"
        f"{'' if args.workloads == ALL_WORKLOADS else ' --workloads ' + args.workloads}"
        f" --cores {args.cores} --repeats {args.repeats}` "
        f"({time.strftime('%Y-%m-%d')}; {mode}; {POINTS // 1000}k points loaded; {CLIENTS} clients; "
        f"{args.requests} requests per SET/GET run, {args.nearby_requests} per NEARBY/OBJECTS/SCAN run; "
        f"{pinned}; "
        f"medians of {args.repeats} alternating repeats).",
        "",
        f"Machine: {env}.",
        "",
        "geoserver/redis: ops/s ratio, and in brackets the CPU ratio (redis CPU µs per op / "
        "geoserver CPU µs per op).",
        "",
        "| workload | pipeline | redis ops/s (CPU µs/op) | "
        + " | ".join(f"geoserver {c} ops/s (CPU µs/op) | {c}/redis" for c in cores) + " | target |",
        "|---|---:|---:|" + "---:|---:|" * len(cores) + "---:|",
    ]
    for r in results:
        target = TARGETS.get((r.workload, r.pipeline))
        row = [r.workload, f"-P {r.pipeline}", f"{r.med_ops('redis'):,.0f} ({r.med_cpu('redis'):.1f})"]
        for c in cores:
            row += [f"{r.med_ops(c):,.0f} ({r.med_cpu(c):.1f})", f"{r.ratio(c):.2f}x ({r.cpu_ratio(c):.2f}x)"]
        row.append(f"≥ {target}x" if target else "")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_docs(section: str, begin: str = BEGIN, end: str = END,
               title: str = "geoserver vs redis-server (latest run)") -> None:
    """Replace the text between the `begin` and `end` markers of docs/benchmarks.md."""
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    block = f"{begin}\n{section}{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + f"\n\n## {title}\n\n" + block + "\n"
    DOCS.write_text(text)
    print(f"wrote {DOCS.relative_to(REPO)}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer requests (a smoke run, ~1 minute)")
    p.add_argument("--aof", action="store_true", help="both servers with AOF, fsync everysec")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--requests", type=int, default=None, help="requests per SET run")
    p.add_argument("--nearby-requests", type=int, default=None, help="requests per NEARBY run")
    p.add_argument("--cores", default="cpp,nofast",
                   help="geoservers to run: cpp, nofast (cpp without the fast path), python, "
                        "label@/path/to/_core.so")
    p.add_argument("--workloads", default=ALL_WORKLOADS,
                   help=f"comma-separated, of {ALL_WORKLOADS},{MORE_WORKLOADS}")
    p.add_argument("--repeats", type=int, default=3, help="alternating repeats per measurement")
    p.add_argument("--output", choices=("resp", "json"), default="resp",
                   help="geoservers' reply format (json: every reply a JSON bulk, as pyle38 and "
                        "tile38-ts read them; redis stays RESP)")
    p.add_argument("--baseline-src", type=Path, default=None,
                   help="also run the geoserver of another checkout (its server/ first on PYTHONPATH)")
    args = p.parse_args()
    GEO_OUTPUT[0] = args.output
    args.requests = args.requests or (20_000 if args.quick else 200_000)
    args.nearby_requests = args.nearby_requests or (10_000 if args.quick else 60_000)
    specs = args.cores.split(",")
    baseline = baseline_env(p, args.baseline_src) if args.baseline_src else None
    if baseline:
        specs.append("baseline@")  # the default core of that checkout
    cores = [label(c) for c in specs]
    args.cores = ",".join(cores)

    ensure_redis()
    env = machine()
    print(env)
    points = dataset(POINTS)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="geo_vs_redis-") as tmp:
        workdir = Path(tmp)
        procs: dict[str, tuple[int, subprocess.Popen]] = {}
        try:
            port = free_port()
            procs["redis"] = (port, start_redis(port, workdir, args.aof))
            for core in specs:
                port = free_port()
                if core == "baseline@":
                    procs["baseline"] = (port, start_geoserver(port, workdir, args.aof, core, baseline))
                else:
                    procs[label(core)] = (port, start_geoserver(port, workdir, args.aof, core))
            geoadds = [["GEOADD", "fleet", repr(lo), repr(la), i] for i, la, lo in points]
            sets = [["SET", "fleet", i, "POINT", repr(la), repr(lo)] for i, la, lo in points]
            redis_probe = ["GEOSEARCH", "fleet", "FROMLONLAT", "0.36", "0.36", "BYRADIUS", "1", "km"]
            geo_probe = ["NEARBY", "fleet", "COUNT", "POINT", "0.36", "0.36", "1000"]
            gets = [["GEOADD", "gfleet", c[2], c[3], f"g{n:012d}"] for n, c in enumerate(geoadds)]
            gsets = [["SET", "gfleet", f"g{n:012d}", *c[3:]] for n, c in enumerate(sets)]
            for name, (port, _proc) in procs.items():
                load(port, gets if name == "redis" else gsets)
                took = load(port, geoadds if name == "redis" else sets)
                hits = call(port, redis_probe if name == "redis" else geo_probe).split(b"\r\n", 1)[0]
                print(f"loaded {POINTS} points into {name}: {took:.2f}s; "
                      f"hits within 1 km of the box center: {hits.decode().strip()}")
            order = list(procs)
            for workload in args.workloads.split(","):
                geo_cmd, redis_cmd = WORKLOADS[workload]
                n = args.nearby_requests if workload in ("NEARBY", "OBJECTS", "SCAN") else args.requests
                rand_range = GET_RANGE if workload in ("GET", "FSET") else RAND_RANGE
                for pipeline in (1, 16):
                    res = Result(workload, pipeline)
                    measure(res, procs, order, args.repeats, geo_cmd, redis_cmd, n, rand_range)
                    results.append(res)
                    each = [f"{c} {res.med_ops(c):>9,.0f}/s {res.med_cpu(c):5.1f} µs "
                            f"{res.ratio(c):.2f}x ({res.cpu_ratio(c):.2f}x cpu)" for c in cores]
                    print(f"{workload:7s} -P {pipeline:<2d} redis {res.med_ops('redis'):>9,.0f}/s "
                          f"{res.med_cpu('redis'):5.1f} µs  " + "  ".join(each), flush=True)
        finally:
            stop(procs)
    section = render(results, args, env)
    print()
    print(section)
    if not args.no_docs:
        write_docs(section)


if __name__ == "__main__":
    main()
