"""Fixtures for tests/operator; the machinery lives in opharness.py (see its docstring)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from opharness import RESOURCES, Members


@pytest.fixture
def members(tmp_path: Path) -> Iterator[Members]:
    m = Members(tmp_path)
    yield m
    m.close()


@pytest.fixture
async def api(kmock, monkeypatch) -> AsyncIterator:
    """The emulated API server, with discovery and the kubernetes client pointed at it."""
    from geocluster import kube

    monkeypatch.setenv("GEOCLUSTER_K8S_URL", str(kmock.url).rstrip("/"))
    kube.api.cache_clear()
    for resource, info in RESOURCES.items():
        kmock.resources[resource] = info

    yield kmock
    kube.api.cache_clear()
