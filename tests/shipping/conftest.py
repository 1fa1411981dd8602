"""Fixtures of the offline shipping checks; helpers live in shipping_lib.py (a plain module, so
that no test imports a module named `conftest`, which other test folders have too)."""

from __future__ import annotations

import pytest
from shipping_lib import tool


def _tool_or_skip(name: str) -> str:
    path = tool(name)
    if path is None:
        pytest.skip(f"{name} not found: not on PATH and no .tools/bin/{name} (run: bash .ci/install-tools)")
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return _tool_or_skip("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return _tool_or_skip("kubectl")
