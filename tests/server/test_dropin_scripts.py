"""Tile38's tests/scripts_test.go and the script cases of timeout_test.go as black-box tables
against a real geoserver (redis-py), plus what Tile38 promises around them: a script's writes
reach the AOF and followers as their own records, a script cannot reach files, the network or
the host, and a runaway script is stopped while the server keeps serving."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
import redis
from geoserver.protocol.resp import encode_command
from helpers import GeoServer, wait_until


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(tmp_path_factory.mktemp("scripts") / "s").start()
    yield server
    server.kill9()


def do(r: redis.Redis, *args: object) -> object:
    """A reply as Tile38's harness prints it: errors as `ERR ...` text, nil as None."""
    try:
        reply = r.execute_command(*args)
    except redis.RedisError as exc:
        return f"ERR {exc}" if not str(exc).startswith("ERR") else str(exc)
    if reply is True:
        return "OK"
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return [x.decode() if isinstance(x, bytes) else x for x in reply]
    return reply


def run_table(r: redis.Redis, table: list[tuple[tuple, object]]) -> None:
    got = [(args, do(r, *args)) for args, _ in table]
    want = [(args, expect) for args, expect in table]
    for (args, g), (_, w) in zip(got, want, strict=True):
        if callable(w):
            assert w(g), (args, g)
        else:
            assert g == w, (args, g)


def contains(text: str):
    return lambda got: isinstance(got, str) and text in got


SHA_2PLUS2 = "2dd1b44209ecb49617af05caf0491390a03c1cc4"

BASIC = [
    (("EVAL", "return 2 + 2", 0), 4),
    (("SCRIPT", "LOAD", "return 2 + 2"), SHA_2PLUS2),
    (("SCRIPT", "EXISTS", SHA_2PLUS2, "no_script"), [1, 0]),
    (("EVALSHA", SHA_2PLUS2, "0"), 4),
    (("SCRIPT", "FLUSH"), "OK"),
    (("SCRIPT", "EXISTS", SHA_2PLUS2, "no_script"), [0, 0]),
    (("EVAL", "return KEYS[1] .. ' only'", 1, "key1"), "key1 only"),
    (("EVAL", "return KEYS[1] .. ' and ' .. ARGV[1]", 1, "key1", "arg1"), "key1 and arg1"),
    (("EVAL", "return ARGV[1] .. ' and ' .. ARGV[2]", 0, "arg1", "arg2"), "arg1 and arg2"),
    (("EVAL", "return tile38.sha1hex('asdf')", 0), "3da541559918a808c2402bba5012f6c60b27661c"),
    (("EVAL", "return tile38.distance_to(37.7341129, -122.4408378, 37.733, -122.43)", 0), 961),
]
ATOMIC = [
    (("EVAL", "return tile38.call('get', KEYS[1], ARGV[1])", "1", "mykey", "myid"), None),
    (("EVAL", "return tile38.call('set', KEYS[1], ARGV[1], 'point', 33, -115)", "1", "mykey", "myid1"), "OK"),
    (("EVAL", "return tile38.call('get', KEYS[1], ARGV[1], ARGV[2])", "1", "mykey", "myid1", "point"),
     ["33", "-115"]),
]
READONLY = [
    (("EVALRO", "return tile38.call('get', KEYS[1], ARGV[1])", "1", "mykey", "myid"), None),
    (("EVALRO", "return tile38.call('set', KEYS[1], ARGV[1], 'point', 33, -115)", "1", "mykey", "myid1"),
     contains("ERR read only")),
    (("EVALRO", "return tile38.pcall('set', KEYS[1], ARGV[1], 'point', 33, -115)", "1", "mykey", "myid1"),
     "ERR read only"),
    (("SET", "mykey", "myid1", "POINT", 33, -115), "OK"),
    (("EVALRO", "return tile38.call('get', KEYS[1], ARGV[1], ARGV[2])", "1", "mykey", "myid1", "point"),
     ["33", "-115"]),
]
NONATOMIC = [
    (("EVALNA", "return tile38.call('get', KEYS[1], ARGV[1])", "1", "mykey", "myid"), None),
    (("EVALNA", "return tile38.call('set', KEYS[1], ARGV[1], 'point', 33, -115)", "1", "mykey", "myid1"),
     "OK"),
    (("EVALNA", "return tile38.call('get', KEYS[1], ARGV[1], ARGV[2])", "1", "mykey", "myid1", "point"),
     ["33", "-115"]),
]
VULN = [
    (("EVAL", "return io", "0"), None),
    (("EVAL", "return file", "0"), None),
    (("EVAL", "return os.execute", "0"), None),
    (("EVAL", "return os.getenv", "0"), None),
    (("EVAL", "return os.clock", "0"), "ERR Unsupported lua type: function"),
    (("EVAL", "return loadfile", "0"), None),
    (("EVAL", "return tonumber(ARGV[1])", "0", "38"), 38),
    (("EVAL", "return package", "0"), None),
]
# Beyond Tile38's list: nothing that reaches files, processes, other code or Python.
SANDBOX = [
    (("EVAL", f"return {name}", "0"), None)
    for name in ("require", "debug", "dofile", "load", "loadstring", "module", "python",
                 "coroutine", "pcall", "xpcall", "getmetatable", "setmetatable", "rawset",
                 "collectgarbage", "getfenv", "setfenv", "newproxy", "string.dump", "_G", "print")
] + [
    (("EVAL", "return tile38.sha1hex.__globals__", "0"), contains("not reachable")),
    (("EVAL", "x = 1", "0"), contains("attempt to create global variable 'x'")),
    (("EVAL", "return tile38.call('flushdb')", "0"), contains("command not supported in scripts")),
    (("EVAL", "return tile38.call('config', 'get', '*')", "0"), contains("command not supported in scripts")),
    (("EVAL", "this is not lua", "0"), contains("'=' expected")),
    (("EVAL", "return 1", "x"), "ERR invalid argument 'x'"),
    (("EVAL", "return 1", "2", "onlyone"), "ERR wrong number of arguments for 'eval' command"),
    (("EVALSHA", "ffffffffffffffffffffffffffffffffffffffff", "0"), "ERR sha not found"),
    (("EVAL", "return tile38.error_reply('bad thing')", "0"), "ERR bad thing"),
    (("EVAL", "return tile38.status_reply('fine')", "0"), "fine"),
    (("EVAL", "return {1, 'two', {3}}", "0"), [1, "two", [3]]),
    (("EVAL", "return json.decode(ARGV[1]).a", "0", '{"a":"b"}'), "b"),
]


