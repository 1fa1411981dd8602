"""SERVER, SERVER EXT and INFO with Tile38's field sets and types (internal/server/stats.go),
validated by pyle38's own response models; tests/metrics_test.go and proto_test.go (CORS)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from helpers import GeoServer, free_port
from pyle38 import Tile38
from pyle38.responses import Info, ServerStatsExtended, ServerStatsLeader
from wire import Wire

# Tile38's basicStats keys (a leader); geoserver's extras are documented in docs/commands.md.
BASIC = {"id", "http_transport", "pid", "aof_size", "num_collections", "num_hooks",
         "in_memory_size", "num_points", "num_objects", "num_strings", "mem_alloc", "heap_size",
         "heap_released", "max_heap_size", "avg_item_size", "version", "pointer_size",
         "read_only", "cpus", "threads", "pending_events"}
INFO_TITLES = ["# Server", "# Clients", "# Memory", "# Persistence", "# Stats", "# Replication",
               "# CPU", "# Cluster"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    metrics = free_port()
    server = GeoServer(tmp_path_factory.mktemp("stats") / "s",
                       args=["--metrics-addr", f"127.0.0.1:{metrics}", "--cors-origins", "*"])
    server.metrics_port = metrics  # type: ignore[attr-defined]
    server.start()
    r = server.client()
    r.execute_command("SET", "metrics_test_1", "1", "FIELD", "foo", 5.5, "POINT", 5, 5)
    r.execute_command("SET", "metrics_test_2", "2", "FIELD", "foo", 19.19, "POINT", 19, 19)
    r.execute_command("SET", "metrics_test_2", "3", "FIELD", "foo", 19.19, "POINT", 19, 19)
    r.execute_command("SET", "metrics_test_2", "truck1:driver", "STRING", "John Denton")
    yield server
    server.kill9()


def test_server_has_tile38s_fields(shared: GeoServer) -> None:
    stats = shared.json("SERVER")["stats"]
    assert set(stats) >= BASIC
    ServerStatsLeader.model_validate(stats)


def test_server_ext_fields_and_types(shared: GeoServer) -> None:
    stats = shared.json("SERVER", "EXT")["stats"]
    model = ServerStatsExtended.model_validate(stats)
    assert set(stats) == set(ServerStatsExtended.model_fields)  # exactly Tile38's names
    assert model.tile38_type == "leader" and model.tile38_num_objects == 4
    assert model.tile38_num_points == 3 and model.tile38_num_strings == 1
    assert model.tile38_aof_enabled is True and model.tile38_total_commands_processed > 0
    resp = shared.client().execute_command("SERVER", "EXT")
    keys = resp[::2]
    assert keys == sorted(keys)  # Tile38 sorts them
    assert shared.json("SERVER", "bogus")["err"] == "invalid argument 'bogus'"


def test_info_every_section_and_several(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        text = w.call("INFO")
        assert [line for line in text.split("\r\n") if line.startswith("#")] == INFO_TITLES
        two = w.call("INFO", "clients", "stats")
        assert [line for line in two.split("\r\n") if line.startswith("#")] == ["# Clients", "# Stats"]
        assert "total_commands_processed:" in two and "expired_keys:0" in two
        assert w.call("INFO", "nosuch") == ""
    info = shared.json("INFO")["info"]
    Info.model_validate(info)
    assert info["cluster_enabled"] == 0 and info["role"] == "master"
    assert isinstance(info["used_cpu_user"], float)  # `%.2f` text, as Tile38


def test_info_valid_json(shared: GeoServer) -> None:
    """stats_test.go info_valid_json_test: OUTPUT json, INFO is valid JSON with an `info` object."""
    with Wire(shared.port) as w:
        doc = w.json("INFO")
    assert doc["ok"] is True and isinstance(doc["info"], dict) and doc["info"]


def test_pyle38_server_extended_and_info(shared: GeoServer) -> None:
    async def run() -> None:
        t38 = Tile38(f"redis://127.0.0.1:{shared.port}")
        try:
            assert (await t38.server_extended()).stats.tile38_num_collections == 2
            assert (await t38.info()).info.role == "master"
            assert (await t38.server()).stats.num_objects == 4
        finally:
            await t38.quit()

    asyncio.run(run())


def test_redis_py_parses_info(shared: GeoServer) -> None:
    r: redis.Redis = shared.client()
    assert r.info("stats")["total_connections_received"] > 0
    assert r.info("cpu")["used_cpu_sys"] >= 0


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read().decode()


def test_metrics_basic(shared: GeoServer) -> None:
    """metrics_basic_test (go_build_info / go_threads are python_info / process_* here)."""
    base = f"http://127.0.0.1:{shared.metrics_port}/"  # type: ignore[attr-defined]
    status, _, index = fetch(base)
    assert status == 200 and "<a href" in index
    status, _, metrics = fetch(base + "metrics")
    assert status == 200
    for want in ['tile38_connected_clients', 'tile38_cmd_duration_seconds_count{cmd="set"}',
                 'python_info', 'process_open_fds',
                 'tile38_collection_objects{col="metrics_test_1"} 1',
                 'tile38_collection_objects{col="metrics_test_2"} 3',
                 'tile38_collection_points{col="metrics_test_2"} 2',
                 'tile38_replication_info{caught_up="",caught_up_once="",following="",role="leader"} 1.0',
                 'tile38_server_info{id="', 'tile38_start_time_seconds ', 'tile38_expired_keys_total 0.0',
                 'tile38_messages_sent_total', 'tile38_connections_received_total', 'tile38_pid ',
                 'tile38_num_cpus ', 'tile38_memory_max_heap_size_bytes ']:
        assert want in metrics, want


def test_http_cors_preflight(shared: GeoServer) -> None:
    """proto_HTTP_CORS_test (CORS is on for `cors-origins *`; off by default, docs/security.md)."""
    origin = "http://my-test-origin"
    status, headers, _ = fetch(f"http://127.0.0.1:{shared.port}/SERVER", "OPTIONS", {
        "Origin": origin, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "Authorization"})
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] in ("*", origin)
    assert headers["Access-Control-Allow-Methods"] == "POST, GET, OPTIONS"
    assert headers["Access-Control-Allow-Headers"] == "*, Authorization"
    _, headers, _ = fetch(f"http://127.0.0.1:{shared.port}/SERVER", headers={"Origin": origin})
    assert headers["Access-Control-Allow-Origin"] in ("*", origin)
