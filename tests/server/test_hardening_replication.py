"""A hostile leader (issue 9): anyone who can reach a password-less server may FOLLOW it to an
address of their choosing. The stranger must not make the follower allocate what a header
announces, in its replies or in the AOF stream: the follower refuses, reports why, keeps its
memory and keeps serving. A real geoserver follower against a scripted fake leader."""

from __future__ import annotations

import contextlib
import socket
import threading

import hiredis
import orjson
import pytest
from helpers import wait_until


class HostileLeader:
    """Answers the handshake like a leader, then sends `attack` where the test says."""

    def __init__(self, server_reply: bytes | None = None, stream: bytes = b"") -> None:
        self.server_reply = server_reply
        self.stream = stream
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = hiredis.Reader()
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                reader.feed(data)
                while (cmd := reader.gets()) is not False:
                    name = cmd[0].upper()
                    if name == b"SERVER" and self.server_reply is not None:
                        conn.sendall(self.server_reply)
                        continue
                    if name == b"AOF":
                        conn.sendall(b"+OK\r\n" + self.stream)
                        continue
                    doc: dict = {"ok": True}
                    if name == b"SERVER":
                        doc["stats"] = {"id": "evil", "aof_size": 1 << 20, "num_objects": 0}
                    body = orjson.dumps(doc)
                    conn.sendall(b"$%d\r\n%s\r\n" % (len(body), body))

    def close(self) -> None:
        self.listener.close()


def test_array_reply_to_server_is_refused_by_follow(make_server) -> None:
    fake = HostileLeader(server_reply=b"*3000000000\r\n")
    try:
        f = make_server("f")
        before = f.stats()["mem_alloc"]
        doc = f.json("FOLLOW", "127.0.0.1", fake.port)
        assert doc == {"ok": False, "err": "cannot follow: unexpected array reply from the leader",
                       "elapsed": doc["elapsed"]}
        assert f.stats()["mem_alloc"] - before < 200 << 20
        assert f.json("PING")["ok"]
    finally:
        fake.close()


@pytest.mark.parametrize("stream, error", [
    (b"*3000000000\r\n", "too many arguments (3000000000, limit 1048576)"),
    (b"*2\r\n$3\r\nDEL\r\n$900000000\r\n", "argument too large (900000000 bytes"),
    (b"SET a b POINT 1 2\r\n", "invalid multibulk"),
], ids=["array-header", "bulk-header", "inline"])
def test_hostile_aof_stream_is_refused_not_allocated(make_server, stream: bytes, error: str) -> None:
    fake = HostileLeader(stream=stream)
    try:
        f = make_server("f")
        before = f.stats()["mem_alloc"]
        assert f.json("FOLLOW", "127.0.0.1", fake.port)["ok"]
        def refused() -> dict | None:
            stats = f.stats()
            return stats if error in stats.get("replication_error", "") else None

        stats = wait_until(refused, 30, message="refused stream")
        assert not stats["caught_up"]
        assert stats["mem_alloc"] - before < 200 << 20
        assert f.json("PING")["ok"]
    finally:
        fake.close()
