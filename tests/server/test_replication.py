"""Leader -> follower replication with real processes, real files and real sockets.

The first test is the regression for the Tile38 1.30 bug this project exists for: after the
leader's AOFSHRINK, a follower reported twice the leader's aof_size and kept stale memory.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import GeoServer, wait_until


def load(server: GeoServer, n: int, key: str = "fleet", start: int = 0) -> None:
    pipe = server.client().pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.execute_command("SET", key, f"id{i}", "FIELD", "speed", i % 90,
                             "POINT", 33 + (i % 977) * 1e-4, -115 + (i % 613) * 1e-4)
    pipe.execute()


def churn(server: GeoServer, n: int) -> None:
    """Overwrites and deletes: the AOF grows well past what a shrink will keep."""
    pipe = server.client().pipeline(transaction=False)
    for i in range(n):
        pipe.execute_command("SET", "fleet", f"id{i % 500}", "POINT", 34 + i * 1e-5, -116)
        if i % 7 == 0:
            pipe.execute_command("DEL", "fleet", f"id{(i * 13) % 2000}")
    pipe.execute()


@contextlib.contextmanager
def writing(server: GeoServer, prefix: str) -> Iterator[None]:
    """A client thread writing to `server` for as long as the block runs."""
    stop = threading.Event()

    def writer() -> None:
        c = server.client()
        i = 0
        while not stop.is_set():
            c.execute_command("SET", "live", f"{prefix}-{i % 300}", "POINT", 33.1, -115.1 + i * 1e-6)
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


def in_sync(leader: GeoServer, follower: GeoServer) -> bool:
    lead, fol = leader.stats(), follower.stats()
    return bool(fol.get("caught_up")) and fol["aof_size"] == lead["aof_size"]


def dataset(server: GeoServer) -> dict[str, list]:
    """Every object of every collection, by key (through the public read commands)."""
    out = {}
    c = server.client()
    for key in sorted(k.decode() for k in c.execute_command("KEYS", "*")):
        items = []
        cursor = 0
        while True:
            cursor, page = c.execute_command("SCAN", key, "CURSOR", cursor, "LIMIT", 1000)
            items.extend(page)
            if int(cursor) == 0:
                break
        out[key] = sorted(items, key=lambda it: it[0])
    return out


def follower_of(make_server: Callable[..., GeoServer], leader: GeoServer, name: str,
                extra: list[str] | None = None) -> GeoServer:
    return make_server(name, args=["--follow", f"127.0.0.1:{leader.port}", *(extra or [])])


def synced_pair(make_server: Callable[..., GeoServer], objects: int) -> tuple[GeoServer, GeoServer]:
    """A leader loaded with `objects` points and one follower caught up with it."""
    leader = make_server("leader")
    load(leader, objects)
    f = follower_of(make_server, leader, "f")
    wait_until(lambda: in_sync(leader, f), 15, message="sync")
    return leader, f


def test_followers_match_leader_after_shrink_under_writes(make_server):
    """Seed regression: shrink while writes continue; followers end byte-identical, with the
    leader's aof_size and dataset, memory in line, and no second shrink."""
    leader = make_server("leader")
    load(leader, 3000)
    churn(leader, 6000)
    f1 = follower_of(make_server, leader, "f1")
    f2 = follower_of(make_server, leader, "f2")
    wait_until(lambda: in_sync(leader, f1) and in_sync(leader, f2), 30, message="initial sync")

    for round_no in range(3):  # several shrinks in a row
        with writing(leader, f"round{round_no}"):
            before = leader.stats()["last_shrink_time"]
            assert leader.json("AOFSHRINK")["ok"]
            wait_until(lambda b=before: leader.stats()["last_shrink_time"] > b, 30, message="shrink done")
        assert leader.stats()["last_shrink_result"] == "ok"
        wait_until(lambda: in_sync(leader, f1) and in_sync(leader, f2), 30, message="resync after shrink")
        lead_bytes = leader.aof_path.read_bytes()
        for f in (f1, f2):
            stats = f.stats()
            assert stats["aof_size"] == leader.stats()["aof_size"] == len(lead_bytes)
            assert f.aof_path.read_bytes() == lead_bytes
            assert stats["num_objects"] == leader.stats()["num_objects"]
    expected = dataset(leader)
    assert expected["fleet"]
    for f in (f1, f2):
        assert dataset(f) == expected
        # memory in line with the leader's: the old dataset was replaced, not kept
        assert f.stats()["mem_alloc"] < 1.5 * leader.stats()["mem_alloc"]
    # no second shrink needed: sizes already agree and stay equal after more writes
    load(leader, 10, key="after")
    wait_until(lambda: in_sync(leader, f1) and in_sync(leader, f2), 10, message="stream after shrink")


