"""The table of `up`/`status`, rendered from the state files' contents alone."""

from __future__ import annotations

from geocluster import localview
from rich.console import Console

INFO = {
    "name": "demo",
    "supervisor": {"pid": 1, "started": 0},
    "schedule": "*/5 * * * *",
    "members": [
        {"name": "leader", "role": "leader", "address": "127.0.0.1:9851", "process": {"pid": 2},
         "memory": 50 * 2**20, "restarts": 0, "lastResync": ""},
        {"name": "follower-1", "role": "follower", "address": "127.0.0.1:9900", "process": {"pid": 3},
         "memory": 48 * 2**20, "restarts": 1, "lastResync": "2030-01-01T00:05:02Z ok"},
    ],
}
STATUS = {
    "phase": "Degraded",
    "conditions": [{"type": "Degraded", "status": "True", "reason": "RepairsExhausted",
                    "message": "gave up repairing follower-1: needs a person",
                    "lastTransitionTime": "2030-01-01T00:06:00Z"}],
    "members": [
        {"name": "leader", "role": "leader", "reachable": True, "aofSize": 2048},
        {"name": "follower-1", "role": "follower", "reachable": True, "aofSize": 4096, "caughtUp": True,
         "divergence": "aof_size 4096 vs leader 2048 while caught up", "gaveUp": True, "repairs": 2,
         "lastRepair": {"time": "2030-01-01T00:06:00Z", "action": "giveUp", "result": "needs a person"}},
    ],
    "lastShrink": {"time": "2030-01-01T00:05:00Z", "result": "ok", "reason": "schedule"},
}


def render(*parts) -> str:
    console = Console(width=220, record=True)
    console.print(*parts)
    return console.export_text()


def test_table_shows_members_sizes_repairs_and_conditions():
    text = render(localview.table(INFO, STATUS), localview.summary(INFO, STATUS))
    assert "GeoCluster demo: Degraded" in text
    assert "2.0K" in text and "4.0K" in text and "50.0M" in text
    assert "shrink" in text and "(schedule)" in text and "resync" in text
    assert "giveUp needs a person (#2), restarted 1x" in text
    assert "gave up: aof_size 4096 vs leader 2048" in text
    assert "Degraded=True RepairsExhausted: gave up repairing follower-1" in text
    assert "next shrink" in text


def test_a_stopped_cluster_says_so():
    info = {**INFO, "supervisor": None, "updated": "2030-01-01T00:07:00Z",
            "members": [{**m, "process": None} for m in INFO["members"]]}
    text = render(localview.table(info, STATUS))
    assert "stopped (last seen Degraded" in text and text.count("stopped") >= 3
