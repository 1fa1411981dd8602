"""Attacks of issue 9 against a canary (the bad-input suite's figures, with real timing).

    python bench/attack_canary.py [--baseline-src DIR] [--only NAME ...]

Starts a real geoserver, then for each attack: a canary connection PINGs every 5 ms while an
attacker connection sends the attack bytes; prints the canary's worst and p99 round trip, what
the attacker got back, the server's RSS growth, and whether the server still serves.
`--baseline-src DIR` runs the same attacks against another checkout's server (e.g. a
`git worktree` of the commit before the hardening) side by side. Not a test: never fails CI.
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "server"))

from baseline import baseline_env  # noqa: E402
from canary import Canary  # noqa: E402
from helpers import GeoServer, _encode  # noqa: E402

WAIT = 60.0  # seconds an attack may take before it is given up


def send_and_read(port: int, payload: bytes, quiet: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        try:
            sock.sendall(payload)
        except OSError:
            return b"<reset while sending>"
        sock.settimeout(quiet)
        data = b""
        try:
            while chunk := sock.recv(1 << 16):
                data += chunk
        except TimeoutError:
            pass
        except OSError:
            data += b"<reset>"
        return data


def unread_pipeline(port: int) -> bytes:
    """3000 pipelined SCANs of ~100 KB replies that the client never reads (for 3 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"".join(_encode(["SCAN", "big", "LIMIT", "100"]) for _ in range(3000)))
        time.sleep(3.0)
    return b"(not read)"


def trickle(port: int, head: bytes, limit: float = 10.0) -> bytes:
    """A request sent a byte every 0.2 s after `head`, with `request-timeout 2` (CONFIG SET; a
    build without the property keeps trickling): how long the server kept the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as admin:
        admin.sendall(_encode(["CONFIG", "SET", "request-timeout", "2"]) +
                      _encode(["CONFIG", "SET", "http-request-timeout", "2"]))
        admin.recv(1 << 10)
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(head)
            sock.settimeout(0.2)
            while time.monotonic() - started < limit:
                try:
                    if sock.recv(1 << 16) == b"":
                        return b"<closed after %.1f s>" % (time.monotonic() - started)
                except TimeoutError:
                    pass
                sock.sendall(b"x")
    except OSError:
        return b"<closed after %.1f s>" % (time.monotonic() - started)
    return b"<still open after %.0f s>" % limit


def post(body: bytes) -> bytes:
    return b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


def deep_geojson(depth: int) -> bytes:
    geometry = '{"type":"Point","coordinates":[1,2]}'
    for _ in range(depth):
        geometry = '{"type":"GeometryCollection","geometries":[' + geometry + "]}"
    return _encode(["SET", "deep", "x", "OBJECT", geometry])


ATTACKS: dict[str, Callable[[int], bytes]] = {
    "array header *3000000000": lambda p: send_and_read(p, b"*3000000000\r\n"),
    "array header *4294967295": lambda p: send_and_read(p, b"*4294967295\r\n"),
    "bulk header $600000000": lambda p: send_and_read(p, b"*2\r\n$3\r\nGET\r\n$600000000\r\n"),
    "1 MB inline token": lambda p: send_and_read(p, b"SET k big STRING " + b"a" * (1 << 20) + b"\r\n"),
    "1 MB HTTP path": lambda p: send_and_read(p, b"GET /" + b"a" * (1 << 20) + b" HTTP/1.1\r\n\r\n"),
    "1 MB HTTP POST body": lambda p: send_and_read(p, post(b"SET k b STRING " + b"b" * (1 << 20))),
    "3000 unread 100 KB replies": unread_pipeline,
    "GeometryCollection depth 300": lambda p: send_and_read(p, deep_geojson(300)),
    "RESP request trickled": lambda p: trickle(p, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n"),
    "HTTP headers trickled": lambda p: trickle(p, b"GET /PING HTTP/1.1\r\nHost: x\r\n"),
}


def rss_mb(server: GeoServer) -> float:
    return server.json("SERVER")["stats"]["mem_alloc"] / 2**20


def run(label: str, env: dict[str, str], names: list[str]) -> list[tuple[str, str, float, float, float, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = GeoServer(Path(tmp) / "data", env=env).start()
        try:
            client = server.client()
            pipe = client.pipeline(transaction=False)
            for i in range(1000):
                pipe.execute_command("SET", "big", f"id{i}", "STRING", "x" * 1000)
            pipe.execute()
            for name in names:
                before = rss_mb(server)
                with Canary(server.port) as canary:
                    reply = ATTACKS[name](server.port)
                    time.sleep(0.2)
                try:
                    grown = rss_mb(server) - before
                    alive = "serves"
                except Exception as exc:
                    grown, alive = float("nan"), f"down: {exc!r}"[:40]
                short = reply[:60].decode("latin-1").replace("\r\n", " ")
                worst, p99 = canary.worst * 1000, canary.p99() * 1000
                rows.append((label, name, worst, p99, grown, f"{alive}; {short}"))
                print(f"{label:9} {name:30} worst {worst:9.1f} ms  p99 {p99:8.1f} ms"
                      f"  rss {grown:+8.1f} MB  {alive}; {short}", flush=True)
                if alive != "serves":
                    server.kill9()
                    server = GeoServer(Path(tmp) / f"data{len(rows)}", env=env).start()
        finally:
            server.kill9()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="another checkout to run side by side")
    parser.add_argument("--only", nargs="*", default=list(ATTACKS), help="attack names to run")
    args = parser.parse_args()
    baseline = baseline_env(parser, args.baseline_src) if args.baseline_src else None
    rows = run("now", {}, args.only)
    if baseline is not None:
        rows += run("baseline", baseline, args.only)
    print("\n| attack | build | canary worst ms | canary p99 ms | RSS growth MB | server |")
    print("|---|---|---:|---:|---:|---|")
    for label, name, worst, p99, grown, alive in sorted(rows, key=lambda r: (r[1], r[0])):
        print(f"| {name} | {label} | {worst:.1f} | {p99:.1f} | {grown:+.1f} | {alive} |")


if __name__ == "__main__":
    main()
