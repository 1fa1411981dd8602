"""The leader lease in INFO and SERVER, on a real geoserver process: once a lease was given,
INFO's replication section and SERVER show its epoch, the ms left and whether writes are being
refused because it lapsed or was revoked; a server never given one shows Tile38's fields only.
Tile38 clients (pyle38's response models, redis-py's INFO parser) keep reading both."""

from __future__ import annotations

import asyncio

import redis
from helpers import wait_until
from pyle38 import Tile38
from pyle38.responses import Info, ServerStatsLeader

SET = ("SET", "fleet", "t1", "POINT", "33", "-115")
FIELDS = ("lease_state", "lease_epoch", "lease_remaining_ms", "lease_writes_refused")


def info_replication(server) -> dict[str, str]:
    """INFO replication as text, `key:value` lines."""
    r = server.client()
    r.response_callbacks.clear()  # the raw text, not redis-py's parsed dict
    text = r.execute_command("INFO", "replication").decode()
    return dict(line.split(":", 1) for line in text.split("\r\n") if line and not line.startswith("#"))


def write_refused(server) -> bool:
    try:
        server.client().execute_command(*SET)
    except redis.ResponseError as exc:
        assert str(exc).startswith("LEASE expired"), exc
        return True
    return False


def test_never_given_a_lease_info_and_server_have_no_lease_fields(server):
    assert not set(FIELDS) & set(info_replication(server))
    assert not set(FIELDS) & set(server.json("INFO")["info"])
    assert not set(FIELDS) & set(server.stats())


def test_valid_lapsed_and_revoked_lease_in_info_and_server(server):
    r = server.client()
    r.execute_command("LEASE", "3", "60000")
    rep = info_replication(server)
    assert list(rep)[:2] == ["role", "connected_slaves"]  # Tile38's fields first, in its order
    assert (rep["lease_state"], rep["lease_epoch"], rep["lease_writes_refused"]) == ("valid", "3", "0")
    assert 0 < int(rep["lease_remaining_ms"]) <= 60000
    info = server.json("INFO", "replication")["info"]
    assert (info["lease_epoch"], info["lease_writes_refused"]) == (3, 0)
    stats = server.stats()
    assert (stats["lease_state"], stats["lease_epoch"], stats["lease_writes_refused"]) == ("valid", 3, False)
    assert not write_refused(server)

    r.execute_command("LEASE", "4", "300")  # a higher epoch replaces it: lapses in 300 ms
    wait_until(lambda: write_refused(server), 10, message="the lease to lapse")
    rep = info_replication(server)
    assert (rep["lease_state"], rep["lease_epoch"]) == ("expired", "4")
    assert (rep["lease_remaining_ms"], rep["lease_writes_refused"]) == ("0", "1")
    assert server.json("SERVER")["stats"]["lease_writes_refused"] is True
    flat = r.execute_command("SERVER")  # RESP: Tile38's true/false text
    resp = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}
    assert resp["lease_writes_refused"] == b"true" and resp["lease_state"] == b"expired"

    r.execute_command("LEASE", "5", "60000")
    r.execute_command("LEASE", "5", "0")  # revoked: refused though time is left on no clock
    rep = info_replication(server)
    assert (rep["lease_state"], rep["lease_epoch"], rep["lease_writes_refused"]) == ("revoked", "5", "1")
    assert write_refused(server)

    r.execute_command("LEASE", "OFF")  # no gate any more: writes again, the fields say so
    rep = info_replication(server)
    assert (rep["lease_state"], rep["lease_writes_refused"]) == ("none", "0")
    assert not write_refused(server)


def test_tile38_clients_read_info_and_server_with_a_lease(server):
    server.client().execute_command("LEASE", "7", "60000")
    info = server.json("INFO")["info"]
    Info.model_validate(info)  # pyle38's own models accept the extra fields
    ServerStatsLeader.model_validate(server.json("SERVER")["stats"])
    parsed = server.client().info("replication")  # redis-py's INFO parser
    assert parsed["role"] == "master" and parsed["lease_epoch"] == 7
    assert parsed["lease_state"] == "valid" and parsed["lease_writes_refused"] == 0

    async def run() -> None:
        t38 = Tile38(f"redis://127.0.0.1:{server.port}")
        try:
            assert (await t38.info()).info.role == "master"
            assert (await t38.server()).stats.num_objects >= 0
        finally:
            await t38.quit()

    asyncio.run(run())


def test_a_follower_shows_no_lease_and_its_replication_fields_stay(make_server, server):
    follower = make_server("f", args=["--follow", f"127.0.0.1:{server.port}"])
    server.client().execute_command("LEASE", "2", "60000")
    wait_until(lambda: info_replication(follower).get("master_link_status") == "up", 20,
               message="the follower linked")
    rep = info_replication(follower)
    assert rep["role"] == "slave" and not set(FIELDS) & set(rep)
    assert info_replication(server)["lease_epoch"] == "2"
