"""A hostile leader (issue 9): anyone who can reach a password-less server may FOLLOW it to an
address of their choosing. The stranger must not make the follower allocate what a header
announces, in its replies or in the AOF stream: the follower refuses, reports why, keeps its
memory and keeps serving. A real geoserver follower against a scripted fake leader."""

from __future__ import annotations

import pytest
from fakeleader import FakeLeader
from helpers import wait_until


def test_array_reply_to_server_is_refused_by_follow(make_server) -> None:
    fake = FakeLeader(server_reply=b"*3000000000\r\n")
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
    (b'SET a "b POINT 1 2\r\n', "unbalanced quotes"),  # inline records apply; a bad one not
], ids=["array-header", "bulk-header", "inline"])
def test_hostile_aof_stream_is_refused_not_allocated(make_server, stream: bytes, error: str) -> None:
    fake = FakeLeader(stream=stream)
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
