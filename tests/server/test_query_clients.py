"""JSON field values, WHERE expressions, JSET/JGET/JDEL and SEARCH with real clients (pyle38,
redis-py) against one real geoserver: typed values survive a restart and an AOFSHRINK, bad
expressions are refused with a clear error and the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from helpers import GeoServer, wait_until
from pyle38 import Tile38


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(Path(tmp_path_factory.mktemp("qclients")) / "s").start()
    yield server
    server.kill9()


@pytest.fixture
def r(srv: GeoServer) -> Iterator[redis.Redis]:
    client = srv.client()
    client.response_callbacks.pop("SCAN", None)
    client.execute_command("FLUSHDB")
    yield client
    client.close()


TYPED = {"n": 5, "s": "truck", "t": True, "f": False, "z": None, "o": {"driver": "x", "speed": 7},
         "a": [1, "two"], "q": "0123", "inf": "+Inf"}


def _set_typed(r: redis.Redis) -> None:
    args: list[object] = ["SET", "fleet", "t1"]
    for name, value in TYPED.items():
        raw = value if isinstance(value, str) and name in ("s", "q", "inf") else orjson.dumps(value).decode()
        args += ["FIELD", name if name != "z" else "nul", raw]
    r.execute_command(*args, "POINT", 33, -112)


def _fields(srv: GeoServer) -> dict[str, object]:
    return srv.json("GET", "fleet", "t1", "WITHFIELDS")["fields"]


WANT = {"n": 5, "s": "truck", "t": True, "f": False, "nul": None, "o": {"driver": "x", "speed": 7},
        "a": [1, "two"], "q": "0123", "inf": "+Inf"}


def test_field_values_keep_their_json_type_through_restart_and_shrink(srv: GeoServer, r: redis.Redis) -> None:
    _set_typed(r)
    assert _fields(srv) == WANT
    assert srv.json("FGET", "fleet", "t1", "o")["value"] == {"driver": "x", "speed": 7}
    assert r.execute_command("FGET", "fleet", "t1", "o") == b'{"driver":"x","speed":7}'
    assert r.execute_command("FGET", "fleet", "t1", "t") == b"true"
    scan = srv.json("SCAN", "fleet", "OBJECTS")
    row = dict(zip(scan["fields"], scan["objects"][0]["fields"], strict=True))
    assert row == WANT
    srv.stop()
    srv.start()
    assert _fields(srv) == WANT  # the AOF replays the typed values
    before = srv.stats()["last_shrink_time"]
    with srv.client() as c:
        assert c.execute_command("AOFSHRINK") == b"OK"
    wait_until(lambda: srv.stats()["last_shrink_time"] != before, 30, message="shrink done")
    srv.stop()
    srv.start()
    assert _fields(srv) == WANT  # and so does the rewritten AOF (a string "0123" stays a string)


def test_where_on_typed_values(srv: GeoServer, r: redis.Redis) -> None:
    r.execute_command("SET", "fleet", "a", "FIELD", "info", '{"driver":"Tom","speed":50}', "POINT", 33, -112)
    r.execute_command("SET", "fleet", "b", "FIELD", "info", '{"driver":"ann","speed":20}', "POINT", 33, -112)
    r.execute_command("SET", "fleet", "c", "FIELD", "name", "bob", "POINT", 33, -112)

    def ids(*where: object) -> list[str]:
        return srv.json("SCAN", "fleet", *where, "IDS")["ids"]

    assert ids("WHERE", "info.speed > 30 && info.driver == 'tom'") == ["a"]
    assert ids("WHERE", "info.driver =~ '^[A-Z]'") == ["a"]  # a regex keeps its case
    assert ids("WHERE", "!info || info.speed < 30") == ["b", "c"]
    assert ids("WHERE", "id.match('A*') || id.match('?') && name == 'BOB'") == ["a", "c"]  # globs: * ?
    assert ids("WHERE", "info.speed * 2 >= 100 ? true : false") == ["a"]
    assert ids("WHERE", "name", "!=", "bob") == ["a", "b"]
    assert ids("WHERE", "name", ">", "ann") == ["c"]
    assert ids("WHERE", "info.speed", 20, "(50") == ["b"]
    assert ids("WHERE", "name =~ '(*'") == []  # an invalid regex matches nothing, as in Tile38


@pytest.mark.parametrize("expr", ["speed >", "(speed", "a ==== b", "speed > 1 &&", "'open"])
def test_bad_expression_is_refused_and_server_keeps_serving(srv: GeoServer, r: redis.Redis,
                                                            expr: str) -> None:
    r.execute_command("SET", "fleet", "a", "POINT", 33, -112)
    with pytest.raises(redis.ResponseError, match="invalid where expression: syntax error"):
        r.execute_command("SCAN", "fleet", "WHERE", expr, "IDS")
    deep = "(" * 5000 + "1" + ")" * 5000
    with pytest.raises(redis.ResponseError, match="invalid where expression"):
        r.execute_command("SCAN", "fleet", "WHERE", deep, "IDS")
    assert r.execute_command("SCAN", "fleet", "IDS") == [0, [b"a"]]


def test_jset_jget_jdel_errors(srv: GeoServer, r: redis.Redis) -> None:
    assert r.execute_command("JSET", "docs", "d1", "a.b", "1") == b"OK"
    assert r.execute_command("JGET", "docs", "d1", "a") == b'{"b":1}'
    assert r.execute_command("JGET", "docs", "d1", "a.b", "RAW") == b"1"
    assert r.execute_command("JGET", "docs", "d1", "nope") is None
    missing = srv.json("JGET", "docs", "d1", "nope")
    assert missing["ok"] is True and "value" not in missing
    with pytest.raises(redis.ResponseError, match="invalid argument 'BAD'"):
        r.execute_command("JSET", "docs", "d1", "a", "1", "BAD")
    with pytest.raises(redis.ResponseError, match="invalid json"):
        r.execute_command("JSET", "docs", "d1", "a", "{nope", "RAW")
    assert srv.json("JDEL", "docs", "d1", "zz")["err"] == "path not found"
    assert srv.json("JGET", "nokey", "d1")["err"] == "key not found"
    r.execute_command("SET", "docs", "p", "POINT", 33, -112)
    with pytest.raises(redis.ResponseError, match="missing type"):
        r.execute_command("JDEL", "docs", "p", "type")
    assert r.execute_command("GET", "docs", "p") == b'{"type":"Point","coordinates":[-112,33]}'


async def test_pyle38_json_search_and_where(srv: GeoServer) -> None:
    with srv.client() as c:
        c.execute_command("FLUSHDB")
    tile38 = Tile38(url=f"redis://127.0.0.1:{srv.port}")
    try:
        assert (await tile38.jset("user", "901", "name", "Tom")).ok
        assert (await tile38.jset("user", "901", "age", "38")).ok
        got = await tile38.jget("user", "901")
        assert orjson.loads(got.value) == {"name": "Tom", "age": 38}
        assert (await tile38.jget("user", "901", "age")).value == "38"
        assert (await tile38.jdel("user", "901", "age")).ok
        for oid, value in (("a", "apple"), ("b", "banana"), ("c", "cherry")):
            await tile38.set("fruit", oid).string(value).exec()
        found = await tile38.search("fruit").match("*an*").asStringObjects()
        assert [o.object for o in found.objects] == ["banana"]
        desc = await tile38.search("fruit").desc().asIds()
        assert desc.ids == ["c", "b", "a"]
        await tile38.set("fleet", "t1").fields({"speed": 90}).point(33.5, -112.2).exec()
        await tile38.set("fleet", "t2").fields({"speed": 10}).point(33.5, -112.2).exec()
        fast = await tile38.scan("fleet").where_expr("speed > 50").asIds()
        assert fast.ids == ["t1"]
        near = await tile38.nearby("fleet").where_expr("speed < 50").point(33.5, -112.2, 1000).asIds()
        assert near.ids == ["t2"]
    finally:
        await tile38.quit()


def test_json_documents_survive_restart_and_shrink(srv: GeoServer, r: redis.Redis) -> None:
    r.execute_command("JSET", "docs", "d1", "user.name", "tom")
    r.execute_command("JSET", "docs", "d1", "tags.-1", "a")
    r.execute_command("JSET", "docs", "d1", "n", "12", "STR")
    r.execute_command("SET", "docs", "p", "FIELD", "speed", 5, "OBJECT",
                      '{"type":"Feature","geometry":{"type":"Point","coordinates":[1,2]}}')
    r.execute_command("JSET", "docs", "p", "properties.kind", "truck")
    want = {"user": {"name": "tom"}, "tags": ["a"], "n": "12"}
    assert orjson.loads(r.execute_command("JGET", "docs", "d1")) == want
    for restart in ("replay", "shrink"):
        if restart == "shrink":
            before = srv.stats()["last_shrink_time"]
            r.execute_command("AOFSHRINK")
            wait_until(lambda b=before: srv.stats()["last_shrink_time"] != b, 30, message="shrink done")
        srv.stop()
        srv.start()
        with srv.client() as c:
            assert orjson.loads(c.execute_command("JGET", "docs", "d1")) == want, restart
            assert c.execute_command("JGET", "docs", "p", "properties.kind") == b"truck", restart
            assert c.execute_command("FGET", "docs", "p", "speed") == b"5", restart  # fields kept
