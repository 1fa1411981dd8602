"""Long commands against a canary (issue 9: "long commands must not freeze everyone").

    python bench/long_commands.py [--objects 1000000] [--keys 100000] [--only LABEL ...]
                                  [--baseline-src DIR]

Writes an AOF of `--objects` points across `--keys` keys (RESP records from
protocol/resp.encode_command), starts a real geoserver on it, then runs each long command on
its own connection while a canary process sends PING every ~5 ms on another. For each
command it prints the command's own time and the canary's worst and p99 round trip over the
pings sent while the command ran (and for 0.3 s after its reply, to catch work left in the
background, such as freeing a dropped collection).

The data: key `big` holds 40% of the objects, `big2` 10%, and the other keys ~5 each, so the
single-key commands (SCAN, WITHIN, NEARBY, PDEL, DROP) meet a large collection and the
cross-key ones (KEYS, STATS, SERVER, /metrics, FLUSHDB) meet many keys; key `poly` holds 50,000
small squares (non-point objects for WITHIN / INTERSECTS), and one row SETs a 100k-vertex polygon.
`--baseline-src DIR` (a `git worktree` of another commit) runs the same commands against that
checkout's server on the same AOF, and the table puts both side by side.
Not a test: prints figures, never fails CI.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import hiredis
import orjson
import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "server"))

sys.path.insert(0, str(ROOT / "bench"))

from baseline import baseline_env  # noqa: E402
from geoserver.protocol.resp import encode_command  # noqa: E402
from helpers import GeoServer, _encode  # noqa: E402

AFTER = 0.3  # seconds of canary kept after each reply (background work)


def write_aof(path: Path, objects: int, keys: int) -> dict[str, int]:
    """The dataset as an AOF of `SET key id POINT lat lon`; returns objects per big key."""
    big, big2 = int(objects * 0.4), int(objects * 0.1)
    rest = objects - big - big2
    small_keys = max(1, keys - 2)
    with open(path, "wb") as out:
        buf: list[bytes] = []

        def put(key: str, oid: str, i: int) -> None:
            lat = -60 + (i * 7919 % 120_000) / 1000.0
            lon = -170 + (i * 104_729 % 340_000) / 1000.0
            buf.append(encode_command([b"SET", key.encode(), oid.encode(), b"POINT",
                                       b"%.5f" % lat, b"%.5f" % lon]))
            if len(buf) >= 50_000:
                out.write(b"".join(buf))
                buf.clear()

        for i in range(big):
            put("big", f"id{i}", i)
        for i in range(big2):
            put("big2", f"id{i}", i + big)
        for i in range(rest):
            put(f"k{i % small_keys:06d}", f"id{i // small_keys}", i + big + big2)
        for i in range(SQUARES):  # non-point objects: small squares in key `poly`
            lat = -60 + (i * 7919 % 120_000) / 1000.0
            lon = -170 + (i * 104_729 % 340_000) / 1000.0
            buf.append(encode_command([b"SET", b"poly", b"s%d" % i, b"OBJECT", square(lat, lon)]))
        out.write(b"".join(buf))
    return {"big": big, "big2": big2}


SQUARES = 50_000  # objects of key `poly`


def square(lat: float, lon: float, size: float = 0.2) -> bytes:
    ring = [[lon, lat], [lon + size, lat], [lon + size, lat + size], [lon, lat + size], [lon, lat]]
    return orjson.dumps({"type": "Polygon", "coordinates": [ring]})


def star(n: int) -> bytes:
    """A 100k-vertex style polygon (bench/geojson_pathological.py's star ring)."""
    pts = [[(6.0 if i % 2 else 9.0) * math.cos(2 * math.pi * i / n * 7),
            (6.0 if i % 2 else 9.0) * math.sin(2 * math.pi * i / n * 7)] for i in range(n)]
    return orjson.dumps({"type": "Polygon", "coordinates": [[*pts, pts[0]]]})


AREA = orjson.dumps({"type": "Polygon", "coordinates": [[[-150, -50], [150, -50], [150, 50],
                                                         [0, 10], [-150, 50], [-150, -50]]]})


def canary(port: int, stop, results) -> None:
    """PING every ~5 ms; send (sent_at, round_trip) pairs back when told to stop."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ping = b"*1\r\n$4\r\nPING\r\n"
    samples: list[tuple[float, float]] = []
    while not stop.is_set():
        t = time.monotonic()
        sock.sendall(ping)
        got = b""
        while not got.endswith(b"\r\n"):
            got += sock.recv(64)
        samples.append((t, time.monotonic() - t))
        time.sleep(0.005)
    results.send(samples)


def run_resp(port: int, argv: list[str | bytes]) -> tuple[float, float, int]:
    """Send one command on a fresh connection; (sent_at, done_at, reply bytes)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        reader = hiredis.Reader()
        t = time.monotonic()
        sock.sendall(_encode(list(argv)))
        size = 0
        while True:
            data = sock.recv(1 << 20)
            if not data:
                break
            size += len(data)
            reader.feed(data)
            if reader.gets() is not False:
                break
        return t, time.monotonic(), size


def run_http(port: int, path: str) -> tuple[float, float, int]:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        t = time.monotonic()
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        size = 0
        while data := sock.recv(1 << 20):
            size += len(data)
        return t, time.monotonic(), size


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100))]


