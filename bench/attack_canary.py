"""Attacks of issue 9 against a canary (the bad-input suite's figures, with real timing).

    python bench/attack_canary.py [--baseline-src DIR] [--only NAME ...] [--classes CLASS ...]

For every class of issue 9 (framing, tokenizer sizes, output buffers, pre-auth limits, GeoJSON
and the acknowledged => loadable invariant, binary keys, CSRF, hostile FOLLOW, silent link,
empty leader) it starts real geoserver processes and, for each attack, a canary connection PINGs
every 5 ms while the attacker sends the bytes (the replication attacks watch the follower, the
server whose data is at stake). It prints the canary's worst and p99 round trip, the server
process's RSS (psutil) before the attack, its peak while the attack ran (sampled every 5 ms)
and after it, and the outcome: what the attacker got back and what became of the data.
Long commands at 1M objects are bench/long_commands.py.
`--baseline-src DIR` runs the same attacks against another checkout's server (e.g. `git archive`
of the commit before the hardening, 721d082) side by side; every server runs with its defaults
(only a password where the attack is about one), so both builds meet the same attack.
Not a test: never fails CI.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "server"))

from baseline import baseline_env  # noqa: E402
from canary import Canary  # noqa: E402
from helpers import GeoServer, _encode, free_port  # noqa: E402

WAIT = 60.0  # seconds an attack may take before it is given up
PASSWORD = "s3cret"
MB = 2**20


# --- measuring ------------------------------------------------------------------------------

class RssSampler:
    """Peak RSS of one process, sampled every 5 ms from a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def now(self) -> int:
        try:
            return self.proc.memory_info().rss
        except psutil.Error:
            return 0

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.now())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Row:
    label: str
    cls: str
    name: str
    worst: float = float("nan")  # ms
    p99: float = float("nan")
    pings: int = 0
    canary_errors: list[str] = field(default_factory=list)
    rss_before: float = float("nan")  # MB
    rss_peak: float = float("nan")
    rss_after: float = float("nan")
    result: str = ""

    def line(self) -> str:
        err = f" canary: {self.canary_errors[0][:40]}" if self.canary_errors else ""
        return (f"{self.label:8} {self.cls:15} {self.name:44} worst {self.worst:8.1f} ms"
                f"  p99 {self.p99:7.1f} ms  ({self.pings} pings){err}  rss {self.rss_before:.0f}"
                f" / peak {self.rss_peak:.0f} / {self.rss_after:.0f} MB  {self.result}")


class Ctx:
    """One build's run: starts servers with its environment and records one Row per attack."""

    def __init__(self, label: str, env: dict[str, str], tmp: Path, only: set[str] | None) -> None:
        self.label, self.env, self.tmp, self.only = label, env, tmp, only
        self.servers: list[GeoServer] = []
        self.started = 0
        self.rows: list[Row] = []

    def start(self, name: str, args: list[str] | None = None, password: str | None = None,
              port: int | None = None, data: Path | None = None) -> GeoServer:
        env = dict(self.env)
        if password is not None:
            env["GEOSERVER_REQUIREPASS"] = password
        self.started += 1  # a fresh data dir per server, across scenarios too
        server = GeoServer(data or self.tmp / f"{name}{self.started}", port=port,
                           args=args, env=env)
        self.servers.append(server)
        server.start(wait=password is None)
        if password is not None:
            until(lambda: server.json("PING", password=password)["ok"], 15)
        warm_up(server, password)
        return server

    def wanted(self, name: str) -> bool:
        return self.only is None or name in self.only

    @contextlib.contextmanager
    def watch(self, cls: str, name: str, server: GeoServer,
              password: str | None = None) -> Iterator[Row]:
        """Canary and RSS sampler on `server` around the attack; the attack sets row.result."""
        row = Row(self.label, cls, name)
        assert server.proc is not None
        sampler = RssSampler(server.proc.pid)
        row.rss_before = sampler.now() / MB
        try:
            with sampler, Canary(server.port, password=password) as canary:
                try:
                    yield row
                except Exception as exc:  # an attack that could not finish is a figure too
                    row.result = f"attack failed: {exc!r}"[:120]
                time.sleep(0.2)
        finally:
            row.rss_peak, row.rss_after = sampler.peak / MB, sampler.now() / MB
        row.worst, row.p99, row.pings = canary.worst * 1000, canary.p99() * 1000, len(canary.rtts)
        row.canary_errors = list(canary.errors)
        self.rows.append(row)
        print(row.line(), flush=True)

    def stop_all(self) -> None:
        for server in self.servers:
            server.kill9()
        self.servers.clear()


