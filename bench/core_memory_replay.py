"""Memory per point object and AOF replay time, geoserver (per point index) beside redis-server.

    python bench/core_memory_replay.py [--points 1000000] [--cores cpp,python]

For each geoserver point index (GEOSERVER_CORE=cpp / python) and for redis-server: start it with
an AOF (appendonly, fsync everysec) in a fresh directory, note its RSS, load N points
(`SET fleet truckN POINT lat lon` / `GEOADD fleet lon lat truckN`, pipelined; ids of ~10 bytes,
no fields), note the RSS again and the difference per object; then stop it and start it again on
the same AOF, timing from the start of the process until it answers a data command (geoserver
`GET`, redis `GEOPOS`; both refuse those with LOADING while replaying). Servers pinned to CPU 0.
Prints one table (Markdown). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from geo_vs_redis import dataset, encode, free_port, load, machine, pin


def start(name: str, port: int, workdir: Path) -> subprocess.Popen:
    data = workdir / name
    data.mkdir(exist_ok=True)
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115
    if name == "redis":
        cmd = [*pin(0), "redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
               "--dir", str(data), "--appendonly", "yes", "--appendfsync", "everysec",
               "--protected-mode", "no"]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    cmd = [*pin(0), sys.executable, "-m", "geoserver", "--host", "127.0.0.1", "--port", str(port),
           "--dir", str(data), "-q", "--appendonly", "yes", "--appendfsync", "everysec"]
    env = {**os.environ, "GEOSERVER_CORE": name}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)


def ready(name: str, port: int, proc: subprocess.Popen, timeout: float = 600.0) -> float:
    """Seconds until the server answers a data command without an error (LOADING)."""
    probe = encode(["GEOPOS", "fleet", "truck0"] if name == "redis" else ["GET", "fleet", "truck0"])
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(probe)
                if not s.recv(256).startswith(b"-"):
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{name} not ready after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=1_000_000)
    p.add_argument("--cores", default="cpp,python")
    args = p.parse_args()
    points = dataset(args.points)
    rows = []
    with tempfile.TemporaryDirectory(prefix="core_memory_replay-") as tmp:
        workdir = Path(tmp)
        for name in ["redis", *args.cores.split(",")]:
            port = free_port()
            proc = start(name, port, workdir)
            ready(name, port, proc)
            time.sleep(0.5)
            base = psutil.Process(proc.pid).memory_info().rss
            if name == "redis":
                cmds = [["GEOADD", "fleet", repr(lo), repr(la), i] for i, la, lo in points]
            else:
                cmds = [["SET", "fleet", i, "POINT", repr(la), repr(lo)] for i, la, lo in points]
            took = load(port, cmds)
            del cmds
            time.sleep(1.5)  # the everysec fsync
            rss = psutil.Process(proc.pid).memory_info().rss
            stop(proc)
            port = free_port()
            proc = start(name, port, workdir)
            replay = ready(name, port, proc)
            replay_rss = psutil.Process(proc.pid).memory_info().rss
            stop(proc)
            aof = sum(f.stat().st_size for f in (workdir / name).rglob("*") if f.is_file())
            per, per_replay = (rss - base) / args.points, (replay_rss - base) / args.points
            rows.append((name, took, per, replay, per_replay, aof))
            print(f"{name}: load {took:.1f} s, {per:.0f} B/object (RSS {rss / 2**20:.0f} MiB), "
                  f"replay {replay:.1f} s ({per_replay:.0f} B/object after replay), "
                  f"AOF {aof / 2**20:.0f} MiB", flush=True)
    print()
    print(f"Run: `python bench/core_memory_replay.py --points {args.points}` ({time.strftime('%Y-%m-%d')}); "
          f"machine: {machine()}.")
    print()
    print("| server | load (pipelined) | RSS per object after load | AOF replay "
          "| RSS per object after replay | AOF size |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, took, per, replay, per_replay, aof in rows:
        label = "redis-server" if name == "redis" else f"geoserver {name}"
        print(f"| {label} | {took:.1f} s | {per:.0f} B | {replay:.1f} s | {per_replay:.0f} B "
              f"| {aof / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
