"""Tile38's `autogc` (server.go watchAutoGC) against a real geoserver: with `CONFIG SET autogc N`
the server runs a full collection every N seconds and hands the freed heap back to the OS;
SERVER EXT's last_gc_time_seconds moves with each run and the debug log names it. Waits are
generous wait_untils, no timing thresholds."""

from __future__ import annotations

import time

from helpers import GeoServer, wait_until


def last_gc(server: GeoServer) -> float:
    return server.json("SERVER", "EXT")["stats"]["last_gc_time_seconds"]


def test_config_set_autogc_runs_collections_in_the_background(make_server):
    s = make_server("s", args=["-v"])  # debug logging: the autogc lines
    assert s.json("CONFIG", "GET", "autogc")["properties"] == {"autogc": "0"}
    set_at = time.time()
    assert s.json("CONFIG", "SET", "autogc", "1")["ok"]
    first = wait_until(lambda: (t := last_gc(s)) > set_at and t, 15, message="a first autogc run")
    second = wait_until(lambda: (t := last_gc(s)) > first and t, 15, message="a second autogc run")
    assert second > first
    wait_until(lambda: s.log().count(" autogc rss_before=") >= 2, 15, message="autogc log lines")
    assert " rss_after=" in s.log()
    assert s.json("PING")["ok"]
    # off again: CONFIG reads it back, and the server keeps serving
    assert s.json("CONFIG", "SET", "autogc", "0")["ok"]
    assert s.json("CONFIG", "GET", "autogc")["properties"] == {"autogc": "0"}
    assert s.json("PING")["ok"]
