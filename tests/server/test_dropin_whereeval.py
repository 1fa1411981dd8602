# ruff: noqa: E501  (Tile38's cases verbatim: long result lines)
"""WHEREEVAL / WHEREEVALSHA on the search commands against a real geoserver: Tile38's
tests/keys_test.go `keys_WHEREEVAL_test` ported as a table (tile38_port.py), then what
Tile38's token.go and scanner.go define around it (ID, FIELDS with z, PROPERTIES, truthiness,
ARGV, the sha cache shared with EVAL), bad scripts (a clear error, the server keeps serving),
a script that loops forever (stopped by script-time-limit, and by TIMEOUT), and the sandbox."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
import redis
from fencewire import EventStream, matches
from helpers import GeoServer
from tile38_port import UNORDERED, Case, run

BOX = ("BOUNDS", "32.8", "-115.2", "33.2", "-114.8")
ORDER = "results in id order, not R-tree order (docs/commands.md, Differences from Tile38)"

# keys_test.go keys_WHEREEVAL_test, case by case
KEYS_WHEREEVAL: list[Case] = [
    (["SET", "mykey", "myid_a1", "FIELD", "a", "1", "POINT", "33", "-115"], "R", "OK", None),
    (["WITHIN", "mykey", "WHEREEVAL", "return FIELDS.a > tonumber(ARGV[1])", "1", "0.5", *BOX], "R", "Str",
     '[0 [[myid_a1 {"type":"Point","coordinates":[-115,33]} [a 1]]]]'),
    (["WITHIN", "mykey", "WHEREEVAL", "return FIELDS.a > tonumber(ARGV[1])", "a", "0.5", *BOX], "R", "Err",
     "invalid argument 'a'"),
    (["WITHIN", "mykey", "WHEREEVAL", "return FIELDS.a > tonumber(ARGV[1])", "1", "0.5", "4", *BOX], "R", "Err",
     "invalid argument '4'"),
    (["SET", "mykey", "myid_a2", "FIELD", "a", "2", "POINT", "32.99", "-115"], "R", "OK", None),
    (["SET", "mykey", "myid_a3", "FIELD", "a", "3", "POINT", "33", "-115.02"], "R", "OK", None),
    (["WITHIN", "mykey", "WHEREEVAL", "return FIELDS.a > tonumber(ARGV[1]) and FIELDS.a ~= tonumber(ARGV[2])",
      "2", "0.5", "3", *BOX], "R", "Str",
     '[0 [[myid_a2 {"type":"Point","coordinates":[-115,32.99]} [a 2]] [myid_a1 {"type":"Point","coordinates":[-115,33]} [a 1]]]]'),
    # the same query, ids only and as a set: what the order-skipped case checks besides order
    (["WITHIN", "mykey", "WHEREEVAL", "return FIELDS.a > tonumber(ARGV[1]) and FIELDS.a ~= tonumber(ARGV[2])",
      "2", "0.5", "3", "IDS", *BOX], "R", "Str", "[0 [myid_a2 myid_a1]]"),
]
SKIP = {6: ORDER, 7: UNORDERED + "ids as a set"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    server = GeoServer(tmp_path_factory.mktemp("whereeval") / "s").start()
    yield server
    server.kill9()


@pytest.fixture
def r(srv: GeoServer) -> Iterator[redis.Redis]:
    client = srv.client()
    client.execute_command("FLUSHDB")
    yield client
    client.close()


def ids(r: redis.Redis, *args: object) -> list[str]:
    reply = r.execute_command(*args)
    return sorted(x.decode() for x in reply[1])


def err(r: redis.Redis, *args: object) -> str:
    with pytest.raises(redis.ResponseError) as exc:
        r.execute_command(*args)
    return str(exc.value)


def test_tile38_keys_whereeval_table(srv: GeoServer) -> None:
    passed, failures = run(srv.port, KEYS_WHEREEVAL, SKIP)
    assert not failures, "\n".join(failures)
    assert passed == len(KEYS_WHEREEVAL) - 1


def fleet(r: redis.Redis) -> None:
    r.execute_command("SET", "fleet", "t1", "FIELD", "speed", 10, "POINT", 33, -115)
    r.execute_command("SET", "fleet", "t2", "FIELD", "speed", 70, "FIELD", "kind", "bus",
                      "POINT", 33.01, -115.01)
    r.execute_command("SET", "fleet", "t3", "FIELD", "info", '{"a":{"b":1}}', "FIELD", "on", "true",
                      "POINT", 33.02, -115.02, 12)
    r.execute_command("SET", "fleet", "f1", "OBJECT",
                      '{"type":"Feature","geometry":{"type":"Point","coordinates":[-115,33]},'
                      '"properties":{"owner":"ann","n":3}}')
    r.execute_command("SET", "fleet", "s1", "STRING", "hello")


@pytest.mark.parametrize("script, argv, want", [
    ("return ID == ARGV[1]", ["t2"], ["t2"]),
    ("return FIELDS.speed", [], ["t1", "t2"]),                      # a number: non-zero
    ("return FIELDS.kind == 'bus'", [], ["t2"]),                     # a string field
    ("return FIELDS.on == true", [], ["t3"]),                        # a JSON true is a boolean
    ("return FIELDS.info", [], ["t3"]),                              # JSON as text: non-empty
    ("return FIELDS.z == 12", [], ["t3"]),                           # z of a spatial object
    ("return FIELDS.z", [], ["t3"]),                                 # 0 for 2D objects: falsy
    ("return FIELDS.z == nil", [], ["s1"]),                          # a string object has none
    ("return PROPERTIES.owner == ARGV[1] and PROPERTIES.n == 3", ["ann"], ["f1"]),
    ("return PROPERTIES.deep.x", [], []),                            # indexing nil: no match
    ("return ''", [], []),
    ("return 0", [], []),
    ("return {}", [], []),
    ("return {1}", [], ["f1", "s1", "t1", "t2", "t3"]),
    ("return {k = 1}", [], ["f1", "s1", "t1", "t2", "t3"]),
    ("return nil", [], []),
    ("return print", [], []),                                        # not in the sandbox: nil
    ("return #ARGV == 2 and ARGV[2] == 'y'", ["x", "y"], ["f1", "s1", "t1", "t2", "t3"]),
])
def test_id_fields_properties_argv_and_truthiness(r, script, argv, want):
    fleet(r)
    assert ids(r, "SCAN", "fleet", "WHEREEVAL", script, len(argv), *argv, "IDS") == want


def test_whereeval_combines_with_other_filters_outputs_and_commands(r, srv):
    fleet(r)
    speedy = ("WHEREEVAL", "return (FIELDS.speed or 0) > tonumber(ARGV[1])", 1, 5)
    assert ids(r, "SCAN", "fleet", *speedy, "WHEREEVAL", "return ID ~= 't1'", 0, "IDS") == ["t2"]
    assert ids(r, "SCAN", "fleet", "WHERE", "speed", 50, 100, *speedy, "IDS") == ["t2"]
    assert ids(r, "SCAN", "fleet", "MATCH", "t*", *speedy, "IDS") == ["t1", "t2"]
    assert srv.json("SCAN", "fleet", *speedy, "COUNT")["count"] == 2
    assert ids(r, "NEARBY", "fleet", *speedy, "IDS", "POINT", 33, -115, 5000) == ["t1", "t2"]
    assert ids(r, "INTERSECTS", "fleet", *speedy, "IDS", *BOX) == ["t1", "t2"]
    assert ids(r, "SEARCH", "fleet", "WHEREEVAL", "return ID == 's1'", 0, "IDS") == ["s1"]
    doc = srv.json("SCAN", "fleet", *speedy, "LIMIT", 1, "IDS")
    assert doc["ids"] == ["t1"] and doc["cursor"] > 0


def test_whereevalsha_uses_the_script_cache_shared_with_eval(r):
    fleet(r)
    script = "return ID == ARGV[1]"
    sha = r.execute_command("SCRIPT", "LOAD", script).decode()
    assert ids(r, "SCAN", "fleet", "WHEREEVALSHA", sha, 1, "t1", "IDS") == ["t1"]
    assert ids(r, "SCAN", "fleet", "WHEREEVALSHA", sha.upper(), 1, "t2", "IDS") == ["t2"]
    r.execute_command("SCRIPT", "FLUSH")
    assert err(r, "SCAN", "fleet", "WHEREEVALSHA", sha, 1, "t1", "IDS") == "sha not found"
    other = "return ID == 't3'"
    assert ids(r, "SCAN", "fleet", "WHEREEVAL", other, 0, "IDS") == ["t3"]
    assert r.execute_command("SCRIPT", "EXISTS", hashlib.sha1(other.encode()).hexdigest()) == [1]


@pytest.mark.parametrize("args, message", [
    (["WHEREEVAL", "return (", 0], "unexpected symbol near '<eof>'"),           # does not compile
    (["WHEREEVAL", "return FIELDS.speed < nil", 0], "attempt to compare"),     # fails at run time
    (["WHEREEVAL", "error('no way')", 0], "no way"),
    (["WHEREEVAL", "return tostring", 0], "script returned value of type function"),
    (["WHEREEVAL", "x = 1 return true", 0], "attempt to create global variable 'x'"),
    (["WHEREEVAL", "", 0], "wrong number of arguments"),
    (["WHEREEVAL", "return true", ""], "wrong number of arguments"),
    (["WHEREEVAL", "return true", -1], "invalid argument '-1'"),
    (["WHEREEVAL", "return true", 3, "only-one"], "wrong number of arguments"),  # + IDS: 2
    (["WHEREEVAL", "return true", 1, ""], "wrong number of arguments"),
])
def test_bad_scripts_and_arguments_answer_an_error_and_the_server_keeps_serving(r, args, message):
    fleet(r)
    assert message in err(r, "SCAN", "fleet", *args, "IDS")
    assert r.ping()
    assert ids(r, "SCAN", "fleet", "WHEREEVAL", "return true", 0, "IDS") == ["f1", "s1", "t1", "t2", "t3"]


@pytest.mark.parametrize("script", [
    "return os.execute('touch {marker}') ~= nil",
    "return io.open('{marker}', 'w') ~= nil",
    "return require('os').execute('touch {marker}')",
    "return loadstring('return 1')() == 1",
    "return python.eval('open(\\'{marker}\\', \\'w\\')')",
    "return debug.getinfo(1) ~= nil",
    "return string.dump(tostring) ~= nil",
])
def test_the_sandbox_holds(r, tmp_path, script):
    """Every way out is nil inside the filter: calling it fails the search, indexing it is no
    match (Tile38's rule for indexing a non-table); either way nothing happens on the host."""
    fleet(r)
    marker = tmp_path / "escaped"
    try:
        assert ids(r, "SCAN", "fleet", "WHEREEVAL", script.format(marker=marker), 0, "IDS") == []
    except redis.ResponseError as exc:
        assert "attempt to call" in str(exc)
    assert not marker.exists()
    assert r.ping()


def test_tile38_call_in_a_filter_reads_but_cannot_write(r, srv):
    fleet(r)
    reads = "return tile38.call('GET', 'fleet', ID) ~= false and ID == 't1'"
    assert ids(r, "SCAN", "fleet", "WHEREEVAL", reads, 0, "IDS") == ["t1"]
    writes = "tile38.call('DEL', 'fleet', ID) return true"
    assert "read only" in err(r, "SCAN", "fleet", "WHEREEVAL", writes, 0, "IDS")
    assert srv.json("SCAN", "fleet", "COUNT")["count"] == 5
    nested = "return tile38.call('SCAN', 'fleet', 'WHEREEVAL', 'return true', '0', 'COUNT')"
    assert "not allowed inside a script" in err(r, "SCAN", "fleet", "WHEREEVAL", nested, 0, "IDS")
    assert "not allowed inside a script" in err(
        r, "EVAL", "return tile38.call('SCAN', 'fleet', 'WHEREEVAL', 'return true', '0', 'COUNT')", 0)


def test_a_filter_that_loops_forever_is_stopped_and_the_server_keeps_serving(r, srv):
    fleet(r)
    assert r.execute_command("CONFIG", "SET", "script-time-limit", "1")
    try:
        message = err(r, "SCAN", "fleet", "WHEREEVAL", "while true do end", 0, "IDS")
        assert message == "script ran longer than its time limit (1 s)"
        # a deadline from TIMEOUT ends it too, with Tile38's reply
        assert err(r, "TIMEOUT", "0.2", "SCAN", "fleet", "WHEREEVAL", "while true do end", 0, "IDS") \
            == "timeout"
        assert r.ping()
        assert srv.json("SCAN", "fleet", "WHEREEVAL", "return ID == 't1'", 0, "IDS")["ids"] == ["t1"]
    finally:
        r.execute_command("CONFIG", "SET", "script-time-limit", "5")


def test_an_object_with_many_fields(r):
    """More fields than go to Lua as arguments: FIELDS is then passed as one table."""
    args = [x for i in range(1, 801) for x in ("FIELD", f"f{i}", i)]
    r.execute_command("SET", "wide", "w1", *args, "POINT", 1, 2)
    script = "return FIELDS.f800 == 800 and FIELDS.f1 == 1 and FIELDS.z == 0"
    assert ids(r, "SCAN", "wide", "WHEREEVAL", script, 0, "IDS") == ["w1"]


def test_a_live_fence_with_whereeval(srv, r):
    """Tile38 parses a fence's options like a search's: the filter runs for each write."""
    stream = EventStream(srv, "WITHIN", "fleet", "WHEREEVAL", "return FIELDS.speed > tonumber(ARGV[1])",
                         1, 20, "FENCE", "DETECT", "enter", "BOUNDS", 33, -112, 34, -111)
    try:
        assert stream.read_line() == b"+OK"
        r.execute_command("SET", "fleet", "slow", "FIELD", "speed", 5, "POINT", 33.5, -111.5)
        r.execute_command("SET", "fleet", "fast", "FIELD", "speed", 50, "POINT", 33.5, -111.5)
        assert matches(stream.event(), {"detect": "enter", "id": "fast"})  # not `slow` before it
    finally:
        stream.close()
