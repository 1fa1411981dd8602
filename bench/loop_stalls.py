"""The longest loop stall of each long command, in the loop thread's CPU time (issue 9).

    python bench/loop_stalls.py [--objects 1000000] [--keys 100000] [--only LABEL ...]
                                [--repeat N] [--gc-off] [--gc0 N]

bench/long_commands.py's canary measures what a client sees, but on a shared machine its
round trips mostly measure the scheduler. This one runs the server in this process (its real
Server, Client protocol and listener on 127.0.0.1; the dataset loaded from the same AOF with
the server's own loader), with a ticker task that yields to the loop continuously and records,
between two of its turns, the CPU time the loop thread spent (time.thread_time): that is how
long the loop could not serve anyone, whatever else the machine runs. Each command is sent and
its reply read in full by a separate process (bench/long_commands.run_resp / run_http), so the
reading costs the server's loop nothing. Printed per command: the longest stall (CPU ms), its
wall-clock length, and the command's round trip, and the longest collection of CPython's
cyclic GC inside the window (gc.callbacks, CPU ms and generation): a stall of about that length
is the collector's, not the command's.

On a loaded VM even CPU time inflates (stolen time is charged to the running thread), so
`--repeat N` runs each read-only command N times and prints the smallest and the median of its
N longest stalls: the smallest is the command's own cost, the spread shows the noise. Writes
(PDEL, DROP, FLUSHDB, SET) run once. `--gc-off` disables the cyclic collector after loading, so
the stalls are the commands' own (a server never runs so: the collector's share is the
difference); `--gc0 N` tries another generation-0 threshold than the server's 100,000.

For a baseline, copy this file and long_commands.py into a `git worktree` of another commit
and run it there (it imports the server next to it). Not a test: prints figures, never fails CI.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "server"))

from geoserver import dispatch  # noqa: E402
from geoserver.aof.loader import load_aof  # noqa: E402
from geoserver.config import ServerConfig  # noqa: E402
from geoserver.server import Client, Server  # noqa: E402
from helpers import free_port  # noqa: E402
from long_commands import _size, commands, run_http, run_resp, write_aof  # noqa: E402


def worker(port: int, conn) -> None:
    """Send each command it is given and read its reply in full; started before the dataset is
    loaded (forking a 1 GB process later would itself stall the loop for ~100 ms)."""
    while (cmd := conn.recv()) is not None:
        conn.send(run_http(port, cmd) if isinstance(cmd, str) else run_resp(port, cmd))


async def measure(data: Path, keys: int, only: list[str], repeat: int = 1, gc_off: bool = False,
                  gc0: int = 100_000) -> None:
    port = free_port()
    conn, child = mp.Pipe()
    proc = mp.Process(target=worker, args=(port, child), daemon=True)
    proc.start()
    server = Server(ServerConfig(dir=data, appendonly=False))
    t = time.monotonic()
    await load_aof(data / "appendonly.aof", lambda argv: dispatch.apply_record(server, argv),
                   lambda done, total: None)
    print(f"loaded in {time.monotonic() - t:.1f}s", flush=True)
    gc.set_threshold(gc0, 50, 1000)  # as Server.start does after loading (gen 0: 100,000)
    gc.collect()
    gc.freeze()
    if gc_off:
        gc.disable()
    listener = await asyncio.get_running_loop().create_server(lambda: Client(server), "127.0.0.1", port)
    stalls: list[tuple[float, float, float]] = []  # (wall at end, cpu, wall) between ticks
    running = True

    async def ticker() -> None:
        while running:
            c0, w0 = time.thread_time(), time.perf_counter()
            await asyncio.sleep(0)
            w1 = time.perf_counter()
            stalls.append((w1, time.thread_time() - c0, w1 - w0))

    collections: list[tuple[float, float, int]] = []  # (wall at end, cpu, generation)
    gc_start = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_start[0] = time.thread_time()
        else:
            collections.append((time.perf_counter(), time.thread_time() - gc_start[0], info["generation"]))

    gc.callbacks.append(on_gc)
    tick = asyncio.create_task(ticker())
    print(f"| {'command':36} | {'reply':>9} | {'longest stall, CPU ms (min / median)':>36} "
          f"| {'its wall ms':>11} | {'round trip ms':>13} | {'longest GC, CPU ms (gen)':>24} |")
    print(f"|{'-' * 38}|{'-' * 10}:|{'-' * 37}:|{'-' * 12}:|{'-' * 14}:|{'-' * 25}:|")
    for label, cmd in commands(keys):
        if only and not any(o in label for o in only):
            continue
        runs = []
        write = label.split()[0] in ("PDEL", "DROP", "FLUSHDB", "SET")
        for _ in range(1 if write else repeat):
            start = time.perf_counter()
            conn.send(cmd)
            sent, done, size = await asyncio.to_thread(conn.recv)
            await asyncio.sleep(0.3)  # work left in the background (freeing a dropped collection)
            window = [(cpu, wall) for end, cpu, wall in stalls if end >= start]
            gcs = [(cpu, gen) for end, cpu, gen in collections if end >= start]
            stalls.clear()
            collections.clear()
            cpu, wall = max(window, default=(float("nan"), float("nan")))
            runs.append((cpu, wall, done - sent, max(gcs, default=(0.0, -1))))
        runs.sort()
        cpu, wall, rtt, (gc_cpu, gen) = runs[0]
        median = runs[len(runs) // 2][0]
        stall = f"{cpu * 1e3:.1f} / {median * 1e3:.1f}" if len(runs) > 1 else f"{cpu * 1e3:.1f}"
        gc_cell = f"{gc_cpu * 1e3:.1f} ({gen})" if gen >= 0 else "-"
        print(f"| {label:36} | {_size(size):>9} | {stall:>36} | {wall * 1e3:11.1f} "
              f"| {rtt * 1e3:13.0f} | {gc_cell:>24} |", flush=True)
    gc.callbacks.remove(on_gc)
    running = False
    await tick
    conn.send(None)
    proc.join(10)
    listener.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=1_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--only", nargs="*", default=[], help="commands whose label contains one of these")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each read-only command")
    ap.add_argument("--gc-off", action="store_true", help="no cyclic GC after loading")
    ap.add_argument("--gc0", type=int, default=100_000,
                    help="generation-0 GC threshold after loading (the server's: 100000)")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        write_aof(data / "appendonly.aof", opts.objects, opts.keys)
        asyncio.run(measure(data, opts.keys, opts.only, opts.repeat, opts.gc_off, opts.gc0))


if __name__ == "__main__":
    mp.set_start_method("spawn")
    main()
