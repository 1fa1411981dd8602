"""Replication safety (issue 9) with real processes: a silent leader link is detected, a
leader that came back empty (or a much smaller stranger) never wipes a follower, reconnects
and failed resyncs back off, leaderauth goes only to trusted leaders, a kill -9 during
AOFSHRINK leaves no orphan child and no stale file, and a failed fsync under
`appendfsync always` acknowledges nothing. No timing thresholds: servers run with
`--repl-timeout 1` and every wait is a generous wait_until.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import threading
from pathlib import Path

import psutil
import pytest
from fakeleader import FakeLeader
from geoserver.aof.log import AofLog
from geoserver.replication.follower import BACKOFF_MAX, Backoff, resync_refusal
from helpers import GeoServer, _encode, free_port, wait_until

FAST = ["--repl-timeout", "1"]


def load(server: GeoServer, n: int, key: str = "fleet", start: int = 0, **auth) -> None:
    pipe = server.client(**auth).pipeline(transaction=False)
    for i in range(start, start + n):
        pipe.execute_command("SET", key, f"id{i}", "POINT", 33 + i * 1e-5, -115)
    pipe.execute()


def in_sync(leader: GeoServer, follower: GeoServer) -> bool:
    fol = follower.stats()
    return bool(fol.get("caught_up")) and fol["aof_size"] == leader.stats()["aof_size"]


def follow_args(port: int, *extra: str) -> list[str]:
    return ["--follow", f"127.0.0.1:{port}", *FAST, *extra]


class Proxy:
    """A TCP proxy to 127.0.0.1:target. `blackhole()` drops every byte both ways (new
    connections are still accepted, then hear nothing): a cut that sends no FIN or RST."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.dropping = threading.Event()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def blackhole(self) -> None:
        self.dropping.set()

    def restore(self) -> None:
        self.dropping.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                if not self.dropping.is_set():
                    b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()


# --- the rules, as pure functions --------------------------------------------------------

@pytest.mark.parametrize(("ours", "theirs", "leader", "synced", "ratio", "refused"), [
    (0, 0, "b", "a", 0.5, False),        # nothing to lose
    (100, 0, "a", "a", 0.5, True),       # our own leader came back empty
    (100, 0, "b", "a", 0.5, True),       # restarted on an empty data dir (new id)
    (100, 10, "a", "a", 0.5, False),     # the same leader after an AOFSHRINK (or deletes)
    (100, 49, "b", "a", 0.5, True),      # a stranger with less than half
    (100, 50, "b", "a", 0.5, False),     # ... with half
    (100, 49, "b", "", 0.5, True),       # no leader on record (older config file)
    (100, 0, "b", "a", 0.0, False),      # resync-min-ratio 0 turns the rule off
])
def test_resync_refusal_rule(ours, theirs, leader, synced, ratio, refused):
    assert bool(resync_refusal(ours, theirs, leader, synced, ratio)) is refused


def test_backoff_doubles_to_a_cap_and_resets():
    b = Backoff()
    delays = [b.next() for _ in range(8)]
    assert delays[:3] == [1.0, 2.0, 4.0] and delays[-1] == BACKOFF_MAX
    assert delays == sorted(delays)
    b.reset()
    assert (b.failures, b.delay, b.next()) == (0, 0.0, 1.0)


def test_aof_log_counts_nothing_whose_fsync_failed(tmp_path, monkeypatch):
    """The in-process twin: with `always`, a failed fsync leaves `flushed`, the file and the
    listeners where they were and keeps the records buffered; the retry writes them once."""
    real_fsync, real_truncate = os.fsync, os.ftruncate
    failing = {"fsync": False, "truncate": False}

    def fsync(fd: int) -> None:
        if failing["fsync"]:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    def ftruncate(fd: int, size: int) -> None:
        if failing["truncate"]:
            raise OSError(errno.EIO, "Input/output error")
        real_truncate(fd, size)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "ftruncate", ftruncate)
    path = tmp_path / "a.aof"
    aof = AofLog(path, "always")
    seen: list[bytes] = []
    aof.listeners.append(seen.append)
    aof.append(b"one;")
    aof.flush()
    for cut_fails in (False, True):
        failing.update(fsync=True, truncate=cut_fails)
        aof.append(b"two;")
        with pytest.raises(OSError):
            aof.flush()
        assert aof.flushed == 4 and aof.size == 8 and seen == [b"one;"]
        assert path.read_bytes() == (b"one;two;" if cut_fails else b"one;")
        failing.update(fsync=False, truncate=False)
        aof.flush()
        assert path.read_bytes() == b"one;two;" and aof.flushed == 8 and seen == [b"one;", b"two;"]
        # start the next round from one record again
        aof.truncate(4)
        seen[:] = [b"one;"]
    aof.close()