def commands(keys: int) -> list[tuple[str, list[str | bytes] | str]]:
    world = ["BOUNDS", "-90", "-180", "90", "180"]
    small = [f"k{i:06d}" for i in range(max(1, keys - 2))]
    return [
        ("SERVER", ["SERVER"]),
        ("INFO", ["INFO"]),
        ("KEYS *", ["KEYS", "*"]),
        ("KEYS k0*", ["KEYS", "k0*"]),
        (f"STATS ({len(small) + 2} keys)", ["STATS", "big", "big2", *small]),
        ("GET /metrics", "/metrics"),
        ("BOUNDS big", ["BOUNDS", "big"]),
        ("SCAN big LIMIT 1e6 IDS", ["SCAN", "big", "LIMIT", "1000000", "IDS"]),
        ("SCAN big LIMIT 1e6 OBJECTS", ["SCAN", "big", "LIMIT", "1000000"]),
        ("SCAN big MATCH id1* COUNT", ["SCAN", "big", "MATCH", "id1*", "COUNT"]),
        ("WITHIN big LIMIT 1e6 IDS world", ["WITHIN", "big", "LIMIT", "1000000", "IDS", *world]),
        ("WITHIN big LIMIT 1e6 POINTS world", ["WITHIN", "big", "LIMIT", "1000000", "POINTS", *world]),
        ("WITHIN big COUNT world", ["WITHIN", "big", "COUNT", *world]),
        ("INTERSECTS big LIMIT 1e6 IDS world",
         ["INTERSECTS", "big", "LIMIT", "1000000", "IDS", *world]),
        ("GET /SCAN big LIMIT 1e6 OBJECTS", "/SCAN+big+LIMIT+1000000"),
        ("GET /WITHIN big LIMIT 1e6 IDS world", "/WITHIN+big+LIMIT+1000000+IDS+" + "+".join(world)),
        ("NEARBY big LIMIT 1e6 IDS", ["NEARBY", "big", "LIMIT", "1000000", "IDS", "POINT", "0", "0"]),
        ("NEARBY big DISTANCE LIMIT 1e6 IDS",
         ["NEARBY", "big", "DISTANCE", "LIMIT", "1000000", "IDS", "POINT", "0", "0"]),
        ("INTERSECTS poly LIMIT 1e6 IDS world", ["INTERSECTS", "poly", "LIMIT", "1000000", "IDS", *world]),
        ("WITHIN poly COUNT OBJECT area", ["WITHIN", "poly", "COUNT", "OBJECT", AREA]),
        ("SET a 100k-vertex polygon", ["SET", "stars", "s1", "OBJECT", star(100_000)]),
        ("PDEL big id1*", ["PDEL", "big", "id1*"]),
        ("PDEL big2 *", ["PDEL", "big2", "*"]),
        ("DROP big", ["DROP", "big"]),
        ("FLUSHDB", ["FLUSHDB"]),
    ]


Span = tuple[str, float, float, int]
Row = tuple[str, float, int, float, float, float, float, float]