def test_follower_restart_resumes_by_prefix(make_server):
    """kill -9 of a follower while the leader streams writes to it; on restart it proves its
    (possibly shorter) AOF is a prefix and continues from there, no full resync."""
    leader, f = synced_pair(make_server, 500)
    with writing(leader, "w"):
        # streaming: caught up with the handshake's size and well past the 500 loaded objects
        # (not "as long as the leader's": a writer that never pauses rarely lets a read see that)
        wait_until(lambda: (st := f.stats())["caught_up"] and st["aof_size"] > 60_000, 15,
                   message="streaming writes")
        f.kill9()  # mid-stream
    load(leader, 500, start=500)
    f.args = []  # no --follow: the persisted config must resume following
    f.start()
    wait_until(lambda: in_sync(leader, f), 15, message="resumed")
    stats = f.stats()
    assert stats["resyncs"] == 0  # incremental: its AOF was still a prefix of the leader's
    assert f.aof_path.read_bytes() == leader.aof_path.read_bytes()


def test_leader_restart_while_followers_stream(make_server):
    leader = make_server("leader", args=["--appendfsync", "always"])
    f = follower_of(make_server, leader, "f")
    load(leader, 300)
    wait_until(lambda: in_sync(leader, f), 15, message="sync")
    leader.kill9()
    wait_until(lambda: not f.stats()["caught_up"], 10, message="follower notices")
    assert f.json("HEALTHZ")["err"] == "not caught up"
    leader.start()
    load(leader, 300, start=300)
    wait_until(lambda: in_sync(leader, f), 15, message="sync after leader restart")
    assert f.aof_path.read_bytes() == leader.aof_path.read_bytes()


def test_follower_whose_aof_diverged_does_full_resync(make_server):
    """A follower detached, written to, and re-attached: its file is no longer a prefix."""
    leader, f = synced_pair(make_server, 200)
    assert f.json("FOLLOW", "no", "one")["ok"]
    assert f.json("SET", "rogue", "x", "POINT", 1, 1)["ok"]
    assert f.json("FOLLOW", "127.0.0.1", leader.port)["ok"]
    wait_until(lambda: in_sync(leader, f), 15, message="resync")
    assert f.json("GET", "rogue", "x")["err"] == "key not found"
    assert f.aof_path.read_bytes() == leader.aof_path.read_bytes()


def test_resync_command_rebuilds_follower(make_server):
    leader, f = synced_pair(make_server, 100)
    before = f.stats()["resyncs"]
    assert f.json("RESYNC")["ok"]
    wait_until(lambda: f.stats()["resyncs"] == before + 1 and in_sync(leader, f), 15, message="resync")
    assert leader.json("RESYNC")["err"] == "not a follower"


