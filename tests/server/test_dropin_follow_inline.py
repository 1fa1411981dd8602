"""Following a Tile38 leader whose AOF holds inline command lines (old Tile38 versions wrote
them; a leader streams its file verbatim): a real geoserver follower applies RESP and inline
records mixed, decided per record, and its AOF stays the leader's bytes exactly (file,
aof_size, AOFMD5). A record that does not parse or apply is refused with its leader offset,
the follower retries with backoff and keeps serving what it has.

`Tile38Leader` is a scripted stand-in for a Tile38 leader (no Tile38 binary here): it answers
the follower's handshake (SERVER, AOFMD5, REPLCONF, AOF pos) from an in-memory AOF and pushes
appended bytes to live streams. The second test uses a real geoserver leader started on such
a file, so the data can be compared with a leader's."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import threading

import hiredis
import orjson
import pytest
from fakeleader import FakeLeader
from geoserver.protocol.resp import encode_command
from helpers import GeoServer, wait_until

FAST = ["--repl-timeout", "1"]


def rec(*args: object) -> bytes:
    return encode_command([a if isinstance(a, bytes) else str(a).encode() for a in args])


# A Tile38 AOF as old versions and hand edits leave it: inline lines (CRLF and bare LF,
# quotes, a final JSON word, lower case, blank lines) between canonical RESP records, and a
# run of NUL bytes (skipped by the loader, kept byte for byte by a follower).
MIXED = b"".join([
    b"SET fleet truck1 POINT 33.5 -115.2\r\n",
    rec("SET", "fleet", "truck2", "FIELD", "speed", 90, "POINT", 33.6, -115.3),
    b"\r\n",
    b'SET fleet "truck 3" FIELD speed 10 POINT 1 2\r\n',
    b'SET zones z1 OBJECT {"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}\r\n',
    b"set fleet truck4 field speed 3 point 5 5\n",
    rec("DEL", "fleet", "truck2"),
    b"\0" * 300,  # a block pre-allocated before a crash (Tile38 issue #230)
    b"FSET fleet truck1 speed 55\r\n",
    b"SET tmp x STRING hello\r\n",
    rec("DROP", "tmp"),
    b"\r\n\r\n",
])
COORDS = b",".join(b"[%d.5,1.25]" % (i % 170) for i in range(12000))
LINE = b'{"type":"LineString","coordinates":[' + COORDS + b"]}"
LIVE = b"".join([
    b"SET roads long OBJECT " + LINE + b"\r\n",  # ~150 KB: longer than a client's inline limit
    b"SET fleet truck5 POINT 7 8\r\n",
    rec("SET", "fleet", "truck6", "POINT", 9, 10),
    b"DEL fleet truck4\r\n",
])


def json_reply(doc: dict) -> bytes:
    body = orjson.dumps({"ok": True, **doc})
    return b"$%d\r\n%s\r\n" % (len(body), body)


class Tile38Leader(FakeLeader):
    """A leader serving `aof` over Tile38's replication commands; `append` grows the file
    and sends the new bytes to every open `AOF pos` stream, in order."""

    def __init__(self, aof: bytes) -> None:
        self.aof = aof
        self.lock = threading.Lock()
        self.streams: list[socket.socket] = []
        super().__init__()

    def append(self, data: bytes) -> None:
        with self.lock:
            self.aof += data
            for conn in self.streams:
                with contextlib.suppress(OSError):
                    conn.sendall(data)

    def _serve(self, conn: socket.socket) -> None:
        reader = hiredis.Reader()
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                reader.feed(data)
                while (cmd := reader.gets()) is not False:
                    self.commands.append(cmd)
                    with self.lock:
                        conn.sendall(self._answer(cmd))
                        if cmd[0].upper() == b"AOF":
                            self.streams.append(conn)
        with self.lock:
            if conn in self.streams:
                self.streams.remove(conn)

    def _answer(self, cmd: list[bytes]) -> bytes:
        name = cmd[0].upper()
        if name == b"SERVER":
            return json_reply({"stats": {"id": "tile38-leader", "aof_size": len(self.aof),
                                         "num_objects": 5}})
        if name == b"AOFMD5":
            pos, size = int(cmd[1]), int(cmd[2])
            if pos + size > len(self.aof):
                return json_reply({"ok": False, "err": "EOF"})
            return json_reply({"md5": hashlib.md5(self.aof[pos:pos + size]).hexdigest()})
        if name == b"AOF":
            return b"+OK\r\n" + self.aof[int(cmd[1]):]
        return json_reply({})


def caught_up_to(f: GeoServer, size: int) -> bool:
    stats = f.stats()
    return bool(stats.get("caught_up")) and stats["aof_size"] == size


def aof_md5(server: GeoServer, size: int) -> str:
    return server.json("AOFMD5", 0, size)["md5"]


def get(server: GeoServer, key: str, oid: str, *extra: str) -> dict:
    doc = server.json("GET", key, oid, *extra)
    doc.pop("elapsed", None)
    return doc


@pytest.fixture
def leader():
    fake = Tile38Leader(MIXED)
    yield fake
    fake.close()


def test_follower_applies_inline_and_resp_records_and_keeps_the_leaders_bytes(make_server, leader):
    f = make_server("f", args=["--follow", f"127.0.0.1:{leader.port}", *FAST])
    wait_until(lambda: caught_up_to(f, len(MIXED)), 30, message="caught up on the mixed AOF")
    assert f.aof_path.read_bytes() == MIXED
    assert aof_md5(f, len(MIXED)) == hashlib.md5(MIXED).hexdigest()
    assert get(f, "fleet", "truck1", "WITHFIELDS")["fields"] == {"speed": 55}
    assert get(f, "fleet", "truck 3", "POINT")["point"] == {"lat": 1, "lon": 2}
    assert get(f, "fleet", "truck4", "WITHFIELDS")["fields"] == {"speed": 3}
    assert get(f, "zones", "z1")["object"]["type"] == "Polygon"
    assert not get(f, "fleet", "truck2")["ok"]  # deleted by a RESP record
    assert f.json("KEYS", "*")["keys"] == ["fleet", "zones"]  # tmp dropped
    assert f.stats()["num_objects"] == 4

    leader.append(LIVE)  # live records, incremental path
    total = len(MIXED) + len(LIVE)
    wait_until(lambda: caught_up_to(f, total), 30, message="live inline records")
    assert f.aof_path.read_bytes() == MIXED + LIVE
    assert aof_md5(f, total) == hashlib.md5(MIXED + LIVE).hexdigest()
    assert get(f, "fleet", "truck5", "POINT")["point"] == {"lat": 7, "lon": 8}
    assert len(get(f, "roads", "long")["object"]["coordinates"]) == 12000
    assert not get(f, "fleet", "truck4")["ok"]

    # restarted, the follower's file is a prefix of the leader's: an incremental handshake
    f.stop()
    leader.commands.clear()
    f.start()
    wait_until(lambda: caught_up_to(f, total), 30, message="resumed after a restart")
    assert [b"AOF", str(total).encode()] in leader.commands
    assert f.aof_path.read_bytes() == MIXED + LIVE


@pytest.mark.parametrize("bad, error", [
    (b'SET fleet bad "unterminated POINT 1 2\r\n', "Protocol error: unbalanced quotes in request"),
    (b"NOSUCHCMD fleet x\r\n", "does not apply: unknown command 'NOSUCHCMD'"),
    (rec("SET", "fleet", "x", "POINT", "north", 1), "does not apply: invalid argument 'north'"),
], ids=["unbalanced-quotes", "unknown-command", "bad-arguments"])
def test_a_bad_record_is_refused_with_its_offset_and_retried(make_server, leader, bad, error):
    f = make_server("f", args=["--follow", f"127.0.0.1:{leader.port}", *FAST])
    wait_until(lambda: caught_up_to(f, len(MIXED)), 30, message="caught up")
    leader.append(bad + b"SET fleet after POINT 1 1\r\n")

    def refused_twice() -> dict | None:
        stats = f.stats()
        return stats if stats["replication_failures"] >= 2 else None

    stats = wait_until(refused_twice, 30, message="refused and retried with backoff")
    assert f"leader AOF offset {len(MIXED)}" in stats["replication_error"], stats
    assert error in stats["replication_error"], stats
    assert stats["replication_state"] == "reconnecting" and not stats["caught_up"]
    # nothing of the bad record or after it: the AOF is still the leader's good prefix
    assert stats["aof_size"] == len(MIXED)
    assert f.aof_path.read_bytes() == MIXED
    # and the follower keeps serving what it has
    assert get(f, "fleet", "truck1", "WITHFIELDS")["fields"] == {"speed": 55}
    assert not get(f, "fleet", "after")["ok"]


def test_a_bad_record_during_a_full_resync_keeps_the_old_dataset(make_server):
    fake = Tile38Leader(MIXED[:36] + b"SET fleet 'x POINT 1 2\r\n" + MIXED[36:])
    try:
        f = make_server("f")
        f.client().execute_command("SET", "mine", "a", "POINT", 1, 2)
        assert f.json("FOLLOW", "127.0.0.1", fake.port)["ok"]
        stats = wait_until(lambda: (s := f.stats())["replication_failures"] >= 1 and s, 30,
                           message="refused stream")
        assert "invalid record at leader AOF offset 36: Protocol error: unbalanced quotes" \
            in stats["replication_error"]
        assert not (f.dir / "appendonly.aof-resync").exists()
        # the old dataset stays (reads wait for a first catch-up, as on any new follower)
        assert f.stats()["num_objects"] == 1
        assert get(f, "mine", "a") == {"ok": False, "err": "catching up to leader"}
        assert f.json("FOLLOW", "no", "one")["ok"]
        assert get(f, "mine", "a", "POINT")["point"] == {"lat": 1, "lon": 2}
    finally:
        fake.close()


def scan_all(server: GeoServer) -> dict[str, list]:
    out = {}
    for key in server.json("KEYS", "*")["keys"]:
        out[key] = server.json("SCAN", key)["objects"]
    return out


def test_real_leader_started_on_a_tile38_aof_streams_it_verbatim(make_server):
    """A geoserver leader that loaded a Tile38 AOF with inline lines serves that file as it is;
    its follower ends with the same data and the same bytes, live writes included."""
    leader = make_server("leader", start=False)
    leader.dir.mkdir(parents=True)
    leader.aof_path.write_bytes(MIXED)
    leader.start()
    wait_until(lambda: leader.json("HEALTHZ")["ok"], message="leader loaded")
    f = make_server("f", args=["--follow", f"127.0.0.1:{leader.port}", *FAST])
    wait_until(lambda: caught_up_to(f, len(MIXED)), 30, message="follower caught up")
    leader.client().execute_command("SET", "fleet", "truck9", "POINT", 3, 4)
    size = leader.stats()["aof_size"]
    wait_until(lambda: caught_up_to(f, size), 30, message="live write")
    assert f.aof_path.read_bytes() == leader.aof_path.read_bytes()
    assert f.aof_path.read_bytes()[:len(MIXED)] == MIXED
    assert aof_md5(f, size) == aof_md5(leader, size)
    data = scan_all(leader)
    assert len(data["fleet"]) == 4 and len(data["zones"]) == 1
    assert scan_all(f) == data
