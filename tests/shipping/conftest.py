"""Fixtures of the offline shipping checks; helpers live in shipping_lib.py (a plain module, so
that no test imports a module named `conftest`, which other test folders have too)."""

from __future__ import annotations

import pytest
from shipping_lib import tool


@pytest.fixture(scope="session")
def helm() -> str:
    path = tool("helm")
    if path is None:
        pytest.skip("helm not found: not on PATH and no .tools/bin/helm (run: bash .ci/install-tools)")
    return path


@pytest.fixture(scope="session")
def kubectl() -> str:
    path = tool("kubectl")
    if path is None:
        pytest.skip("kubectl not found: not on PATH and no .tools/bin/kubectl (run: bash .ci/install-tools)")
    return path