def test_follow_refusals(make_server):
    """(leaderauth is sent only by an authenticated FOLLOW: the followers here have a
    requirepass; tests/server/test_replication_safety.py covers the password-less case)"""
    leader = make_server("leader", args=["--requirepass", "s3cret"])
    other = make_server("other", args=["--requirepass", "pw", "--leaderauth", "pw"])
    pw = {"password": "pw"}
    assert other.json("FOLLOW", "127.0.0.1", other.port, **pw)["err"] == "cannot follow self"
    assert other.json("CONFIG", "SET", "leaderauth", "", **pw)["ok"]
    err = other.json("FOLLOW", "127.0.0.1", leader.port, **pw)["err"]
    assert "authentication required" in err
    assert other.json("CONFIG", "SET", "leaderauth", "wrong", **pw)["ok"]
    assert "invalid password" in other.json("FOLLOW", "127.0.0.1", leader.port, **pw)["err"]
    assert other.json("CONFIG", "SET", "leaderauth", "s3cret", **pw)["ok"]
    assert other.json("FOLLOW", "127.0.0.1", leader.port, **pw)["ok"]
    third = make_server("third", args=["--requirepass", "pw", "--leaderauth", "pw"])
    assert third.json("FOLLOW", "127.0.0.1", other.port, **pw)["err"] == "cannot follow a follower"
    assert "cannot" in third.json("FOLLOW", "127.0.0.1", 1, **pw)["err"]
    assert third.json("FOLLOW", "127.0.0.1", "notaport", **pw)["err"] == "invalid argument 'notaport'"


def test_follower_rules_and_replication_introspection(make_server):
    leader = make_server("leader")
    dead_port = leader.port + 1 if leader.port < 65000 else leader.port - 1
    lonely = make_server("lonely", args=["--follow", f"127.0.0.1:{dead_port}"])
    # never caught up: reads gated, health fails with HTTP 500, SERVER still answers
    assert lonely.json("GET", "fleet", "x")["err"] == "catching up to leader"
    assert lonely.json("HEALTHZ")["err"] == "catching up to leader"
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{lonely.port}/healthz", timeout=5)
    assert info.value.code == 500
    assert lonely.stats()["caught_up"] is False

    f = follower_of(make_server, leader, "f")
    load(leader, 10)
    wait_until(lambda: in_sync(leader, f), 15, message="sync")
    assert f.json("SET", "fleet", "x", "POINT", 1, 1)["err"] == "not the leader"
    assert f.json("AOFSHRINK")["err"] == "not the leader"
    role = leader.json("ROLE")["role"]
    assert role["role"] == "master" and role["offset"] == leader.stats()["aof_size"]
    assert [s["port"] for s in role["slaves"]] == [str(f.port)]
    frole = f.json("ROLE")["role"]
    assert frole["role"] == "slave" and frole["port"] == leader.port
    info = f.client().info("replication")  # redis-py parses INFO's text format
    assert info["role"] == "slave" and info["master_port"] == leader.port
    assert leader.client().info("replication")["connected_slaves"] == 1
    assert f.json("HEALTHZ")["ok"]


def test_readonly_is_persisted(make_server):
    s = make_server("ro")
    assert s.json("READONLY", "yes")["ok"]
    assert s.json("SET", "k", "i", "POINT", 1, 1)["err"] == "read only"
    assert s.json("READONLY", "maybe")["err"] == "invalid argument 'maybe'"
    s.stop()
    s.start()
    assert s.stats()["read_only"] is True
    assert s.json("READONLY", "no")["ok"]
    assert s.json("SET", "k", "i", "POINT", 1, 1)["ok"]


def test_metrics_endpoint(make_server):
    from helpers import free_port

    mport = free_port()
    leader = make_server("leader", args=["--metrics-addr", f"127.0.0.1:{mport}"])
    fport = free_port()
    f = follower_of(make_server, leader, "f", ["--metrics-addr", f"127.0.0.1:{fport}"])
    load(leader, 50)
    wait_until(lambda: in_sync(leader, f), 15, message="sync")
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    assert f"tile38_aof_size {float(leader.stats()['aof_size'])}" in text
    assert 'tile38_cmd_total{cmd="set",result="ok"} 50.0' in text
    assert "tile38_cmd_duration_seconds_bucket" in text
    assert "geoserver_connected_followers 1.0" in text
    ftext = urllib.request.urlopen(f"http://127.0.0.1:{fport}/metrics", timeout=5).read().decode()
    assert "tile38_caught_up 1.0" in ftext
    assert "geoserver_replication_lag_bytes 0.0" in ftext
    same_port = urllib.request.urlopen(f"http://127.0.0.1:{leader.port}/metrics", timeout=5).read()
    assert b"tile38_aof_size" in same_port
    assert urllib.request.urlopen(f"http://127.0.0.1:{fport}/healthz", timeout=5).status == 200