# --- a silent link ------------------------------------------------------------------------

def test_silent_link_is_detected_and_an_idle_one_is_kept(make_server):
    leader = make_server("leader")
    proxy = Proxy(leader.port)
    try:
        f = make_server("f", args=follow_args(proxy.port))
        load(leader, 50)
        wait_until(lambda: in_sync(leader, f), 30, message="sync")
        # an idle leader sends nothing (as Tile38's): the side-check finds it at our size
        wait_until(lambda: f.stats()["replication_link_checks"] >= 2, 30, message="idle checks")
        stats = f.stats()
        assert stats["caught_up"] and stats["replication_state"] == "streaming"
        assert f.json("HEALTHZ")["ok"]

        proxy.blackhole()  # no FIN, no RST: the stream just goes quiet
        load(leader, 20, start=50)
        wait_until(lambda: not f.stats()["caught_up"], 60, message="follower notices the dead link")
        assert f.json("HEALTHZ")["err"] == "not caught up"
        assert f.client().info("replication")["master_link_status"] == "down"
        assert "leader link silent" in f.log()
        assert f.json("GET", "fleet", "id1")["ok"]  # reads keep being served

        proxy.restore()
        wait_until(lambda: in_sync(leader, f), 90, message="reconnected and caught up")
        assert f.aof_path.read_bytes() == leader.aof_path.read_bytes()
    finally:
        proxy.close()


# --- a leader that came back empty, a smaller stranger ------------------------------------

def test_leader_back_empty_keeps_follower_data_until_resync_force(make_server):
    leader = make_server("leader")
    load(leader, 400)
    f = make_server("f", args=follow_args(leader.port))
    lax = make_server("lax", args=follow_args(leader.port, "--resync-min-ratio", "0"))
    wait_until(lambda: in_sync(leader, f) and in_sync(leader, lax), 30, message="sync")
    kept = f.aof_path.read_bytes()

    leader.kill9()
    shutil.rmtree(leader.dir)
    leader.start()  # same address, empty data dir, new id

    wait_until(lambda: f.stats()["replication_state"] == "refused", 60, message="refusal")
    stats = f.stats()
    assert stats["num_objects"] == 400 and not stats["caught_up"]
    assert "the leader has no objects" in stats["resync_refusal"]
    assert stats["replication_error"].startswith("full resync refused")
    assert f.aof_path.read_bytes() == kept
    assert not (f.dir / "appendonly.aof-resync").exists()
    assert f.json("GET", "fleet", "id7")["ok"]
    assert f.json("HEALTHZ")["err"] == "not caught up"
    info = f.client().info("replication")
    assert info["replication_state"] == "refused" and info["master_link_status"] == "down"
    assert "full resync refused" in f.log()
    # the knob: resync-min-ratio 0 follows the empty leader, as before
    wait_until(lambda: in_sync(leader, lax) and lax.stats()["num_objects"] == 0, 60,
               message="the lax follower follows the empty leader")

    load(leader, 5, key="new")  # still a stranger with far fewer objects
    assert "RESYNC FORCE" in f.json("RESYNC")["err"]
    wait_until(lambda: f.stats()["replication_failures"] >= 3, 60, message="retries back off")
    assert f.stats()["replication_retry_delay"] >= 4
    assert f.stats()["replication_state"] == "refused"

    f.kill9()  # a restart keeps refusing, and keeps serving the data it refuses to drop
    f.start()
    wait_until(lambda: f.stats()["replication_state"] == "refused", 60, message="refusal after restart")
    assert f.json("GET", "fleet", "id7")["ok"] and f.stats()["num_objects"] == 400

    assert f.json("RESYNC", "FORCE")["ok"]
    wait_until(lambda: in_sync(leader, f), 60, message="forced resync")
    stats = f.stats()
    assert stats["num_objects"] == 5 and stats["resync_refusal"] == ""
    assert f.aof_path.read_bytes() == leader.aof_path.read_bytes()
    assert f.json("RESYNC", "maybe")["err"] == "invalid argument 'maybe'"


