"""Shared fixtures: real geoserver processes on 127.0.0.1, stopped after each test."""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import GeoServer


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., GeoServer]]:
    """Factory: make_server(name="a", args=[...], host=...) starts a geoserver process
    (`tls`: the client context its readiness check and json() connect with)."""
    started: list[GeoServer] = []

    def make(name: str = "s", args: list[str] | None = None, host: str = "127.0.0.1",
             start: bool = True, tls: ssl.SSLContext | None = None) -> GeoServer:
        server = GeoServer(tmp_path / name, host=host, args=args, tls=tls)
        started.append(server)
        return server.start() if start else server

    yield make
    for server in started:
        server.kill9()


@pytest.fixture
def server(make_server: Callable[..., GeoServer]) -> GeoServer:
    return make_server()
