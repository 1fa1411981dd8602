"""LEASE against real geoserver processes: a leader given a lease takes writes only while it is
valid; renewal, stale epochs, revocation, SERVER and /metrics, the Lua path, and a SIGSTOPped
leader woken past its lease (with a renewal buffered meanwhile) that never takes a write."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request

import pytest
import redis
from helpers import _encode, wait_until

SET = ("SET", "fleet", "t1", "POINT", "33", "-115")


def refused(server) -> str | None:
    """The error of a write now, or None when it was taken."""
    try:
        server.client().execute_command(*SET)
    except redis.ResponseError as exc:
        return str(exc)
    return None


def test_a_server_never_given_a_lease_behaves_as_before(server):
    assert refused(server) is None
    assert "lease_state" not in server.stats()
    assert server.json("LEASE")["lease"]["state"] == "none"


def test_lease_lapses_then_writes_are_refused_until_renewed(server):
    r = server.client()
    r.response_callbacks.clear()
    reply = r.execute_command("LEASE", "1", "400")
    assert reply[0:4] == [b"state", b"valid", b"epoch", 1]
    assert refused(server) is None
    err = wait_until(lambda: refused(server), 10, message="the lease to lapse")
    assert err.startswith("LEASE expired (epoch 1, lapsed)"), err
    stats = server.stats()
    assert (stats["lease_state"], stats["lease_epoch"], stats["lease_remaining_ms"]) == ("expired", 1, 0)
    body = server.json(*SET)  # JSON form of the refusal
    assert body["ok"] is False and body["err"].startswith("LEASE expired")
    r.execute_command("LEASE", "1", "60000")  # renewed: writes again
    assert refused(server) is None and server.stats()["lease_state"] == "valid"


def test_since_counts_from_the_servers_clock_reading(server):
    clock = server.json("LEASE")["lease"]["clock"]
    time.sleep(0.3)
    reply = server.json("LEASE", "1", "200", "SINCE", str(clock))["lease"]
    assert reply["state"] == "expired"  # 200 ms from the reading, which was 300 ms ago
    assert refused(server).startswith("LEASE expired")
    with pytest.raises(redis.ResponseError, match="ahead"):  # a reading from another clock
        server.client().execute_command("LEASE", "1", "60000", "SINCE", str(clock + 10**9))
    assert refused(server).startswith("LEASE expired")


def test_stale_epochs_and_revocation(server):
    r = server.client()
    r.execute_command("LEASE", "5", "60000")
    with pytest.raises(redis.ResponseError, match="lease epoch 4 is older than 5"):
        r.execute_command("LEASE", "4", "60000")
    assert refused(server) is None
    r.execute_command("LEASE", "6", "0")  # fenced by an operator that promoted someone else
    assert "revoked" in refused(server)
    for epoch in ("5", "6"):  # a stale operator cannot extend it again
        with pytest.raises(redis.ResponseError):
            r.execute_command("LEASE", epoch, "60000")
    assert refused(server) is not None
    r.execute_command("LEASE", "7", "60000")
    assert refused(server) is None
    r.execute_command("LEASE", "OFF")  # the manual way out: no gate
    info = server.json("LEASE")["lease"]
    assert (info["state"], info["epoch"]) == ("none", 7) and refused(server) is None


def test_bad_arguments(server):
    r = server.client()
    for args in (["x"], ["1", "x"], ["-1", "100"], ["1", "100", "FROM", "3"], ["1", "999999999999"]):
        with pytest.raises(redis.ResponseError, match="invalid argument"):
            r.execute_command("LEASE", *args)
    with pytest.raises(redis.ResponseError, match="wrong number"):
        r.execute_command("LEASE", "1", "100", "SINCE")
    assert server.json("LEASE")["lease"]["state"] == "none"


def test_lua_writes_are_gated_too(server):
    r = server.client()
    r.execute_command("LEASE", "1", "0")
    with pytest.raises(redis.ResponseError, match="LEASE expired"):
        r.execute_command("EVAL", "return tile38.call('SET','fleet','x','POINT',1,1)", "0")
    r.execute_command("LEASE", "2", "60000")
    assert r.execute_command("EVAL", "return tile38.call('SET','fleet','x','POINT',1,1)", "0")


def test_metrics_show_the_lease(make_server):
    from helpers import free_port

    port = free_port()
    server = make_server(args=["--metrics-addr", f"127.0.0.1:{port}"])

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    assert 'geoserver_lease_state{state="none"} 1.0' in wait_until(scrape, 10, message="metrics")
    server.client().execute_command("LEASE", "3", "60000")
    text = scrape()
    assert 'geoserver_lease_state{state="valid"} 1.0' in text and "geoserver_lease_epoch 3.0" in text


def test_a_follower_takes_a_lease_and_still_refuses_writes(make_server):
    leader = make_server("leader")
    follower = make_server("follower", args=["--follow", f"127.0.0.1:{leader.port}"])
    follower.client().execute_command("LEASE", "1", "60000")
    assert "not the leader" in refused(follower)


def test_sigstopped_leader_woken_past_its_lease_never_takes_a_write(server):
    """A partition stand-in: the leader is stopped while clients keep sending writes and the
    operator's renewal (anchored at its last clock reading) sits in the socket buffer; woken
    after the lease has ended, every buffered and later write is refused."""
    r = server.client()
    r.response_callbacks.clear()
    clock = server.json("LEASE")["lease"]["clock"]
    r.execute_command("LEASE", "1", "1000", "SINCE", str(clock))
    assert refused(server) is None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        renewal = socket.create_connection((server.host, server.port))
        renewal.sendall(_encode(["LEASE", "1", "1000", "SINCE", str(clock)]))  # delivered late
        writers = []
        for i in range(5):
            s = socket.create_connection((server.host, server.port))
            s.sendall(_encode(["SET", "fleet", f"late{i}", "POINT", "33", "-115"]))
            writers.append(s)
        time.sleep(1.5)  # past the lease: the partition lasts longer than it
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    replies = []
    for s in writers:
        s.settimeout(10)
        replies.append(s.recv(4096))
        s.close()
    renewal.settimeout(10)
    assert renewal.recv(4096).startswith(b"*")  # the late grant was applied ...
    renewal.close()
    assert all(reply.startswith(b"-LEASE expired") for reply in replies), replies  # ... and extended nothing
    for _ in range(20):
        assert refused(server).startswith("LEASE expired")
    assert r.execute_command("SCAN", "fleet", "COUNT") == 1  # only the write before the stop