def test_a_smaller_new_leader_is_refused_a_comparable_one_accepted(make_server):
    a = make_server("a")
    load(a, 300)
    f = make_server("f", args=follow_args(a.port))
    wait_until(lambda: in_sync(a, f), 30, message="sync")
    small = make_server("small")
    load(small, 20)
    assert f.json("FOLLOW", "127.0.0.1", small.port)["ok"]
    wait_until(lambda: f.stats()["replication_state"] == "refused", 60, message="refusal")
    assert "not the one this dataset came from" in f.stats()["resync_refusal"]
    assert f.stats()["num_objects"] == 300
    big = make_server("big")
    load(big, 200)  # at least resync-min-ratio (0.5) of ours
    assert f.json("FOLLOW", "127.0.0.1", big.port)["ok"]
    wait_until(lambda: in_sync(big, f), 60, message="resync from the comparable leader")
    assert f.stats()["num_objects"] == 200
    # the dataset now comes from `big`: its AOFSHRINK (fewer records, same id) resyncs as usual
    load(big, 100, start=0)  # overwrites
    before = f.stats()["resyncs"]
    assert big.json("AOFSHRINK")["ok"]
    wait_until(lambda: f.stats()["resyncs"] > before and in_sync(big, f), 60, message="resync after shrink")


# --- backoff -------------------------------------------------------------------------------

def test_reconnects_back_off_and_a_healthy_session_resets_them(tmp_path, make_server):
    port = free_port()
    f = make_server("f", args=follow_args(port))
    wait_until(lambda: f.stats()["replication_retry_delay"] >= 4, 60, message="backoff grows")
    stats = f.stats()
    assert stats["replication_failures"] >= 3 and stats["replication_state"] == "reconnecting"
    assert "cannot connect" in stats["replication_error"]
    leader = GeoServer(tmp_path / "late", port=port)
    try:
        leader.start()
        load(leader, 10)
        wait_until(lambda: in_sync(leader, f), 90, message="caught up once the leader is there")
        stats = f.stats()
        assert stats["replication_failures"] == 0 and stats["replication_retry_delay"] == 0
    finally:
        leader.kill9()


def test_failed_full_resyncs_back_off(tmp_path, make_server):
    """The follower of issue 9 whose disk was full downloaded the AOF 7 times in 12 s."""
    import resource

    leader = make_server("leader")
    load(leader, 1000)  # an AOF larger than the follower's "disk"
    limit = 20_000

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    f = GeoServer(tmp_path / "full", args=follow_args(leader.port), preexec=small_disk)
    try:
        f.start()
        wait_until(lambda: f.stats()["replication_failures"] >= 3, 60, message="failed resyncs")
        stats = f.stats()
        assert stats["resyncs"] == 0 and stats["replication_retry_delay"] >= 4
        assert "File too large" in stats["replication_error"]
    finally:
        f.kill9()


# --- leaderauth ----------------------------------------------------------------------------

def test_leaderauth_goes_only_to_trusted_leaders(make_server):
    leader = make_server("leader", args=["--requirepass", "s3cret"])
    load(leader, 30, password="s3cret")
    f = make_server("f", args=follow_args(leader.port, "--leaderauth", "s3cret"))  # no requirepass
    wait_until(lambda: f.stats().get("caught_up"), 30, message="--follow leader gets leaderauth")
    fake = FakeLeader()
    try:
        # anyone may send FOLLOW to a password-less server: it must not get the password,
        # and the empty "leader" must not get the data either
        assert f.json("FOLLOW", "127.0.0.1", fake.port)["ok"]
        wait_until(lambda: f.stats()["replication_state"] == "refused", 60, message="refusal")
        assert fake.commands and not [c for c in fake.commands if c[0].upper() == b"AUTH"]
        assert f.stats()["num_objects"] == 30
        # back to the --follow leader: trusted again, even from an unauthenticated client
        assert f.json("FOLLOW", "127.0.0.1", leader.port)["ok"]
        wait_until(lambda: f.stats().get("caught_up"), 30, message="back to the real leader")
        # a FOLLOW by a client that passed a set requirepass is trusted
        g = make_server("g", args=["--requirepass", "pw", "--leaderauth", "s3cret"])
        assert g.json("FOLLOW", "127.0.0.1", fake.port, password="pw")["ok"]
        assert [b"AUTH", b"s3cret"] in fake.commands
    finally:
        fake.close()


