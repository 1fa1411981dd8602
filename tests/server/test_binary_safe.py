"""Keys, ids, field names, STRING values and MATCH patterns are binary-safe end to end: two
keys that differ only in bytes that are not UTF-8 (`\\xff`, `\\xfe`) stay two keys, in RESP
replies, after a restart from the AOF, on a follower and after AOFSHRINK. JSON replies stay
valid JSON (those bytes read as U+FFFD there)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import GeoServer, wait_until
from wire import Wire

FF, FE = b"\xff", b"\xfe"

# (key, id, field name, field value, STRING value): pairs that "replace" decoding merged
OBJECTS = [
    (b"k" + FF, b"i" + FF, b"f" + FF, b"v" + FF, b"s" + FF),
    (b"k" + FE, b"i" + FE, b"f" + FE, b"v" + FE, b"s" + FE),
    (b"k" + FE, b"i" + FF, b"f" + FE, b"v" + FF, b"s\x00\r\n" + FE),  # NUL and CRLF too
    # a truncated sequence, an encoded surrogate, a lone continuation byte, overlong forms
    (b"k\xc3", b"\xed\xa0\x80", b"\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80"),
    ("kü".encode(), "ü".encode(), b"f", b"v", "ü€😀".encode()),  # valid UTF-8 is untouched
]


def seed(server: GeoServer) -> None:
    c = server.client()
    for key, oid, fname, fvalue, value in OBJECTS:
        assert c.execute_command("SET", key, oid, "FIELD", fname, fvalue, "STRING", value) is True
    assert c.execute_command("SET", b"pts" + FF, b"a" + FF, "POINT", 33, -115) is True
    assert c.execute_command("SET", b"pts" + FF, b"a" + FE, "POINT", 33.5, -115.5) is True


def snapshot(server: GeoServer) -> dict[bytes, list[Any]]:
    """Every object of every key as raw bytes (redis-py without decoding)."""
    c = server.client()
    out = {}
    for key in c.execute_command("KEYS", "*"):
        cursor, rows = c.execute_command("SCAN", key, "LIMIT", 100000)
        assert int(cursor) == 0
        out[key] = rows
    return out


EXPECTED_KEYS = sorted({o[0] for o in OBJECTS} | {b"pts" + FF})


def check_exact(server: GeoServer, *extra_keys: bytes) -> None:
    c = server.client()
    assert sorted(c.execute_command("KEYS", "*")) == sorted([*EXPECTED_KEYS, *extra_keys])
    for key, oid, fname, fvalue, value in OBJECTS:
        got = c.execute_command("GET", key, oid, "WITHFIELDS")
        assert got == [value, [fname, fvalue]], (key, oid)
        assert c.execute_command("FGET", key, oid, fname) == fvalue
    ids = c.execute_command("SCAN", b"pts" + FF, "IDS")[1]
    assert sorted(ids) == [b"a" + FE, b"a" + FF]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GeoServer, GeoServer]]:
    base = Path(tmp_path_factory.mktemp("binary"))
    leader = GeoServer(base / "leader").start()
    seed(leader)
    follower = GeoServer(base / "follower", args=["--follow", f"127.0.0.1:{leader.port}"]).start()
    yield leader, follower
    follower.kill9()
    leader.kill9()


def caught_up(leader: GeoServer, follower: GeoServer) -> bool:
    fol = follower.stats()
    return bool(fol.get("caught_up")) and fol["aof_size"] == leader.stats()["aof_size"]


def test_bytes_that_are_not_utf8_stay_distinct(pair: tuple[GeoServer, GeoServer]) -> None:
    leader, _ = pair
    check_exact(leader)
    c = leader.client()
    assert c.execute_command("TYPE", b"k" + FF) == b"hash"
    assert c.execute_command("TYPE", b"k" + b"\xfd") == b"none"
    assert c.execute_command("EXISTS", b"k" + FE, b"i" + FE) == 1
    assert c.execute_command("EXISTS", b"k" + FE, b"i\xfd") == 0
    assert c.execute_command("SCAN", b"k" + FE, "MATCH", b"i" + FF, "IDS")[1] == [b"i" + FF]
    with Wire(leader.port) as w:  # (redis-py's SCAN callback wants a cursor and a list)
        assert w.call("SCAN", b"k" + FE, "MATCH", b"*" + FE, "COUNT") == 1
    assert c.execute_command("KEYS", b"k" + FF) == [b"k" + FF]
    assert c.execute_command("KEYS", b"k[" + FE + FF + b"]") == sorted([b"k" + FE, b"k" + FF])
    within = c.execute_command("WITHIN", b"pts" + FF, "IDS", "BOUNDS", 32, -116, 34, -114)
    assert within[1] == [b"a" + FE, b"a" + FF]
    assert c.execute_command("NEARBY", b"pts" + FF, "IDS", "POINT", 33, -115)[1] == [b"a" + FF, b"a" + FE]


def test_writes_touch_only_their_own_bytes(pair: tuple[GeoServer, GeoServer]) -> None:
    leader, follower = pair
    c = leader.client()
    for oid in (b"d" + FF, b"d" + FE, b"e" + FF, b"e" + FE):
        assert c.execute_command("SET", b"w" + FF, oid, "STRING", oid) is True
    assert c.execute_command("DEL", b"w" + FF, b"d" + FF) == 1
    assert c.execute_command("DEL", b"w" + FF, b"d" + FF) == 0
    assert c.execute_command("PDEL", b"w" + FF, b"*" + FE) == 2
    assert c.execute_command("SCAN", b"w" + FF, "IDS")[1] == [b"e" + FF]
    assert c.execute_command("RENAME", b"w" + FF, b"w" + FE) is True
    assert c.execute_command("GET", b"w" + FE, b"e" + FF) == b"e" + FF
    assert c.execute_command("GET", b"w" + FF, b"e" + FF) is None
    assert c.execute_command("FSET", b"w" + FE, b"e" + FF, b"n" + FF, 7) == 1
    assert c.execute_command("FSET", b"w" + FE, b"e" + FF, b"n" + FE, 8) == 1
    got = c.execute_command("GET", b"w" + FE, b"e" + FF, "WITHFIELDS")
    assert got[1] == [b"n" + FE, b"8", b"n" + FF, b"7"]
    wait_until(lambda: caught_up(leader, follower), 15, message="follower caught up")
    assert snapshot(follower) == snapshot(leader)
    assert c.execute_command("DROP", b"w" + FE) == 1


def test_json_replies_are_valid_json(pair: tuple[GeoServer, GeoServer]) -> None:
    leader, _ = pair
    with Wire(leader.port) as w:
        w.json("PING")
        for args in (["KEYS", "*"], ["SCAN", b"k" + FE], ["GET", b"k" + FF, b"i" + FF, "WITHFIELDS"],
                     ["FGET", b"k" + FF, b"i" + FF, b"f" + FF], ["SCAN", b"k\xc3", "MATCH", b"\xed*"],
                     ["WITHIN", b"pts" + FF, "BOUNDS", 32, -116, 34, -114],
                     ["SET", b"k" + FF, b"x", "POINT", b"nan" + FF, 1],  # an error quoting the bytes
                     ["ECHO", b"e" + FF]):
            frame = w.raw(*args)
            assert frame.startswith(b"$"), frame
            body = frame[frame.index(b"\r\n") + 2 : -2]
            doc = orjson.loads(body)  # strict UTF-8: raises on any invalid byte
            assert "\ufffd" in body.decode(), (args, body)
            assert doc["ok"] is (args[0] != "SET"), doc
        doc = w.json("STATS", b"k" + FF, b"nope" + FE)
        assert doc["stats"][0]["num_objects"] == 1 and doc["stats"][1] is None
        doc = w.json("GET", b"k" + FE, b"i" + FE, "WITHFIELDS")
        assert doc["object"] == "s\ufffd" and doc["fields"] == {"f\ufffd": "v\ufffd"}
    with urllib.request.urlopen(f"http://127.0.0.1:{leader.port}/KEYS+*", timeout=10) as r:
        keys = orjson.loads(r.read())["keys"]
    assert "k\ufffd" in keys
    with urllib.request.urlopen(f"http://127.0.0.1:{leader.port}/metrics", timeout=10) as r:
        assert 'col="k\ufffd"' in r.read().decode()


def test_error_texts_quote_invalid_bytes_printably(pair: tuple[GeoServer, GeoServer]) -> None:
    leader, _ = pair
    with Wire(leader.port) as w:
        frame = w.raw("SET", b"k" + FF, b"x", "POINT", b"1" + FF, 1)
    assert frame == "-ERR invalid argument '1\ufffd'\r\n".encode()


def test_follower_keeps_exact_bytes(pair: tuple[GeoServer, GeoServer]) -> None:
    leader, follower = pair
    wait_until(lambda: caught_up(leader, follower), 15, message="follower caught up")
    check_exact(follower)
    assert snapshot(follower) == snapshot(leader)
    assert (leader.dir / "appendonly.aof").read_bytes() == (follower.dir / "appendonly.aof").read_bytes()


def test_restart_and_aofshrink_keep_exact_bytes(make_server: Callable[..., GeoServer]) -> None:
    leader = make_server("leader")
    seed(leader)
    c = leader.client()
    assert c.execute_command("SET", b"tmp" + FF, b"x", "STRING", b"gone") is True
    assert c.execute_command("DEL", b"tmp" + FF, b"x") == 1
    assert c.execute_command("SET", b"ttl" + FF, b"t" + FE, "EX", 3600, "STRING", FF) is True
    follower = make_server("follower", args=["--follow", f"127.0.0.1:{leader.port}"])
    wait_until(lambda: caught_up(leader, follower), 15, message="follower caught up")
    before = snapshot(leader)
    aof = leader.aof_path.read_bytes()
    assert b"$2\r\nk\xff\r\n" in aof and b"$2\r\nk\xfe\r\n" in aof
    leader.stop()
    leader.start()
    check_exact(leader, b"ttl" + FF)
    assert snapshot(leader) == before

    shrink_before = leader.stats()["last_shrink_time"]
    assert c.execute_command("AOFSHRINK") in (True, b"OK")
    wait_until(lambda: leader.stats()["last_shrink_time"] != shrink_before, 30, message="shrink done")
    assert leader.stats()["last_shrink_result"] == "ok"
    shrunk = leader.aof_path.read_bytes()
    assert len(shrunk) < len(aof) and b"tmp\xff" not in shrunk and b"$2\r\nt\xfe\r\n" in shrunk
    assert snapshot(leader) == before
    leader.stop()
    leader.start()
    check_exact(leader, b"ttl" + FF)
    assert snapshot(leader) == before
    assert 3500 < c.execute_command("TTL", b"ttl" + FF, b"t" + FE) <= 3600
    # the follower resyncs from the shrunk file and ends with the same bytes
    wait_until(lambda: caught_up(leader, follower), 30, message="follower resynced")
    assert snapshot(follower) == before
    assert follower.aof_path.read_bytes() == leader.aof_path.read_bytes()


# ---- glob patterns: bounded cache, bounded length ----------------------------------------------


def test_pattern_length_is_capped(pair: tuple[GeoServer, GeoServer]) -> None:
    leader, _ = pair
    with Wire(leader.port) as w:
        ok = b"k" + b"?" * 1022 + b"*"
        assert isinstance(w.call("KEYS", ok), list)
        long = ok + b"*"
        for args in (["KEYS", long], ["PDEL", b"k" + FF, long], ["SCAN", b"k" + FF, "MATCH", long],
                     ["WITHIN", b"pts" + FF, "MATCH", long, "BOUNDS", 0, 0, 1, 1],
                     ["CONFIG", "GET", long]):
            assert w.raw(*args) == b"-ERR invalid pattern: too long (limit 1024 bytes)\r\n", args
        assert w.call("CONFIG", "SET", "max-pattern-length", 4) == "OK"
        try:
            assert sorted(leader.client().execute_command("KEYS", b"k" + FF + b"*")) == [b"k" + FF]
            assert str(w.call("KEYS", b"kkkk*")) == "ERR invalid pattern: too long (limit 4 bytes)"
            assert w.json("KEYS", b"kkkk*")["err"] == "invalid pattern: too long (limit 4 bytes)"
        finally:
            with Wire(leader.port) as admin:
                assert admin.call("CONFIG", "SET", "max-pattern-length", 1024) == "OK"
    check_exact(leader)


def test_compiled_patterns_are_an_lru() -> None:
    from geoserver.store.glob import CACHE_SIZE, matcher

    matcher.cache_clear()
    for i in range(CACHE_SIZE * 4):
        assert matcher(f"id{i}*")(f"id{i}x")
    info = matcher.cache_info()
    assert info.maxsize == CACHE_SIZE and info.currsize == CACHE_SIZE
    assert matcher("a\udcff*")("a\udcff\udcfe") and not matcher("a\udcff*")("a\udcfe")


def test_expiry_of_a_binary_key_is_logged_with_its_exact_bytes(make_server: Callable[..., GeoServer]) -> None:
    """The expiry loop logs a DEL for each expired object: with a key that is not UTF-8 it used
    to fail (`str.encode`), so followers kept the object and a restart brought it back."""
    leader = make_server("xl")
    follower = make_server("xf", args=["--follow", f"127.0.0.1:{leader.port}"])
    c = leader.client()
    assert c.execute_command("SET", b"tmp" + FF, b"x" + FE, "EX", 1, "POINT", 1, 2) is True
    assert c.execute_command("SET", b"tmp" + FF, b"keep", "POINT", 3, 4) is True
    record = b"*3\r\n$3\r\ndel\r\n$4\r\ntmp\xff\r\n$2\r\nx\xfe\r\n"
    wait_until(lambda: record in leader.aof_path.read_bytes(), 10, message="the expiry's DEL in the AOF")
    wait_until(lambda: follower.client().execute_command("SCAN", b"tmp" + FF, "IDS")[1] == [b"keep"],
               20, message="the DEL on the follower")
    leader.stop()
    leader.start()
    assert leader.client().execute_command("SCAN", b"tmp" + FF, "IDS")[1] == [b"keep"]
