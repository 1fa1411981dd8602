"""Object and collection commands against a live geoserver, as tables of command -> reply in
both output modes: RESP (exact Tile38 shapes) and JSON (`OUTPUT json`). Each table runs twice,
once per mode, on a flushed dataset, so both modes see the same state changes."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import GeoServer, wait_until
from wire import Wire

ELAPSED = re.compile(r"^\d+(\.\d+)?(ns|µs|ms|s)$")


class E:
    """An expected error reply: `-ERR msg` in RESP, `{"ok":false,"err":msg}` in JSON."""

    def __init__(self, msg: str) -> None:
        self.msg = msg

    def __repr__(self) -> str:
        return f"E({self.msg!r})"


class _Any:
    def __eq__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "ANY"


ANY = _Any()

POLY = '{"type":"Polygon","coordinates":[[[-115,33],[-114,33],[-114,34],[-115,34],[-115,33]]]}'
MPOLY = ('{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,1],[0,0]]],'
         '[[[2,2],[3,2],[3,3],[2,3],[2,2]]]]}')
LINE = '{"type":"LineString","coordinates":[[-116,32],[-115.5,32.5],[-115,33]]}'
FEAT = '{"type":"Feature","geometry":{"type":"Point","coordinates":[-112,33.5]},"properties":{"n":1}}'
FCOLL = ('{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point",'
         '"coordinates":[-113,34]},"properties":{}},{"type":"Feature","geometry":{"type":"LineString",'
         '"coordinates":[[-113,34],[-112.5,34.5]]},"properties":{}}]}')
PT1 = '{"type":"Point","coordinates":[-115,33]}'
BOX = '{"type":"Polygon","coordinates":[[[-110,30],[-109,30],[-109,31],[-110,31],[-110,30]]]}'


def q(text: str) -> str:
    return shlex.quote(text)


# (command, RESP reply, JSON reply without "ok"/"elapsed")
SET_GET: list[tuple[str, Any, Any]] = [
    ("SET fleet truck1 POINT 33 -115", "OK", {}),
    ("SET fleet truck2 POINT 33.5 -115.5 12", "OK", {}),
    ("SET fleet truck3 FIELD speed 55 FIELD name bob POINT 33 -114", "OK", {}),
    ("SET fleet box BOUNDS 30 -110 31 -109", "OK", {}),
    (f"SET fleet poly OBJECT {q(POLY)}", "OK", {}),
    (f"SET fleet mpoly OBJECT {q(MPOLY)}", "OK", {}),
    (f"SET fleet line OBJECT {q(LINE)}", "OK", {}),
    (f"SET fleet feat OBJECT {q(FEAT)}", "OK", {}),
    (f"SET fleet fc OBJECT {q(FCOLL)}", "OK", {}),
    ("SET fleet gh HASH 9my5xp7", "OK", {}),
    ("SET fleet note STRING hello", "OK", {}),
    ("SET fleet truck1 NX POINT 1 1", None, E("id already exists")),
    ("SET fleet ghost XX POINT 1 1", None, E("id not found")),
    ("SET nokey ghost XX POINT 1 1", None, E("id not found")),
    ("SET fleet truck4 NX POINT 34 -116", "OK", {}),
    ("SET fleet truck4 XX POINT 34.5 -116", "OK", {}),
    ("GET fleet truck1", PT1, {"object": {"type": "Point", "coordinates": [-115, 33]}}),
    ("GET fleet truck1 OBJECT", PT1, {"object": {"type": "Point", "coordinates": [-115, 33]}}),
    ("GET fleet truck4 POINT", ["34.5", "-116"], {"point": {"lat": 34.5, "lon": -116}}),
    ("GET fleet truck2", '{"type":"Point","coordinates":[-115.5,33.5,12]}',
     {"object": {"type": "Point", "coordinates": [-115.5, 33.5, 12]}}),
    ("GET fleet truck2 POINT", ["33.5", "-115.5", "12"], {"point": {"lat": 33.5, "lon": -115.5, "z": 12}}),
    ("GET fleet box", BOX, {"object": orjson.loads(BOX)}),
    ("GET fleet box BOUNDS", [["30", "-110"], ["31", "-109"]],
     {"bounds": {"sw": {"lat": 30, "lon": -110}, "ne": {"lat": 31, "lon": -109}}}),
    ("GET fleet poly", POLY, {"object": orjson.loads(POLY)}),
    ("GET fleet poly BOUNDS", [["33", "-115"], ["34", "-114"]],
     {"bounds": {"sw": {"lat": 33, "lon": -115}, "ne": {"lat": 34, "lon": -114}}}),
    ("GET fleet poly POINT", ["33.5", "-114.5"], {"point": {"lat": 33.5, "lon": -114.5}}),
    ("GET fleet mpoly", MPOLY, {"object": orjson.loads(MPOLY)}),
    ("GET fleet mpoly BOUNDS", [["0", "0"], ["3", "3"]],
     {"bounds": {"sw": {"lat": 0, "lon": 0}, "ne": {"lat": 3, "lon": 3}}}),
    ("GET fleet line", LINE, {"object": orjson.loads(LINE)}),
    ("GET fleet feat", FEAT, {"object": orjson.loads(FEAT)}),
    ("GET fleet fc", FCOLL, {"object": orjson.loads(FCOLL)}),
    ("GET fleet fc BOUNDS", [["34", "-113"], ["34.5", "-112.5"]],
     {"bounds": {"sw": {"lat": 34, "lon": -113}, "ne": {"lat": 34.5, "lon": -112.5}}}),
    ("GET fleet truck1 HASH 7", "9my5xp7", {"hash": "9my5xp7"}),
    ("GET fleet truck1 HASH 3", "9my", {"hash": "9my"}),
    ("GET fleet gh HASH 7", "9my5xp7", {"hash": "9my5xp7"}),
    ("GET fleet note", "hello", {"object": "hello"}),
    ("GET fleet truck3 WITHFIELDS",
     ['{"type":"Point","coordinates":[-114,33]}', ["name", "bob", "speed", "55"]],
     {"object": {"type": "Point", "coordinates": [-114, 33]}, "fields": {"name": "bob", "speed": 55}}),
    ("GET fleet truck3 WITHFIELDS POINT", [["33", "-114"], ["name", "bob", "speed", "55"]],
     {"point": {"lat": 33, "lon": -114}, "fields": {"name": "bob", "speed": 55}}),
    ("GET fleet truck1 WITHFIELDS", [PT1], {"object": {"type": "Point", "coordinates": [-115, 33]}}),
    ("GET fleet ghost", None, E("id not found")),
    ("GET nokey ghost", None, E("key not found")),
    ("GET fleet truck1 HASH 13", E("invalid argument '13'"), E("invalid argument '13'")),
    # SET merges new fields into the old ones and options may follow the geometry
    ("SET fleet truck3 FIELD speed 60 POINT 33 -114", "OK", {}),
    ("SET fleet truck3 POINT 33 -114 FIELD wheels 4", "OK", {}),
    ("GET fleet truck3 WITHFIELDS", ['{"type":"Point","coordinates":[-114,33]}',
                                     ["name", "bob", "speed", "60", "wheels", "4"]],
     {"object": {"type": "Point", "coordinates": [-114, 33]},
      "fields": {"name": "bob", "speed": 60, "wheels": 4}}),
    ("SET fleet bad FIELD z 1 POINT 1 1", E("invalid argument 'z'"), E("invalid argument 'z'")),
    ("SET fleet bad NX XX POINT 1 1", E("invalid argument 'XX'"), E("invalid argument 'XX'")),
    ("SET fleet bad POINT 1 1 BOGUS", E("invalid argument 'BOGUS'"), E("invalid argument 'BOGUS'")),
    ("KEYS *", ["fleet"], {"keys": ["fleet"]}),
    ("TYPE fleet", "hash", {"type": "hash"}),
    ("TYPE nokey", "none", E("key not found")),
    ("EXISTS fleet truck1", 1, {"exists": True}),
    ("EXISTS fleet ghost", 0, {"exists": False}),
    ("EXISTS nokey ghost", E("key not found"), E("key not found")),
    ("STATS fleet nokey",
     [["in_memory_size", ANY, "num_objects", 12, "num_points", 5, "num_strings", 1], None],
     {"stats": [{"in_memory_size": ANY, "num_objects": 12, "num_points": 5, "num_strings": 1}, None]}),
]

FIELDS_TTL: list[tuple[str, Any, Any]] = [
    ("SET fleet truck1 POINT 33 -115", "OK", {}),
    ("FSET fleet truck1 speed 10", 1, {}),
    ("FSET fleet truck1 speed 10", 0, {}),
    ("FSET fleet truck1 speed 10 color red", 1, {}),
    ("FSET fleet truck1 XX speed 11", 1, {}),
    ("FSET fleet ghost XX speed 1", 0, {}),
    ("FSET fleet ghost speed 1", E("id not found"), E("id not found")),
    ("FSET nokey ghost XX speed 1", E("key not found"), E("key not found")),
    ("FSET fleet truck1 lat 1", E("invalid argument 'lat'"), E("invalid argument 'lat'")),
    ("FSET fleet truck1 speed", E("wrong number of arguments for 'fset' command"),
     E("invalid number of arguments")),
    ("FGET fleet truck1 speed", "11", {"value": 11}),
    ("FGET fleet truck1 color", "red", {"value": "red"}),
    ("FGET fleet truck1 nope", "0", {"value": 0}),
    ("FGET fleet ghost speed", E("id not found"), E("id not found")),
    ("FEXISTS fleet truck1 speed", 1, {"exists": True}),
    ("FEXISTS fleet truck1 nope", 0, {"exists": False}),
    ("FSET fleet truck1 speed 0", 1, {}),
    ("FEXISTS fleet truck1 speed", 0, {"exists": False}),
    ("GET fleet truck1 WITHFIELDS", [PT1, ["color", "red"]],
     {"object": {"type": "Point", "coordinates": [-115, 33]}, "fields": {"color": "red"}}),
    ("TTL fleet truck1", -1, {"ttl": -1}),
    ("EXPIRE fleet truck1 100", 1, {}),
    ("TTL fleet truck1", 99, {"ttl": 99}),
    ("PERSIST fleet truck1", 1, {}),
    ("PERSIST fleet truck1", 0, {}),
    ("TTL fleet truck1", -1, {"ttl": -1}),
    ("TTL fleet ghost", -2, E("id not found")),
    ("TTL nokey ghost", -2, E("key not found")),
    ("EXPIRE fleet ghost 10", 0, E("id not found")),
    ("EXPIRE nokey ghost 10", 0, E("key not found")),
    ("EXPIRE fleet truck1 soon", E("invalid argument 'soon'"), E("invalid argument 'soon'")),
    ("PERSIST fleet ghost", 0, E("id not found")),
    ("PERSIST nokey ghost", 0, E("key not found")),
    ("SET fleet temp EX 100 POINT 1 1", "OK", {}),
    ("TTL fleet temp", 99, {"ttl": 99}),
    ("SET fleet temp POINT 1 1", "OK", {}),
    ("TTL fleet temp", -1, {"ttl": -1}),
    ("SET fleet late POINT 1 2 EX 100", "OK", {}),
    ("TTL fleet late", 99, {"ttl": 99}),
]

DELETE_RENAME: list[tuple[str, Any, Any]] = [
    ("SET fleet truck1 POINT 33 -115", "OK", {}),
    ("SET fleet truck2 POINT 33.5 -115.5", "OK", {}),
    ("SET fleet car1 POINT 34 -116", "OK", {}),
    ("SET fleet car2 POINT 34 -117", "OK", {}),
    ("SET other x STRING y", "OK", {}),
    ("BOUNDS fleet", [["-117", "33"], ["-115", "34"]],
     {"bounds": {"type": "Polygon",
                 "coordinates": [[[-117, 33], [-115, 33], [-115, 34], [-117, 34], [-117, 33]]]}}),
    ("BOUNDS nokey", None, E("key not found")),
    ("DEL fleet car2", 1, {}),
    ("DEL fleet car2", 0, {}),
    ("DEL fleet car2 ERRON404", E("id not found"), E("id not found")),
    ("DEL nokey car2 ERRON404", E("key not found"), E("key not found")),
    ("DEL nokey car2", 0, {}),
    ("PDEL fleet truck*", 2, {}),
    ("PDEL fleet truck*", 0, {}),
    ("KEYS *", ["fleet", "other"], {"keys": ["fleet", "other"]}),
    ("KEYS f*", ["fleet"], {"keys": ["fleet"]}),
    ("RENAME fleet cars", "OK", {}),
    ("GET cars car1 POINT", ["34", "-116"], {"point": {"lat": 34, "lon": -116}}),
    ("GET fleet car1", None, E("key not found")),
    ("RENAMENX cars other", 0, {}),
    ("RENAMENX cars fleet", 1, {}),
    ("RENAME nokey x", E("key not found"), E("key not found")),
    ("RENAME fleet other", "OK", {}),
    ("GET other x", None, E("id not found")),
    ("KEYS *", ["other"], {"keys": ["other"]}),
    ("DROP other", 1, {}),
    ("DROP other", 0, {}),
    ("SET a b STRING c", "OK", {}),
    ("FLUSHDB", "OK", {}),
    ("KEYS *", [], {"keys": []}),
    ("DEL", E("wrong number of arguments for 'del' command"), E("invalid number of arguments")),
]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(Path(tmp_path_factory.mktemp("keys")) / "data").start()
    yield server
    server.kill9()


def run_table(server: GeoServer, table: list[tuple[str, Any, Any]], json: bool) -> None:
    with Wire(server.port) as w:
        assert w.call("FLUSHDB") == "OK"
        for line, resp_want, json_want in table:
            args = shlex.split(line)
            if json:
                got = w.json(*args)
                assert ELAPSED.match(got.pop("elapsed")), (line, got)
                if isinstance(json_want, E):
                    assert got == {"ok": False, "err": json_want.msg}, line
                else:
                    assert got == {"ok": True, **json_want}, line
            else:
                got = w.call(*args)
                if isinstance(resp_want, E):
                    assert isinstance(got, Exception) and str(got) == "ERR " + resp_want.msg, (line, got)
                else:
                    assert got == resp_want, line


@pytest.mark.parametrize("json", [False, True], ids=["resp", "json"])
@pytest.mark.parametrize("table", [SET_GET, FIELDS_TTL, DELETE_RENAME],
                         ids=["set-get", "fields-ttl", "del-rename"])
def test_table(shared: GeoServer, table: list[tuple[str, Any, Any]], json: bool) -> None:
    run_table(shared, table, json)


def test_resp_reply_kinds_are_exact(shared: GeoServer) -> None:
    """Simple strings, integers, bulk strings and nils as Tile38 sends them."""
    with Wire(shared.port) as w:
        assert w.raw("SET", "kinds", "a", "POINT", 33, -115) == b"+OK\r\n"
        assert w.raw("GET", "kinds", "a") == b"$%d\r\n%s\r\n" % (len(PT1), PT1.encode())
        assert w.raw("GET", "kinds", "zz") == b"$-1\r\n"
        assert w.raw("EXISTS", "kinds", "a") == b":1\r\n"
        assert w.raw("TYPE", "kinds") == b"+hash\r\n"
        assert w.raw("RENAMENX", "kinds", "kinds") == b":0\r\n"
        assert w.raw("SET", "kinds", "a", "NX", "POINT", 1, 1) == b"$-1\r\n"
        assert w.raw("GET", "kinds", "a", "POINT") == b"*2\r\n$2\r\n33\r\n$4\r\n-115\r\n"
        assert w.raw("SET", "kinds", "tiny", "POINT", "1.266e-05", "-3e-7") == b"+OK\r\n"
        assert w.call("GET", "kinds", "tiny", "POINT") == ["0.00001266", "-0.0000003"]  # no exponent
        assert w.raw("DROP", "kinds") == b":1\r\n"
        assert w.raw("OUTPUT", "json") == b'$%d\r\n{"ok":true,"elapsed":"0ns"}\r\n' % len(
            b'{"ok":true,"elapsed":"0ns"}')


def test_hash_input_is_the_cell_center(shared: GeoServer) -> None:
    with Wire(shared.port) as w:
        assert w.call("SET", "gh", "a", "HASH", "9my5xp7") == "OK"
        lat, lon = (float(x) for x in w.call("GET", "gh", "a", "POINT"))
        assert abs(lat - 33.0) < 1e-3 and abs(lon + 115.0) < 1e-3
        assert w.json("GET", "gh", "a", "HASH", 7)["hash"] == "9my5xp7"


def test_set_ex_expires_in_the_background(server: GeoServer) -> None:
    """EX 0.3: the object disappears without any read touching it, and the empty key goes too."""
    c = server.client()
    assert c.execute_command("SET", "tmp", "gone", "EX", "0.3", "POINT", 33, -115)
    assert c.execute_command("SET", "keep", "stay", "POINT", 33, -115)
    assert server.stats()["num_objects"] == 2
    wait_until(lambda: server.stats()["num_objects"] == 1, timeout=10, message="background expiry")
    assert c.execute_command("KEYS", "*") == [b"keep"]
    assert c.execute_command("GET", "tmp", "gone") is None
    assert c.execute_command("TTL", "keep", "stay") == -1


def test_expire_command_then_gone(server: GeoServer) -> None:
    c = server.client()
    c.execute_command("SET", "fleet", "a", "POINT", 33, -115)
    c.execute_command("SET", "fleet", "b", "POINT", 33, -115)
    assert c.execute_command("EXPIRE", "fleet", "a", "0.2") == 1
    wait_until(lambda: c.execute_command("EXISTS", "fleet", "a") == 0, message="EXPIRE")
    assert c.execute_command("EXISTS", "fleet", "b") == 1
    wait_until(lambda: server.stats()["num_objects"] == 1, message="expired object swept")


def test_persist_cancels_expiry(server: GeoServer) -> None:
    c = server.client()
    c.execute_command("SET", "fleet", "a", "EX", "0.3", "POINT", 33, -115)
    assert c.execute_command("PERSIST", "fleet", "a") == 1
    c.execute_command("SET", "fleet", "marker", "EX", "0.3", "POINT", 1, 1)
    wait_until(lambda: c.execute_command("EXISTS", "fleet", "marker") == 0, message="marker expiry")
    assert c.execute_command("TTL", "fleet", "a") == -1
    assert c.execute_command("EXISTS", "fleet", "a") == 1


def test_http_and_resp_see_the_same_data(shared: GeoServer) -> None:
    import urllib.request

    with Wire(shared.port) as w:
        assert w.call("SET", "shared", "t1", "FIELD", "speed", 90, "POINT", 33, -115) == "OK"
    url = f"http://127.0.0.1:{shared.port}/GET+shared+t1+WITHFIELDS"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = orjson.loads(r.read())
    assert body["object"] == {"type": "Point", "coordinates": [-115, 33]}
    assert body["fields"] == {"speed": 90}


def test_strings_in_point_outputs_huge_ttls_and_multiline_errors(server):
    """Found in review: SCAN POINTS/BOUNDS/HASHES over a STRING object was an internal error
    (Tile38 gives a string the zero point and an empty rect); TTL of `EX 1e20` overflowed the
    64-bit RESP integer; a GEOS error text with a newline broke the RESP error line."""
    c = server.client()
    c.execute_command("SET", "mix", "s", "STRING", "hello")
    c.execute_command("SET", "mix", "p", "POINT", 1, 2)
    assert c.execute_command("SCAN", "mix", "POINTS")[1][1] == [b"s", [b"0", b"0"]]
    assert c.execute_command("SCAN", "mix", "BOUNDS")[1][1][0] == b"s"
    assert server.json("SCAN", "mix", "HASHES", 5)["ok"] is True
    c.execute_command("SET", "mix", "far", "EX", 1e20, "POINT", 1, 2)
    assert 0 < c.execute_command("TTL", "mix", "far") < 2**63
    assert server.json("TTL", "mix", "far")["ok"] is True
    with pytest.raises(Exception, match="invalid geojson") as err:
        c.execute_command("SET", "mix", "ls", "OBJECT", '{"type":"LineString","coordinates":[[1,2]]}')
    assert "\n" not in str(err.value)
    assert c.execute_command("PING")  # the connection is still in step
