"""Tile38's Node clients, tile38-ts (@iwpnd/tile38-ts, ioredis) and node-tile38 (`tile38`, node-redis 3),
against a real geoserver: tests/clients/run.mjs runs one scenario and prints its results as JSON, and
each test compares them with what redis-py reads from the same server. Skipped without `node` or
without `npm ci` in tests/clients (the pinned package-lock.json)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
from helpers import REPO, GeoServer

CLIENTS = REPO / "tests" / "clients"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(not (CLIENTS / "node_modules").is_dir(),
                       reason="tests/clients/node_modules is absent (run `npm ci` in tests/clients)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    srv = GeoServer(tmp_path_factory.mktemp("nodeclients") / "s").start()
    yield srv
    srv.stop()


def run(server: GeoServer, scenario: str) -> dict[str, Any]:
    """One scenario of run.mjs; its stderr is in the failure message."""
    assert NODE is not None
    proc = subprocess.run([NODE, str(CLIENTS / "run.mjs"), str(server.port), scenario],
                          capture_output=True, timeout=30, cwd=CLIENTS)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace") + server.log()
    return orjson.loads(proc.stdout)


def reply(server: GeoServer, *args: Any) -> dict[str, Any]:
    """The server's JSON reply to a command without `elapsed`, as the runner prints them."""
    doc = server.json(*args)
    doc.pop("elapsed", None)
    return doc


def test_tile38_ts_fields_are_json_values(server: GeoServer) -> None:
    out = run(server, "ts-fields")
    assert out["set"] == {"ok": True}
    assert out["get"]["fields"] == {"speed": 90, "name": "alpha", "info": {"axles": 3, "tags": ["a"]}}
    assert out["get"] == reply(server, "GET", "nodefleet", "truck1", "WITHFIELDS")
    raw = server.client().execute_command("FGET", "nodefleet", "truck1", "info")
    assert orjson.loads(raw) == {"axles": 3, "tags": ["a"]}


def test_tile38_ts_jset_jget_jdel(server: GeoServer) -> None:
    out = run(server, "ts-json")
    assert out["jset"] == out["jdel"] == out["rawSet"] == {"ok": True}
    assert out["raw"] == {"ok": True, "value": "1"}
    assert out["whole"] == {"ok": True, "value": '{"type":"Point","coordinates":[1,1]}'}
    assert out["sub"] == {"ok": True, "value": "[1,2]"}
    assert out["missing"] == "Error: id not found"
    r = server.client()
    doc = orjson.loads(r.execute_command("GET", "nodejson", "doc"))
    assert doc == {"type": "Point", "coordinates": [1, 1]}
    assert orjson.loads(r.execute_command("GET", "nodejson", "cfg")) == {"props": {"n": [1, 2]}}


def test_tile38_ts_search_where_and_where_expressions(server: GeoServer) -> None:
    out = run(server, "ts-search")
    assert out["all"] == reply(server, "SEARCH", "nodesearch")
    assert [o["id"] for o in out["range"]["objects"]] == ["truck2", "truck3"]
    assert out["range"] == reply(server, "SEARCH", "nodesearch", "NOFIELDS", "WHERE", "maxSpeed", 100, 120)
    assert out["expr"]["ids"] == ["truck3"]
    assert out["expr"] == reply(server, "SEARCH", "nodesearch", "NOFIELDS", "WHERE",
                                "maxSpeed >= 100 && maxSpeed <= 130 && maxWeight === 1000", "IDS")
    assert out["exprNone"]["count"] == 0
    assert out["count"]["count"] == 1  # SEARCH MATCH tests the string value ("b"), not the id
    with pytest.raises(redis.ResponseError) as err:
        server.client().execute_command("SEARCH", "nodesearch", "WHERE", "maxSpeed >", "COUNT")
    assert out["bad"] == f"Error: {err.value}"
    assert out["after"] == {"ok": True, "ping": "pong"}  # same connection, after the error


def test_tile38_ts_quit_closes_and_server_keeps_serving(server: GeoServer) -> None:
    """tile38-ts's quit test: QUIT (twice) and a forced quit (twice) both resolve."""
    out = run(server, "ts-quit")
    assert out == {"ping": {"ok": True, "ping": "pong"}, "ping2": {"ok": True, "ping": "pong"},
                   "quit": "resolved", "status": "end"}
    assert server.client().ping()


def test_node_tile38_config_get_set_rewrite(server: GeoServer) -> None:
    """node-tile38 sends `CONFIG GET` as one command token."""
    out = run(server, "nt-config")
    assert out["before"] == {"keepalive": "300"}
    assert out["set"] is True and out["rewrite"] is True
    assert out["after"] == {"keepalive": "77"}
    assert out["after"] == reply(server, "CONFIG", "GET", "keepalive")["properties"]
    assert "nosuchprop" in out["bad"]
    assert "77" in (server.dir / "config").read_text()


def test_node_tile38_server_stats(server: GeoServer) -> None:
    out = run(server, "nt-server")
    assert out["ping"] == "pong"
    assert out["quit"] == "OK" and out["connected"] is False  # QUIT in JSON: closed, no reply
    stats = reply(server, "SERVER")["stats"]
    assert out["stats"]["id"] == stats["id"]
    assert out["stats"]["version"] == stats["version"]
    assert set(out["stats"]) == set(stats)


def test_node_tile38_nearby_with_distance(server: GeoServer) -> None:
    out = run(server, "nt-nearby")
    assert [o["id"] for o in out["res"]["objects"]] == ["near", "mid"]
    assert out["res"]["objects"][0]["distance"] == 0
    assert out["res"]["fields"] == ["speed"]
    expected = reply(server, "NEARBY", "nodenear", "DISTANCE", "POINT", 33.462, -112.268, 6000)
    expected.pop("ok")
    assert out["res"] == expected
    assert out["count"] == {"count": 2, "cursor": 0}