def test_aofmd5_matches_file(make_server):
    import hashlib

    s = make_server("md5")
    load(s, 20)
    data = s.aof_path.read_bytes()
    assert s.json("AOFMD5", 0, len(data))["md5"] == hashlib.md5(data).hexdigest()
    assert s.json("AOFMD5", 10, 25)["md5"] == hashlib.md5(data[10:35]).hexdigest()
    assert s.json("AOFMD5", 0, len(data) + 1)["err"] == "EOF"
    assert s.json("AOFMD5", -1, 2)["err"] == "invalid argument '-1'"
    assert s.client().execute_command("AOFMD5", 0, 0) == b"d41d8cd98f00b204e9800998ecf8427e"
    assert s.json("AOF", len(data) + 100)["err"].startswith("pos is too big")


def test_shrink_is_single_flight_and_reported(make_server):
    s = make_server("solo")
    load(s, 2000)
    churn(s, 2000)
    size = s.stats()["aof_size"]
    c = s.client()
    pipe = c.pipeline(transaction=False)
    pipe.execute_command("AOFSHRINK")
    pipe.execute_command("AOFSHRINK")
    assert pipe.execute() == [b"OK", b"OK"]
    wait_until(lambda: s.stats()["last_shrink_result"] == "ok", 15, message="shrink")
    time.sleep(0.2)
    stats = s.stats()
    assert stats["aof_size"] < size and stats["aof_size"] == s.aof_path.stat().st_size
    assert stats["last_shrink_duration_ms"] > 0
    s.stop()
    s.start()  # the shrunk file replays to the same dataset
    assert s.stats()["num_objects"] == stats["num_objects"]


def test_passwords_from_the_environment(tmp_path):
    """GEOSERVER_REQUIREPASS / GEOSERVER_LEADERAUTH keep passwords out of the process list."""
    env = {"GEOSERVER_REQUIREPASS": "pw", "GEOSERVER_LEADERAUTH": "pw"}
    leader = GeoServer(tmp_path / "l", env={"GEOSERVER_REQUIREPASS": "pw"})
    follower = GeoServer(tmp_path / "f", env=env)
    try:
        leader.start(wait=False)
        wait_until(lambda: leader.json("PING")["ok"], 15, message="leader up")
        assert leader.json("GET", "k", "i")["err"] == "authentication required"
        leader.json("SET", "k", "i", "POINT", 1, 2, password="pw")
        follower.args = ["--follow", f"127.0.0.1:{leader.port}"]
        follower.start(wait=False)
        wait_until(lambda: follower.json("SERVER", password="pw")["stats"].get("caught_up"), 15,
                   message="follower authenticated to its leader")
        assert "pw" not in " ".join(follower.proc.args)  # type: ignore[union-attr]
    finally:
        leader.kill9()
        follower.kill9()


def test_aofmd5_empty_range_at_the_end_is_eof(make_server):
    """Tile38: AOFMD5 pos 0 with pos >= aof_size is EOF (an empty AOF included)."""
    s = make_server("edge")
    assert s.json("AOFMD5", 0, 0)["err"] == "EOF"
    s.json("SET", "k", "i", "POINT", 1, 1)
    size = s.stats()["aof_size"]
    assert s.json("AOFMD5", size, 0)["err"] == "EOF"
    assert s.json("AOFMD5", size - 1, 0)["md5"] == "d41d8cd98f00b204e9800998ecf8427e"