class RssTrace:
    """The server process's RSS (psutil) every 5 ms from a thread: (monotonic time, bytes)."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.005):
            try:
                self.samples.append((time.monotonic(), self.proc.memory_info().rss))
            except psutil.Error:
                return

    def around(self, sent: float, done: float) -> tuple[float, float, float]:
        """MiB before `sent`, the peak from `sent` to `done`, and at `done`."""
        before = [r for t, r in self.samples if t < sent][-1:] or [0]
        during = [r for t, r in self.samples if sent <= t <= done] or before
        after = [r for t, r in self.samples if t <= done][-1:] or before
        return before[0] / 2**20, max(during) / 2**20, after[0] / 2**20


def run(data: Path, keys: int, only: list[str], env: dict[str, str], label: str) -> list[Row]:
    """Start a server on the AOF, run the commands against a canary; (label, command ms, reply
    bytes, canary worst, canary p99) per command."""
    server = GeoServer(data, env=env)
    t = time.monotonic()
    server.start(wait=False)
    try:
        server.wait_ready(timeout=600)
        c = server.client()
        while True:
            try:
                c.execute_command("GET", "big", "id0")
                break
            except redis.exceptions.BusyLoadingError:
                time.sleep(0.2)
        print(f"[{label}] server loaded in {time.monotonic() - t:.1f}s; "
              f"rss {server.stats()['mem_alloc'] >> 20} MiB", flush=True)
        stop, (recv, send) = mp.Event(), mp.Pipe(duplex=False)
        proc = mp.Process(target=canary, args=(server.port, stop, send), daemon=True)
        proc.start()
        assert server.proc is not None
        trace = RssTrace(server.proc.pid)
        time.sleep(1.0)
        spans: list[Span] = []
        for name, cmd in commands(keys):
            if only and not any(o in name for o in only):
                continue
            sent, done, size = run_http(server.port, cmd) if isinstance(cmd, str) else \
                run_resp(server.port, cmd)
            spans.append((name, sent, done, size))
            time.sleep(AFTER + 0.2)
        stop.set()
        trace.stop.set()
        samples = recv.recv()
        proc.join(5)
    finally:
        server.stop()
    idle = [rtt for t0, rtt in samples if t0 < spans[0][1]]
    print(f"[{label}] canary idle: p99 {pct(idle, 99) * 1e3:.2f} ms, worst {max(idle) * 1e3:.2f} ms "
          f"({len(idle)} pings)", flush=True)
    rows: list[Row] = []
    for name, sent, done, size in spans:
        # a ping sent just before the command may wait for it too
        window = [rtt for t0, rtt in samples if sent - 0.01 <= t0 <= done + AFTER]
        rows.append((name, (done - sent) * 1e3, size, max(window, default=float("nan")) * 1e3,
                     pct(window, 99) * 1e3, *trace.around(sent, done + AFTER)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--only", nargs="*", default=[],
                    help="run only commands whose label contains one of these")
    ap.add_argument("--baseline-src", type=Path, help="another checkout to run side by side")
    opts = ap.parse_args()
    baseline = baseline_env(ap, opts.baseline_src) if opts.baseline_src else None
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        t = time.monotonic()
        sizes = write_aof(data / "appendonly.aof", opts.objects, opts.keys)
        aof = (data / "appendonly.aof").read_bytes()
        print(f"AOF written: {opts.objects} objects, {opts.keys} keys, {sizes}, "
              f"{len(aof) >> 20} MiB in {time.monotonic() - t:.1f}s")
        builds = [("now", {})] + ([("baseline", baseline)] if baseline is not None else [])
        results = {}
        for label, env in builds:
            (data / "appendonly.aof").write_bytes(aof)  # PDEL/DROP/FLUSHDB changed the last one
            results[label] = run(data, opts.keys, opts.only, env, label)
    head = "| command | reply |" + "".join(
        f" {label}: command ms | {label}: canary worst / p99 ms | {label}: RSS before / peak / after MiB |"
        for label, _ in builds)
    print("\n" + head)
    print("|---|---:|" + "---:|---:|---:|" * len(builds))
    for i, (name, _ms, size, *_rest) in enumerate(results["now"]):
        cells = "".join(f" {results[label][i][1]:.0f} | {results[label][i][3]:.1f} / "
                        f"{results[label][i][4]:.1f} | {results[label][i][5]:.0f} / "
                        f"{results[label][i][6]:.0f} / {results[label][i][7]:.0f} |"
                        for label, _ in builds)
        print(f"| `{name}` | {_size(size)} |{cells}")


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.0f} GiB"


if __name__ == "__main__":
    main()
