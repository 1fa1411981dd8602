"""Memory per point object and AOF replay time, geoserver (per point index) beside redis-server.

    python bench/core_memory_replay.py [--points 1000000] [--cores cpp,python] [--baseline-src DIR]

For each geoserver point index (GEOSERVER_CORE=cpp / python) and for redis-server: start it with
an AOF (appendonly, fsync everysec) in a fresh directory, note its RSS, load N points
(`SET fleet truckN POINT lat lon` / `GEOADD fleet lon lat truckN`, pipelined; ids of ~10 bytes,
no fields), note the RSS again and the difference per object; then stop it and start it again on
the same AOF, timing from the start of the process until it answers a data command (geoserver
`GET`, redis `GEOPOS`; both refuse those with LOADING while replaying), and the server's CPU time
(user + system) by then, the figure that survives a loaded machine. Servers pinned to CPU 0.
`--cores` takes `label@/path/to/_core.so` too (another build of the core), and `--baseline-src DIR`
adds a geoserver run from another checkout (e.g. `git archive` of an older commit, with its
`_core` built), labelled `baseline`.
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
from baseline import baseline_env
from geo_vs_redis import core_env, dataset, encode, free_port, label, load, machine, pin


def start(spec: str, port: int, workdir: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    name = label(spec)
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
    env = {**os.environ, **core_env("cpp" if name == "baseline" else spec), **(extra_env or {})}
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
    p.add_argument("--baseline-src", type=Path, default=None, help="another checkout, run as `baseline`")
    args = p.parse_args()
    extra = baseline_env(p, args.baseline_src) if args.baseline_src else {}
    specs = ["redis", *args.cores.split(",")] + (["baseline"] if args.baseline_src else [])
    points = dataset(args.points)
    rows = []
    with tempfile.TemporaryDirectory(prefix="core_memory_replay-") as tmp:
        workdir = Path(tmp)
        for spec in specs:
            name = label(spec)
            env = extra if name == "baseline" else None
            port = free_port()
            proc = start(spec, port, workdir, env)
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
            proc = start(spec, port, workdir, env)
            replay = ready(name, port, proc)
            server = psutil.Process(proc.pid)
            replay_rss = server.memory_info().rss
            replay_cpu = sum(server.cpu_times()[:2])  # user + system until ready
            stop(proc)
            aof = sum(f.stat().st_size for f in (workdir / name).rglob("*") if f.is_file())
            per, per_replay = (rss - base) / args.points, (replay_rss - base) / args.points
            rows.append((name, took, per, replay, replay_cpu, per_replay, aof))
            print(f"{name}: load {took:.1f} s, {per:.0f} B/object (RSS {rss / 2**20:.0f} MiB), "
                  f"replay {replay:.1f} s, {replay_cpu:.1f} s CPU ({per_replay:.0f} B/object after replay), "
                  f"AOF {aof / 2**20:.0f} MiB", flush=True)
    print()
    print(f"Run: `python bench/core_memory_replay.py --points {args.points}` ({time.strftime('%Y-%m-%d')}); "
          f"machine: {machine()}.")
    print()
    print("| server | load (pipelined) | RSS per object after load | AOF replay (server CPU) "
          "| RSS per object after replay | AOF size |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, took, per, replay, replay_cpu, per_replay, aof in rows:
        server = "redis-server" if name == "redis" else f"geoserver {name}"
        print(f"| {server} | {took:.1f} s | {per:.0f} B | {replay:.1f} s ({replay_cpu:.1f} s) "
              f"| {per_replay:.0f} B | {aof / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