@pytest.mark.parametrize("table", [BASIC, ATOMIC, READONLY, NONATOMIC, VULN, SANDBOX],
                         ids=["BASIC", "ATOMIC", "READONLY", "NONATOMIC", "VULN", "sandbox"])
def test_tile38_scripts(make_server, table) -> None:
    run_table(make_server("sc").client(), table)


SLEEP = """
		local clock = os.clock
		local function sleep(n)
			local t0 = clock()
			while clock() - t0 <= n do end
		end
		sleep(0.5)
	"""
SLEEP_SHA = "e3ce9449853a622327f30c727a6e086ccd91d9d4"


def test_timeout_scripts(shared: GeoServer) -> None:
    """timeout_scripts_test: TIMEOUT over EVALSHA / EVALROSHA / EVALNASHA."""
    table: list[tuple[tuple, object]] = [(("SCRIPT", "LOAD", SLEEP), SLEEP_SHA)]
    for cmd in ("EVALSHA", "EVALROSHA", "EVALNASHA"):
        table.append(((cmd, SLEEP_SHA, 0), None))
    for cmd in ("EVALSHA", "EVALROSHA", "EVALNASHA"):
        table.append((("TIMEOUT", "0.1", cmd, SLEEP_SHA, 0), "ERR timeout"))
    for cmd in ("EVALSHA", "EVALROSHA", "EVALNASHA"):  # Tile38 allows 0.9 s; a loaded CI box needs more
        table.append((("TIMEOUT", "30", cmd, SLEEP_SHA, 0), None))
    run_table(shared.client(), table)