# --- AOFSHRINK child and stale files -----------------------------------------------------

def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_kill9_during_shrink_leaves_no_orphan_and_no_stale_file(make_server):
    s = make_server("s")
    load(s, 60_000)
    server_proc = psutil.Process(s.proc.pid)  # type: ignore[union-attr]
    tmp = Path(f"{s.aof_path}-shrink")
    child = None
    for _ in range(10):  # catch the snapshot child while it writes
        assert s.json("AOFSHRINK")["ok"]

        def writing() -> psutil.Process | None:
            kids = server_proc.children()
            return kids[0] if kids and tmp.exists() else None

        with contextlib.suppress(AssertionError):
            candidate = wait_until(writing, 10, interval=0.001, message="shrink child")
            with contextlib.suppress(psutil.NoSuchProcess):
                candidate.suspend()  # SIGSTOP: it would finish on its own otherwise
                child = candidate
                break
        wait_until(lambda: not s.stats()["aof_shrinking"], 30, message="shrink done")
    assert child is not None, "never caught the shrink child at work"
    try:
        assert tmp.exists()
        s.kill9()
        wait_until(lambda: not _alive(child), 15, message="the child dies with its parent")
    finally:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    stale_resync = Path(f"{s.aof_path}-resync")
    stale_resync.write_bytes(b"*1\r\n$3\r\nfoo\r\n")  # as a crash mid-resync leaves it
    s.start()
    wait_until(lambda: s.json("HEALTHZ")["ok"], 60, message="AOF loaded")  # the AOF opens after it
    assert not tmp.exists() and not stale_resync.exists()
    assert s.log().count("removed a stale temporary AOF file") >= 2
    assert s.stats()["num_objects"] == 60_000


# --- fsync failure under appendfsync always ----------------------------------------------

SITECUSTOMIZE = '''
import errno, os
_fsync = os.fsync
def fsync(fd):
    flag = os.environ.get("GEOSERVER_TEST_FAIL_FSYNC", "")
    if flag and os.path.exists(flag):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.endswith(".aof"):
            raise OSError(errno.EIO, "Input/output error (injected)")
    return _fsync(fd)
os.fsync = fsync
'''


def _send_raw(server: GeoServer, *args: str) -> bytes:
    """One command on a fresh socket; every byte received until the server closes or 5 s."""
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(_encode(list(args)))
        out = b""
        with contextlib.suppress(TimeoutError):
            while data := sock.recv(65536):
                out += data
                if out.endswith(b"\r\n"):
                    break
        return out


def test_failed_fsync_under_always_acknowledges_nothing(tmp_path):
    """A real server whose fsync of the AOF fails (EIO injected into os.fsync for *.aof by a
    sitecustomize, while a flag file exists): the write is not acknowledged, later writes get
    MISCONF, reads work; once fsync works again the buffered record lands exactly once."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    flag = tmp_path / "fail-fsync"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "GEOSERVER_TEST_FAIL_FSYNC": str(flag)}
    s = GeoServer(tmp_path / "fs", args=["--appendfsync", "always"], env=env)
    try:
        s.start()
        c = s.client()
        for i in range(20):
            assert c.execute_command("SET", "fleet", f"ok{i}", "POINT", 33, -115)
        flag.touch()
        reply = _send_raw(s, "SET", "fleet", "lost", "POINT", 1, 1)
        assert b"+OK" not in reply  # the connection closed without acknowledging it
        err = s.json("SET", "fleet", "later", "POINT", 1, 1)["err"]
        assert err.startswith("MISCONF Errors writing to the AOF file")
        assert s.json("GET", "fleet", "ok3")["ok"]
        flag.unlink()
        wait_until(lambda: s.json("SET", "fleet", "after", "POINT", 1, 1)["ok"], 30,
                   message="writes accepted again once fsync works")
        s.kill9()
        s.start()
        pipe = s.client().pipeline(transaction=False)
        for oid in [f"ok{i}" for i in range(20)] + ["after"]:
            pipe.execute_command("EXISTS", "fleet", oid)
        assert all(v == 1 for v in pipe.execute()), "an acknowledged write was lost"
        assert s.aof_path.read_bytes().count(b"$4\r\nlost\r\n") == 1  # retried once, not twice
    finally:
        s.kill9()
