"""SET/FSET ... RETURN (Tile38 after 1.37, crud.go): the write answers with the stored object in
GET's output forms, in both modes; bad RETURN words are refused before anything is written, and
an AOF holding RETURN writes replays. Tile38's own cases are in test_query_keys.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import GeoServer
from test_keys import E, run_table

POINT = {"type": "Point", "coordinates": [-115, 33]}
ARITY = (E("wrong number of arguments for 'set' command"), E("invalid number of arguments"))

RETURN: list[tuple[str, Any, Any]] = [
    ("SET k a POINT 33 -115 RETURN", '{"type":"Point","coordinates":[-115,33]}', {"object": POINT}),
    ("SET k a FIELD speed 5 POINT 33 -115 RETURN WITHFIELDS POINT", [["33", "-115"], ["speed", "5"]],
     {"point": {"lat": 33, "lon": -115}, "fields": {"speed": 5}}),
    ("SET k a POINT 33 -115 RETURN HASH 5 WITHFIELDS", ["9my5x", ["speed", "5"]],
     {"hash": "9my5x", "fields": {"speed": 5}}),
    ("FSET k a speed 6 RETURN BOUNDS", [["33", "-115"], ["33", "-115"]],
     {"bounds": {"sw": {"lat": 33, "lon": -115}, "ne": {"lat": 33, "lon": -115}}}),
    ("FSET k a RETURN WITHFIELDS HASH 3 speed 0", ["9my"], {"hash": "9my"}),
    ("FSET k a speed 7 RETURN WITHFIELDS", ['{"type":"Point","coordinates":[-115,33]}', ["speed", "7"]],
     {"object": POINT, "fields": {"speed": 7}}),
    # refused, and nothing written
    ("SET k b POINT 1 2 RETURN RETURN", E("invalid argument 'RETURN'"), E("invalid argument 'RETURN'")),
    ("SET k b POINT 1 2 RETURN HASH", *ARITY),
    ("SET k b POINT 1 2 RETURN HASH 13", E("invalid argument '13'"), E("invalid argument '13'")),
    ("SET k b POINT 1 2 RETURN HASH x", E("invalid argument 'x'"), E("invalid argument 'x'")),
    ("SET k b RETURN POINT 1 2", E("invalid argument '1'"), E("invalid argument '1'")),
    ("SET k b STRING hi RETURN POINT", E("object is not spatial"), E("object is not spatial")),
    ("FSET k a speed 9 RETURN RETURN", E("invalid argument 'RETURN'"), E("invalid argument 'RETURN'")),
    ("FSET k a speed 9 RETURN HASH 0", E("invalid argument '0'"), E("invalid argument '0'")),
    ("GET k b", None, E("id not found")),
    ("FGET k a speed", "7", {"value": 7}),
    ("SET k s STRING hi RETURN", "hi", {"object": "hi"}),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(Path(tmp_path_factory.mktemp("keysret")) / "data").start()
    yield server
    server.kill9()


@pytest.mark.parametrize("json", [False, True], ids=["resp", "json"])
def test_return_table(shared: GeoServer, json: bool) -> None:
    run_table(shared, RETURN, json)


def test_return_writes_replay_from_the_aof(tmp_path: Path) -> None:
    server = GeoServer(tmp_path / "data").start()
    c = server.client()
    c.execute_command("SET", "k", "a", "FIELD", "f", "1", "POINT", "33", "-115", "RETURN", "HASH", "7")
    c.execute_command("FSET", "k", "a", "g", "2", "RETURN", "WITHFIELDS")
    server.kill9()
    server.start()
    assert server.json("GET", "k", "a", "WITHFIELDS")["fields"] == {"f": 1, "g": 2}
    server.kill9()