def test_timeout_within_scripts(make_server) -> None:
    """timeout_within_scripts_test and timeout_no_writes_within_scripts_test (1000 objects)."""
    s = make_server("tws")
    r = s.client()
    pipe = r.pipeline(transaction=False)
    for i in range(1000):
        pipe.execute_command("SET", "mykey", f"val:{i}", "FIELD", "foo", i / 1000, "POINT",
                             (i % 180) - 89.5, (i % 360) - 179.5)
    pipe.execute()
    script1 = "return tile38.call('timeout', 10, 'SCAN', 'mykey', 'WHERE', 'foo', -1, 2, 'COUNT')"
    script2 = "return tile38.call('timeout', 0.000001, 'SCAN', 'mykey', 'WHERE', 'foo', -1, 2, 'COUNT')"
    sha1, sha2 = "27a364b4e46ef493f6b70371086c286e2d5b5f49", "2da9c05b54abfe870bdc8383a143f9d3aa656192"
    table: list[tuple[tuple, object]] = [(("SCRIPT", "LOAD", script1), sha1),
                                         (("SCRIPT", "LOAD", script2), sha2)]
    for cmd in ("EVALSHA", "EVALROSHA", "EVALNASHA"):
        table.append(((cmd, sha1, 0), 1000))
    for cmd in ("EVALSHA", "EVALROSHA", "EVALNASHA"):
        table.append(((cmd, sha2, 0), contains("ERR timeout")))
    w1 = "return tile38.call('SET', 'mykey', 'myval', 'STRING', 'foo')"
    w2 = "return tile38.call('timeout', 10, 'SET', 'mykey', 'myval', 'STRING', 'foo')"
    table += [(("SCRIPT", "LOAD", w1), "393d0adff113fdda45e3b5aff93c188c30099f48"),
              (("SCRIPT", "LOAD", w2), "5287c158d15eb53d800b7389d82df0d73b004bf1"),
              (("EVALSHA", "393d0adff113fdda45e3b5aff93c188c30099f48", 0, "foo"), "OK"),
              (("EVALSHA", "5287c158d15eb53d800b7389d82df0d73b004bf1", 0, "foo"),
               contains("ERR timeout not supported for"))]
    run_table(r, table)


def test_script_writes_are_their_own_aof_records_and_replicate(make_server) -> None:
    leader = make_server("lead")
    r = leader.client()
    script = ("tile38.call('set', KEYS[1], 'a', 'point', 1, 2) "
              "tile38.call('set', KEYS[1], 'b', 'string', ARGV[1]) "
              "tile38.call('del', KEYS[1], 'nosuch') "
              "return tile38.call('get', KEYS[1], 'b')")
    assert r.eval(script, 1, "fleet", "hello") == b"hello"
    aof = leader.aof_path.read_bytes()
    assert aof == encode_command([b"set", b"fleet", b"a", b"point", b"1", b"2"]) + encode_command(
        [b"set", b"fleet", b"b", b"string", b"hello"])
    follower = make_server("fol", args=["--follow", f"127.0.0.1:{leader.port}"])
    wait_until(lambda: follower.json("GET", "fleet", "b").get("object") == "hello", message="replicated")
    assert do(follower.client(), "EVAL", "return 1", 0) == "ERR not the leader"
    assert do(follower.client(), "EVALRO", "return tile38.call('get', 'fleet', 'b')", 0) == "hello"
    leader.stop()
    leader.start()
    assert leader.json("GET", "fleet", "a", "POINT")["point"] == {"lat": 1, "lon": 2}


def test_runaway_script_is_stopped_and_the_server_serves(shared: GeoServer) -> None:
    r = shared.client()
    assert do(r, "CONFIG", "SET", "script-time-limit", "1") == "OK"
    try:
        got = do(r, "EVAL", "while true do end", 0)
        assert isinstance(got, str) and "time limit" in got
        got = do(r, "EVAL", "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) end", 0)
        assert isinstance(got, str) and ("memory" in got or "time limit" in got)
        assert r.ping()
    finally:
        do(r, "CONFIG", "SET", "script-time-limit", "5")


def test_eval_json_output(shared: GeoServer) -> None:
    assert shared.json("EVAL", "return {1, 'a', {b = 2}}", 0)["result"] == [1, "a", {"b": 2}]
    assert shared.json("SCRIPT", "LOAD", "return 2 + 2")["result"] == SHA_2PLUS2
    assert shared.json("SCRIPT", "EXISTS", SHA_2PLUS2)["result"] == [1]
    doc = shared.json("EVAL", "return tile38.call('nosuchcommand')", 0)
    assert doc["ok"] is False and "not supported" in doc["err"]
    assert orjson.loads(orjson.dumps(shared.json("EVAL", "return 2.5", 0)))["result"] == 2.5


def test_redis_py_script_api(shared: GeoServer) -> None:
    r = shared.client()
    sha = r.script_load("return ARGV[1]")
    assert r.script_exists(sha) == [True]
    assert r.evalsha(sha, 0, "x") == b"x"
    r.script_flush()
    assert r.script_exists(sha) == [False]
    # Tile38's `sha not found` is not Redis's NOSCRIPT, so redis-py's register_script (which
    # falls back to EVAL on NOSCRIPT) does not fall back, with Tile38 as here
    with pytest.raises(redis.ResponseError, match="sha not found"):
        r.evalsha(sha, 0)
