"""Fixtures of tests/local; helpers live in local_lib.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from geocluster.local import LocalCluster
from geocluster.localstate import StateDir
from local_lib import FakeClock, manifest


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def make_cluster(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Callable[..., Any]]:
    """``await make_cluster(spec)`` starts a local cluster in tmp_path driven by the fake clock."""
    started: list[LocalCluster] = []

    async def make(spec: dict[str, Any]) -> LocalCluster:
        cluster = LocalCluster(manifest(tmp_path, spec), StateDir(tmp_path / "state"), clock)
        started.append(cluster)
        await cluster.start()
        return cluster

    yield make
    for cluster in started:
        await cluster.stop()