def warm_up(server: GeoServer, password: str | None) -> None:
    """SERVER over RESP and over HTTP once, then wait until the RSS has not moved for 1 s (a
    fresh server grows ~8 MB in its first seconds, idle), so that what a new server allocates
    anyway is in the RSS before the first attack rather than counted as its growth."""
    server.json("SERVER", password=password)
    auth = b"Authorization: %s\r\n" % password.encode() if password else b""
    send_and_read(server.port, b"GET /SERVER HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
                  % auth, quiet=1.0)
    assert server.proc is not None
    proc, last, still = psutil.Process(server.proc.pid), -1, 0
    deadline = time.monotonic() + 10
    while still < 4 and time.monotonic() < deadline:
        rss = proc.memory_info().rss
        still, last = (still + 1 if rss == last else 0), rss
        time.sleep(0.25)


def until(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until predicate() is true (exceptions count as false), None after timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(Exception):
            if predicate():
                return time.monotonic() - started
        time.sleep(interval)
    return None


def stats(server: GeoServer, password: str | None = None) -> dict:
    return server.json("SERVER", password=password)["stats"]


def objects(server: GeoServer, password: str | None = None) -> int | str:
    try:
        return stats(server, password)["num_objects"]
    except Exception as exc:
        return f"no reply ({type(exc).__name__})"


def load(server: GeoServer, n: int, key: str = "fleet", password: str | None = None) -> None:
    client = server.client(password=password)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("SET", key, f"id{i}", "POINT", 33 + i * 1e-5, -115)
    pipe.execute()
    client.close()


def short(reply: bytes, n: int = 70) -> str:
    return reply[:n].decode("latin-1").replace("\r\n", " ").strip()


# --- the attacker's side --------------------------------------------------------------------

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
            data += b" <closed>"
        except TimeoutError:
            data += b" <kept open>"
        except OSError:
            data += b" <reset>"
        return data


def unread_pipeline(port: int) -> bytes:
    """3000 pipelined SCANs of ~100 KB replies that the client never reads (for 3 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        sock.sendall(b"".join(_encode(["SCAN", "big", "LIMIT", "100"]) for _ in range(3000)))
        time.sleep(3.0)
    return b"(not read for 3 s)"


def one_big_reply_unread(port: int) -> bytes:
    """One SCAN of ~1 MB, ten times over one connection, read by nobody for 3 s, under
    `client-output-buffer-limit normal 1mb 0 0` (CONFIG SET; a build without it keeps going)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as admin:
        admin.sendall(_encode(["CONFIG", "SET", "client-output-buffer-limit", "normal 1mb 0 0"]))
        admin.recv(1 << 10)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            sock.sendall(b"".join(_encode(["SCAN", "big", "LIMIT", "1000"]) for _ in range(10)))
            time.sleep(3.0)
            sock.settimeout(0.5)
            got = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(1 << 20):
                    got += chunk
                return b"<closed by the server after %d bytes>" % len(got)
            return b"<kept open, %d bytes read>" % len(got)
    finally:
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as admin:
            admin.sendall(_encode(["CONFIG", "SET", "client-output-buffer-limit",
                                   "normal 256mb 64mb 60"]))
            admin.recv(1 << 10)


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


def post(body: bytes, headers: bytes = b"") -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
            % (headers, len(body), body))


def geometry_collection(depth: int) -> str:
    geometry = '{"type":"Point","coordinates":[1,2]}'
    for _ in range(depth):
        geometry = '{"type":"GeometryCollection","geometries":[' + geometry + "]}"
    return geometry


def deep_geojson(depth: int) -> bytes:
    return _encode(["SET", "deep", "x", "OBJECT", geometry_collection(depth)])