def test_config_set_appendfsync_is_checked_before_it_is_stored(make_server):
    s = make_server("cfg")
    err = s.json("CONFIG", "SET", "appendfsync", "bogus")["err"]
    assert err == "Invalid argument 'bogus' for CONFIG SET 'appendfsync'"
    assert s.json("CONFIG", "GET", "appendfsync")["properties"] == {"appendfsync": "everysec"}
    assert s.json("CONFIG", "SET", "appendfsync", "always")["ok"]
    assert s.json("CONFIG", "GET", "appendfsync")["properties"] == {"appendfsync": "always"}


def test_aof_pos_refused_when_the_file_was_replaced_during_the_handshake(make_server):
    """A follower's SERVER/AOFMD5 proved a size and prefix of one AOF file; if a shrink
    replaced the file before its `AOF pos`, the leader refuses instead of streaming from a
    position in a different file (the follower then re-handshakes)."""
    from wire import Wire

    leader = make_server("leader")
    load(leader, 200)
    with Wire(leader.port, leader.host) as w:
        w.call("SERVER")
        before = leader.stats()["last_shrink_time"]
        assert leader.json("AOFSHRINK")["ok"]
        wait_until(lambda: leader.stats()["last_shrink_time"] > before, 15, message="shrink")
        assert str(w.call("AOF", 0)) == "ERR aof changed during the handshake, retry"
    with Wire(leader.port, leader.host) as w:  # a fresh handshake streams
        w.call("SERVER")
        assert w.call("AOF", 0) == "OK"


def _slow_proxy(target_port: int, delay: float) -> tuple[int, Callable[[], None]]:
    """A TCP proxy to 127.0.0.1:target_port that holds each new connection for `delay` s:
    a slow leader, so that a FOLLOW is still dialling when the next command arrives."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def pipe(a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by the test
                return
            time.sleep(delay)
            upstream = socket.create_connection(("127.0.0.1", target_port))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()

    def close() -> None:
        stop.set()
        listener.close()

    return listener.getsockname()[1], close


def test_a_follow_racing_a_shrink_never_swaps_in_the_old_dataset(make_server):
    """Found in review: AOFSHRINK accepted while a FOLLOW was still dialling a slow leader;
    the follower resynced, then the shrink swapped its snapshot of the old dataset in: the
    AOF no longer a prefix of the leader's, stale objects back after a restart. Now FOLLOW
    re-checks for a shrink after dialling, and a shrink never swaps a replaced file."""
    target = make_server("target")
    load(target, 50, key="small")
    busy = make_server("busy", args=["--resync-min-ratio", "0"])  # may drop its data for target's
    load(busy, 150_000)  # a shrink of a second or so
    port, close = _slow_proxy(target.port, 0.7)
    try:
        results: list[object] = []

        def follow() -> None:
            try:
                results.append(busy.client().execute_command("FOLLOW", "127.0.0.1", port))
            except Exception as exc:  # the refusal when the shrink wins the race
                results.append(exc)

        t = threading.Thread(target=follow)
        t.start()
        time.sleep(0.2)
        assert busy.client().execute_command("AOFSHRINK") == b"OK"
        t.join(10)
        wait_until(lambda: not busy.stats()["aof_shrinking"], 30, message="shrink ends")
        stats = busy.stats()
        assert stats["aof_size"] == busy.aof_path.stat().st_size
        if stats.get("following"):  # FOLLOW won: the shrink must not have swapped
            assert stats["last_shrink_result"].startswith("error: the AOF was replaced")
            wait_until(lambda: in_sync(target, busy), 15, message="follower in sync")
            assert busy.aof_path.read_bytes() == target.aof_path.read_bytes()
        else:  # the shrink won: FOLLOW was refused, the dataset is intact
            assert "AOFSHRINK is running" in str(results[0])
            assert stats["num_objects"] == 150_000
    finally:
        close()
