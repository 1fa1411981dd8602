"""SET throughput with static geofences (issue 10: "a SET costs in proportion to the fences
near the object, not to all of them"; Tile38 fell from ~30k to ~6k SET/s with 23k fences,
tidwall/tile38#491).

    python bench/fence_bench.py [--fences 0,1000,10000,100000] [--sets 200000] [--pipeline 500]

For each fence count a fresh geoserver (appendonly, everysec: the default) gets that many
channels `SETCHAN fN WITHIN fleet FENCE DETECT enter,exit BOUNDS ...`, boxes 0.01-0.05 degrees
wide scattered over the continental US, then one client sends `--sets` pipelined
`SET fleet vN POINT lat lon` moving 10,000 vehicles at random over the same area (about 0.5%
of the writes land in a fence at 1,000 and make an event; a subscriber on `f*` reads them). Prints
SET/s, the server's CPU per SET, and the ratio of the no-fence run's CPU per SET to this one's
(the SET rate one core sustains, relative; wall-clock SET/s on a shared machine is noise).
`--everywhere N` adds one run with N fences that also detect `outside`: those are candidates
for every write to their key (as in Tile38), so the cost grows with their number;
docs/geofencing.md says why.
Not a test: prints figures, never fails CI.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import psutil  # noqa: E402
from helpers import GeoServer, _encode  # noqa: E402

AREA = (25.0, -125.0, 49.0, -67.0)  # minlat, minlon, maxlat, maxlon


def add_fences(server: GeoServer, n: int, detect: str, rng: random.Random) -> float:
    """Define n channels in pipelined batches; returns the seconds it took."""
    started = time.perf_counter()
    sock = socket.create_connection((server.host, server.port))
    batch = 1000
    for a in range(0, n, batch):
        out = []
        for i in range(a, min(n, a + batch)):
            w = rng.uniform(0.01, 0.05)
            lat = rng.uniform(AREA[0], AREA[2] - w)
            lon = rng.uniform(AREA[1], AREA[3] - w)
            out.append(_encode([b"SETCHAN", f"f{i}", b"WITHIN", b"fleet", b"FENCE", b"DETECT", detect,
                                b"BOUNDS", f"{lat:.5f}", f"{lon:.5f}", f"{lat + w:.5f}", f"{lon + w:.5f}"]))
        sock.sendall(b"".join(out))
        _read_replies(sock, len(out))
    sock.close()
    return time.perf_counter() - started


def _read_replies(sock: socket.socket, n: int) -> None:
    """Read n one-line replies (`+OK`, `:1`)."""
    buf = b""
    while buf.count(b"\r\n") < n:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("closed")
        buf += data
    assert b"-ERR" not in buf, buf[:200]


def run_sets(server: GeoServer, sets: int, pipeline: int, rng: random.Random) -> tuple[float, float]:
    """Pipelined SETs; returns (SET/s, server CPU microseconds per SET). On a shared machine
    the CPU figure is the one to compare: it does not count time spent waiting for a core."""
    batches = []
    for a in range(0, sets, pipeline):
        batches.append(b"".join(
            _encode([b"SET", b"fleet", f"v{rng.randrange(10_000)}", b"POINT",
                     f"{rng.uniform(AREA[0], AREA[2]):.5f}", f"{rng.uniform(AREA[1], AREA[3]):.5f}"])
            for _ in range(min(pipeline, sets - a))))
    sock = socket.create_connection((server.host, server.port))
    assert server.proc is not None
    proc = psutil.Process(server.proc.pid)
    cpu0 = sum(proc.cpu_times()[:2])
    started = time.perf_counter()
    for batch in batches:
        sock.sendall(batch)
        _read_replies(sock, batch.count(b"*6\r\n"))
    elapsed = time.perf_counter() - started
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    sock.close()
    return sets / elapsed, cpu / sets * 1e6


def subscriber(server: GeoServer, counter: list[int]) -> threading.Thread:
    """A PSUBSCRIBE f* client counting the event messages it reads."""
    sock = socket.create_connection((server.host, server.port))
    sock.sendall(_encode([b"PSUBSCRIBE", b"f*"]))

    def read() -> None:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return
            counter[0] += data.count(b"pmessage")

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def one_run(tmp: Path, n: int, detect: str, args: argparse.Namespace) -> tuple[float, float, int, float]:
    rng = random.Random(n)
    server = GeoServer(tmp / f"fences-{n}-{detect.replace(',', '-')}").start()
    try:
        define = add_fences(server, n, detect, rng) if n else 0.0
        counter = [0]
        subscriber(server, counter)
        run_sets(server, min(20_000, args.sets), args.pipeline, rng)  # warm up
        runs = [run_sets(server, args.sets, args.pipeline, rng) for _ in range(args.repeat)]
        return max(r[0] for r in runs), min(r[1] for r in runs), counter[0], define
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fences", default="0,1000,10000,100000")
    parser.add_argument("--sets", type=int, default=200_000)
    parser.add_argument("--pipeline", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="runs per count; the best is reported")
    parser.add_argument("--everywhere", type=int, default=1000,
                        help="fences detecting outside for the extra run (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = None
        print(f"{'fences':>8} {'detect':>20} {'SET/s':>8} {'CPU us/SET':>10} {'ratio':>6} {'events':>7} "
              f"{'define s':>8}")
        runs = [(int(n), "enter,exit") for n in args.fences.split(",")]
        if args.everywhere:
            runs.append((args.everywhere, "enter,exit,outside"))
        for n, detect in runs:
            rate, cpu, events, define = one_run(Path(tmp), n, detect, args)
            if base is None:
                base = cpu
            print(f"{n:>8} {detect:>20} {rate:>8.0f} {cpu:>10.1f} {base / cpu:>6.2f} {events:>7} "
                  f"{define:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