SHARED: dict[str, tuple[str, Callable[[int], bytes]]] = {
    "array header *3000000000": ("framing", lambda p: send_and_read(p, b"*3000000000\r\n")),
    "array header *4294967295": ("framing", lambda p: send_and_read(p, b"*4294967295\r\n")),
    "bulk header $600000000": ("framing", lambda p: send_and_read(
        p, b"*2\r\n$3\r\nGET\r\n$600000000\r\n")),
    "1 MB inline token": ("tokenizer", lambda p: send_and_read(
        p, b"SET k big STRING " + b"a" * MB + b"\r\n")),
    "1 MB HTTP path": ("tokenizer", lambda p: send_and_read(
        p, b"GET /" + b"a" * MB + b" HTTP/1.1\r\n\r\n")),
    "1 MB HTTP POST body": ("tokenizer", lambda p: send_and_read(
        p, post(b"SET k b STRING " + b"b" * MB))),
    "RESP request trickled": ("tokenizer", lambda p: trickle(
        p, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n")),
    "HTTP headers trickled": ("tokenizer", lambda p: trickle(p, b"GET /PING HTTP/1.1\r\nHost: x\r\n")),
    "3000 unread 100 KB replies": ("output buffers", unread_pipeline),
    "10 unread 1 MB replies, hard limit 1 MB": ("output buffers", one_big_reply_unread),
    "GeometryCollection depth 300": ("geojson", lambda p: send_and_read(p, deep_geojson(300))),
}


def shared_attacks(ctx: Ctx) -> None:
    names = [n for n in SHARED if ctx.wanted(n)]
    if not names:
        return
    server = ctx.start("shared")
    load_strings(server, 1000)
    for name in names:
        cls, attack = SHARED[name]
        with ctx.watch(cls, name, server) as row:
            started = time.monotonic()
            reply = attack(server.port)
            back = until(lambda s=server: s.json("PING")["ok"], WAIT)
            alive = "DOWN" if back is None else (
                "serves" if back < 1 else f"serves again {time.monotonic() - started:.1f} s after the attack")
            row.result = f"{alive}; {short(reply)}"
        if alive != "serves":
            server.kill9()
            server = ctx.start("shared")
            load_strings(server, 1000)
    server.kill9()


def load_strings(server: GeoServer, n: int) -> None:
    client = server.client()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("SET", "big", f"id{i}", "STRING", "x" * 1000)
    pipe.execute()
    client.close()


# --- scenarios with their own servers -------------------------------------------------------

def preauth(ctx: Ctx) -> None:
    """With requirepass set: what a client that never authenticates can make the server do."""
    server = ctx.start("locked", password=PASSWORD)
    load(server, 100, password=PASSWORD)
    if ctx.wanted("pre-auth *3000000000"):
        with ctx.watch("pre-auth", "pre-auth *3000000000", server, PASSWORD) as row:
            row.result = short(send_and_read(server.port, b"*3000000000\r\n"))
    if ctx.wanted("pre-auth 10 x 10 MB AUTH bulks"):
        with ctx.watch("pre-auth", "pre-auth 10 x 10 MB AUTH bulks", server, PASSWORD) as row:
            body = b"x" * (10 * MB)
            socks, replies = [], []
            for _ in range(10):
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
                socks.append(sock)
                with contextlib.suppress(OSError):
                    sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n" % len(body))
                    sock.sendall(body + b"\r\n")
            time.sleep(1.0)  # all ten held open while the sampler watches
            for sock in socks:
                sock.settimeout(2)
                try:
                    replies.append(sock.recv(200) or b"<closed>")
                except OSError as exc:
                    replies.append(f"<{type(exc).__name__}>".encode())
                sock.close()
            row.result = f"{len(set(replies))} kind(s) of reply: {short(replies[0])}"
    if ctx.wanted("pre-auth 20 KB inline AUTH"):
        with ctx.watch("pre-auth", "pre-auth 20 KB inline AUTH", server, PASSWORD) as row:
            row.result = short(send_and_read(server.port, b"AUTH " + b"x" * 20000 + b"\r\n"))


DEPTHS = (33, 100, 200, 300, 400, 450, 470, 480, 482, 484, 486, 488, 490)


def geojson_reload(ctx: Ctx) -> None:
    """The acknowledged => loadable invariant: GeometryCollections nested 33 to 490 deep (the
    issue's AOF breaker was ~490), each SET once, then kill -9 and a restart on the same AOF."""
    name = "GeometryCollections depth 33-490, then restart"
    if not ctx.wanted(name):
        return
    server = ctx.start("deep")
    load(server, 100)
    with ctx.watch("geojson", name, server) as row:
        client = server.client()
        acked, errors = [], set()
        for depth in DEPTHS:
            try:
                client.execute_command("SET", "deep", f"d{depth}", "OBJECT", geometry_collection(depth))
                acked.append(depth)
            except Exception as exc:
                errors.add(str(exc)[:45])
        client.close()
        reply = (f"+OK for depths {acked}; " if acked else "all refused; ").encode() + \
            "; ".join(sorted(errors)).encode()
    server.kill9()
    want = 100 + len(acked)
    try:  # a server may answer PING while it loads and exit at a record it cannot apply
        server.start()
        until(lambda: objects(server) == want or server.proc.poll() is not None, 30)
        time.sleep(2.0)
        if server.proc.poll() is not None:
            raise AssertionError("exited")
        restart = f"restart loads {objects(server)} of {want} acknowledged objects"
    except AssertionError:
        tail = server.log().strip().splitlines()
        line = next((line for line in reversed(tail) if "corrupt" in line), tail[-1] if tail else "?")
        restart = "RESTART FAILS: " + line[max(0, line.find("corrupt")):][:110]
    row.result = f"{short(reply, 120)}; {restart}"


def binary_keys(ctx: Ctx) -> None:
    name = "SET keys b'\\xff' and b'\\xfe'"
    if not ctx.wanted(name):
        return
    server = ctx.start("binary")
    with ctx.watch("binary keys", name, server) as row:
        client = server.client()
        client.execute_command("SET", b"\xff", "a", "STRING", "first")
        client.execute_command("SET", b"\xfe", "a", "STRING", "second")
        keys = client.execute_command("KEYS", "*")
        first = client.execute_command("GET", b"\xff", "a")
        client.close()
        row.result = f"KEYS * -> {keys!r}; GET b'\\xff' a -> {first!r}"


def body_of(http_reply: bytes) -> bytes:
    return http_reply.split(b"\r\n\r\n", 1)[-1]


def browser_get(port: int, path: str) -> bytes:
    """A GET the way a page on another site makes a browser send it."""
    return send_and_read(port, b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
                         b"Sec-Fetch-Site: cross-site\r\nConnection: close\r\n\r\n" % path.encode(),
                         quiet=1.0)


def csrf(ctx: Ctx) -> None:
    for name, path in (("CSRF: page sends GET /FLUSHDB", "/FLUSHDB"),
                       ("CSRF: page sends GET /SET+fleet+id1+POINT+0+0", "/SET+fleet+id1+POINT+0+0")):
        if not ctx.wanted(name):
            continue
        server = ctx.start("csrf")
        load(server, 1000)
        with ctx.watch("CSRF", name, server) as row:
            reply = browser_get(server.port, path)
            time.sleep(0.5)
            point = server.json("GET", "fleet", "id1", "POINT").get("point")
            row.result = (f"{short(reply, 12)} {short(body_of(reply), 60)}; "
                          f"{objects(server)} of 1000 objects, id1 at {point}")
        server.kill9()


def hostile_follow(ctx: Ctx) -> None:
    """A victim with 1000 objects and no password; a stranger geoserver with 5."""
    for name in ("hostile FOLLOW: page sends GET /FOLLOW+stranger", "hostile FOLLOW over RESP"):
        if not ctx.wanted(name):
            continue
        victim = ctx.start("victim")
        load(victim, 1000)
        stranger = ctx.start("stranger")
        load(stranger, 5, key="attacker")
        with ctx.watch("hostile FOLLOW", name, victim) as row:
            started = time.monotonic()
            if "page" in name:
                reply = browser_get(victim.port, f"/FOLLOW+127.0.0.1+{stranger.port}")
                told = f"{short(reply, 12)} {short(body_of(reply), 50)}"
            else:
                told = str(victim.json("FOLLOW", "127.0.0.1", stranger.port))[:50]
            replaced = until(lambda v=victim: objects(v) == 5, 10)
            st = stats(victim)
            how = (f"data replaced after {time.monotonic() - started:.1f} s" if replaced is not None
                   else f"after 10 s: {st['num_objects']} objects, state "
                        f"{st.get('replication_state', '-')!r}")
            row.result = f"{told}; {how}"
        victim.kill9()
        stranger.kill9()


class Proxy:
    """TCP proxy to 127.0.0.1:target; blackhole() drops every byte both ways (no FIN, no RST)."""

    def __init__(self, target: int) -> None:
        self.target, self.dropping = target, threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                if self.listener.fileno() < 0:
                    return
                continue
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                if not self.dropping.is_set():
                    b.sendall(data)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


def in_sync(leader: GeoServer, follower: GeoServer) -> bool:
    fol = stats(follower)
    return bool(fol.get("caught_up")) and fol["aof_size"] == stats(leader)["aof_size"]


def silent_link(ctx: Ctx) -> None:
    name = "leader link silently cut (blackhole)"
    if not ctx.wanted(name):
        return
    leader = ctx.start("leader")
    proxy = Proxy(leader.port)
    try:
        follower = ctx.start("follower", args=["--follow", f"127.0.0.1:{proxy.port}"])
        load(leader, 1000)
        if until(lambda: in_sync(leader, follower), 60) is None:
            print(f"{ctx.label}: the follower never caught up; silent link skipped")
            return
        with ctx.watch("silent link", name, follower) as row:
            proxy.dropping.set()
            load(leader, 20, key="later")
            noticed = until(lambda: not stats(follower)["caught_up"], 30)
            health = follower.json("HEALTHZ")
            row.result = (f"caught_up false after {noticed:.1f} s, HEALTHZ {health.get('err')!r}"
                          if noticed is not None else
                          f"after 30 s still caught_up true, HEALTHZ ok={health.get('ok')}")
            row.result += f"; reads served: {follower.json('GET', 'fleet', 'id1')['ok']}"
    finally:
        proxy.close()


def empty_leader(ctx: Ctx) -> None:
    name = "leader restarted on an empty data dir"
    if not ctx.wanted(name):
        return
    leader = ctx.start("leader")
    load(leader, 1000)
    follower = ctx.start("follower", args=["--follow", f"127.0.0.1:{leader.port}"])
    if until(lambda: in_sync(leader, follower), 60) is None:
        print(f"{ctx.label}: the follower never caught up; empty leader skipped")
        return
    aof_before = follower.aof_path.stat().st_size
    with ctx.watch("empty leader", name, follower) as row:
        leader.kill9()
        shutil.rmtree(leader.dir)
        started = time.monotonic()
        leader.start()
        wiped = until(lambda: objects(follower) == 0, 15)
        st = stats(follower)
        aof = follower.aof_path.stat().st_size if follower.aof_path.exists() else 0
        row.result = (f"follower wiped {time.monotonic() - started:.1f} s after the leader's start"
                      if wiped is not None else
                      f"after 15 s: {st['num_objects']} objects kept, state "
                      f"{st.get('replication_state')!r}")
        row.result += f"; follower AOF {aof_before} -> {aof} bytes"


SCENARIOS: list[Callable[[Ctx], None]] = [preauth, geojson_reload, binary_keys, csrf,
                                          hostile_follow, silent_link, empty_leader]
NAMES = [*SHARED, "pre-auth *3000000000", "pre-auth 10 x 10 MB AUTH bulks", "pre-auth 20 KB inline AUTH",
         "GeometryCollections depth 33-490, then restart", "SET keys b'\\xff' and b'\\xfe'",
         "CSRF: page sends GET /FLUSHDB", "CSRF: page sends GET /SET+fleet+id1+POINT+0+0",
         "hostile FOLLOW: page sends GET /FOLLOW+stranger", "hostile FOLLOW over RESP",
         "leader link silently cut (blackhole)", "leader restarted on an empty data dir"]


def run(label: str, env: dict[str, str], only: set[str] | None) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        ctx = Ctx(label, env, Path(tmp), only)
        try:
            shared_attacks(ctx)
            for scenario in SCENARIOS:
                try:
                    scenario(ctx)
                finally:
                    ctx.stop_all()
        finally:
            ctx.stop_all()
        return ctx.rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-src", type=Path, help="another checkout to run side by side")
    parser.add_argument("--only", nargs="*", choices=NAMES, help="attack names to run (default all)")
    parser.add_argument("--list", action="store_true", help="list the attack names and exit")
    args = parser.parse_args()
    if args.list:
        print("\n".join(NAMES))
        return
    baseline = baseline_env(parser, args.baseline_src) if args.baseline_src else None
    only = set(args.only) if args.only else None
    free_port()  # fail early without a loopback
    rows = run("now", {}, only)
    if baseline is not None:
        rows += run("baseline", baseline, only)
    print("\n| class | attack | build | canary worst / p99 ms | RSS before / peak / after MB | outcome |")
    print("|---|---|---|---:|---:|---|")
    order = {n: i for i, n in enumerate(NAMES)}
    for r in sorted(rows, key=lambda r: (order.get(r.name, 99), r.label != "baseline")):
        canary = f"{r.worst:.1f} / {r.p99:.1f}" + (" (canary cut)" if r.canary_errors else "")
        print(f"| {r.cls} | {r.name} | {r.label} | {canary} | {r.rss_before:.0f} / {r.rss_peak:.0f}"
              f" / {r.rss_after:.0f} | {r.result.replace('|', '/')} |")


if __name__ == "__main__":
    main()
