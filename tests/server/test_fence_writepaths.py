"""Writes that do not arrive as SET/DEL reach fences as the SET/DEL they are, as in Tile38:
JSET/JDEL on a spatial object fire a `set` event (Tile38 runs them as `SET key id OBJECT json`),
and each write a Lua script makes through tile38.call fires as its own command. Black-box, on a
real geoserver, through a live fence and through SETCHAN + SUBSCRIBE: each write path's events
must equal the plain command's, except `time` and `group` (a fresh id on every enter)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import count
from pathlib import Path
from typing import Any

import orjson
import pytest
from fencewire import EventStream
from helpers import GeoServer, wait_until

FENCE = ["WITHIN", "{k}", "FENCE", "BOUNDS", "33", "-112", "34", "-111"]
POINT_IN, POINT_OUT = ["POINT", "33.5", "-111.5"], ["POINT", "40", "-111.5"]
_keys = count()


def feature(lat: float, **props: Any) -> str:
    return orjson.dumps({"type": "Feature", "geometry": {"type": "Point", "coordinates": [-111.5, lat]},
                         "properties": props}).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    srv = GeoServer(Path(tmp_path_factory.mktemp("writepaths")) / "s").start()
    yield srv
    srv.kill9()


class Watch:
    """One event stream on a fresh key: a live fence, or a channel and a JSON subscriber. A
    `sentinel` object inside the fence ends every batch: an FSET on it is one `fset` event, so
    reading up to it proves which events a batch of writes fired, and no more."""

    def __init__(self, srv: GeoServer, kind: str) -> None:
        self.srv, self.k, self.c = srv, f"wp{next(_keys)}", srv.client()
        fence = [a.replace("{k}", self.k) for a in FENCE]
        if kind == "live":
            self.stream = EventStream(srv, *fence, json=True)
            assert orjson.loads(self.stream.bulk())["live"] is True
        else:
            self.c.execute_command("SETCHAN", f"ch-{self.k}", *fence)
            self.stream = EventStream(srv, "SUBSCRIBE", f"ch-{self.k}", json=True)
            assert orjson.loads(self.stream.bulk())["command"] == "subscribe"
        self.marks = count(1)  # FSET to 0 of an absent field changes nothing
        self.run([["SET", self.k, "sentinel", *POINT_IN]])

    def run(self, writes: list[list[str]]) -> list[dict[str, Any]]:
        """Send the writes, then the sentinel FSET; the events before the sentinel's."""
        for argv in writes:
            self.c.execute_command(*[a.replace("{k}", self.k) for a in argv])
        self.c.execute_command("FSET", self.k, "sentinel", "mark", next(self.marks))
        out = []
        while (ev := orjson.loads(self.stream.bulk()))["id"] != "sentinel" or ev["command"] != "fset":
            out.append(ev)
        return out

    def same_as_plain(self, setup: list[list[str]], path: list[list[str]],
                      plain: list[list[str]]) -> list[dict[str, Any]]:
        """From the same state, `path` fires exactly the events `plain` does."""
        self.run(setup)
        via_path = self.run(path)
        self.run(setup)
        via_plain = self.run(plain)
        assert strip(via_path) == strip(via_plain)
        assert [("group" in e) for e in via_path] == [("group" in e) for e in via_plain]
        return via_path


def strip(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in e.items() if k not in ("time", "group")} for e in events]


def detects(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["command"], e.get("detect")) for e in events]


@pytest.fixture(params=["live", "channel"])
def watch(request: pytest.FixtureRequest, server: GeoServer) -> Iterator[Watch]:
    w = Watch(server, request.param)
    yield w
    w.stream.close()


def fresh(*obj: str) -> list[list[str]]:
    return [["DEL", "{k}", "o"], ["SET", "{k}", "o", *obj]]


def test_jset_moving_in_and_out_is_a_set(watch: Watch) -> None:
    got = watch.same_as_plain(fresh(*POINT_OUT), [["JSET", "{k}", "o", "coordinates.1", "33.6"]],
                              [["SET", "{k}", "o", "OBJECT", '{"type":"Point","coordinates":[-111.5,33.6]}']])
    assert detects(got) == [("set", "enter"), ("set", "inside")]
    assert got[0]["object"] == {"type": "Point", "coordinates": [-111.5, 33.6]}
    got = watch.same_as_plain(fresh(*POINT_IN), [["JSET", "{k}", "o", "coordinates.1", "40"]],
                              [["SET", "{k}", "o", *POINT_OUT]])
    assert detects(got) == [("set", "exit"), ("set", "outside")]


def test_jset_and_jdel_of_a_property_are_a_set_inside(watch: Watch) -> None:
    got = watch.same_as_plain(fresh("OBJECT", feature(33.5, speed=10)),
                              [["JSET", "{k}", "o", "properties.speed", "50"]],
                              [["SET", "{k}", "o", "OBJECT", feature(33.5, speed=50)]])
    assert detects(got) == [("set", "inside")]
    assert got[0]["object"]["properties"] == {"speed": 50}
    got = watch.same_as_plain(fresh("OBJECT", feature(33.5, speed=10, a=1)),
                              [["JDEL", "{k}", "o", "properties.a"]],
                              [["SET", "{k}", "o", "OBJECT", feature(33.5, speed=10)]])
    assert detects(got) == [("set", "inside")]


def test_json_writes_that_change_nothing_spatial_fire_nothing(watch: Watch) -> None:
    """A string value is not spatial (Tile38 fences skip it); a JDEL of a missing path and a
    refused JSET write nothing."""
    assert watch.run([["SET", "{k}", "s", "STRING", '{"a":1}'], ["JSET", "{k}", "s", "a", "2"],
                      ["JDEL", "{k}", "s", "a"]]) == []
    watch.run(fresh(*POINT_IN))
    assert watch.c.execute_command("JDEL", watch.k, "o", "properties.nothing") == 0
    with pytest.raises(Exception, match="missing type"):
        watch.c.execute_command("JDEL", watch.k, "o", "type")
    assert watch.run([]) == []


def test_eval_writes_fire_as_their_own_commands(watch: Watch) -> None:
    move = "return tile38.call('SET', KEYS[1], 'o', 'POINT', ARGV[1], ARGV[2])"
    got = watch.same_as_plain(fresh(*POINT_OUT), [["EVAL", move, "1", "{k}", "33.6", "-111.5"]],
                              [["SET", "{k}", "o", "POINT", "33.6", "-111.5"]])
    assert detects(got) == [("set", "enter"), ("set", "inside")]
    delete = "return tile38.call('DEL', KEYS[1], 'o')"
    got = watch.same_as_plain(fresh(*POINT_IN), [["EVAL", delete, "1", "{k}"]], [["DEL", "{k}", "o"]])
    assert detects(got) == [("del", None)]
    several = ("tile38.call('SET', KEYS[1], 'o', 'POINT', 33.6, -111.5); "
               "tile38.call('FSET', KEYS[1], 'o', 'speed', 5); "
               "tile38.call('JSET', KEYS[1], 'o', 'coordinates.1', 40); return 1")
    got = watch.same_as_plain(fresh(*POINT_OUT), [["EVAL", several, "1", "{k}"]],
                              [["SET", "{k}", "o", "POINT", "33.6", "-111.5"],
                               ["FSET", "{k}", "o", "speed", "5"],
                               ["SET", "{k}", "o", "OBJECT", '{"type":"Point","coordinates":[-111.5,40]}']])
    assert [e["command"] for e in got] == ["set", "set", "fset", "set", "set"]


def test_evalsha_and_evalna_writes_fire(watch: Watch) -> None:
    script = "return tile38.call('SET', KEYS[1], 'o', 'POINT', 33.6, -111.5)"
    sha = watch.c.execute_command("SCRIPT", "LOAD", script).decode()
    plain = [["SET", "{k}", "o", "POINT", "33.6", "-111.5"]]
    watch.same_as_plain(fresh(*POINT_OUT), [["EVALSHA", sha, "1", "{k}"]], plain)
    watch.same_as_plain(fresh(*POINT_OUT), [["EVALNASHA", sha, "1", "{k}"]], plain)


def test_evalro_reads_fire_nothing(watch: Watch) -> None:
    watch.run(fresh(*POINT_IN))
    reads = ("tile38.call('GET', KEYS[1], 'o'); tile38.call('JGET', KEYS[1], 'o'); "
             "tile38.call('SCAN', KEYS[1]); return tile38.call('EXISTS', KEYS[1], 'o')")
    assert watch.c.execute_command("EVALRO", reads, "1", watch.k) == 1
    with pytest.raises(Exception, match="read only"):
        watch.c.execute_command("EVALRO", "return tile38.call('SET', KEYS[1], 'o', 'POINT', 40, -111)",
                                "1", watch.k)
    caught = "return tile38.pcall('DEL', KEYS[1], 'o')['err']"  # refused inside pcall: nothing
    assert watch.c.execute_command("EVALRO", caught, "1", watch.k) == b"read only"
    assert watch.run([]) == []
    assert watch.c.execute_command("EXISTS", watch.k, "o") == 1


def test_a_script_failing_after_a_write_still_reports_it(watch: Watch) -> None:
    """Scripts are not transactions (Tile38): the SET before the error stays, and fires; the
    error reply leaves the server serving, and a refused in-script call fires nothing."""
    broken = "tile38.call('SET', KEYS[1], 'o', 'POINT', 33.6, -111.5); error('boom')"
    watch.run(fresh(*POINT_OUT))
    with pytest.raises(Exception, match="boom"):
        watch.c.execute_command("EVAL", broken, "1", watch.k)
    assert detects(watch.run([])) == [("set", "enter"), ("set", "inside")]
    with pytest.raises(Exception, match="invalid argument"):
        watch.c.execute_command("EVAL", "return tile38.call('SET', KEYS[1], 'o', 'POINT', 'x', 1)",
                                "1", watch.k)
    with pytest.raises(Exception, match="not supported in scripts"):
        watch.c.execute_command("EVAL", "return tile38.call('SETCHAN', 'x', 'NEARBY', KEYS[1])",
                                "1", watch.k)
    assert watch.run([]) == []
    assert watch.c.execute_command("PING") in (b"PONG", True)


def test_script_and_json_writes_fire_a_followers_channel(make_server) -> None:
    """Each script write reaches the follower as its own record, and a JSET as the JSET it was;
    the follower's channel reports them as the leader's does."""
    leader, follower = make_server("leader"), make_server("follower")
    assert follower.json("FOLLOW", leader.host, leader.port)["ok"]
    c = leader.client()
    c.execute_command("SETCHAN", "fch", *[a.replace("{k}", "fleet") for a in FENCE])
    wait_until(lambda: follower.json("CHANS", "*").get("chans"), message="channel on the follower")
    wait_until(lambda: follower.stats().get("caught_up"), message="follower caught up")
    streams = [EventStream(s, "SUBSCRIBE", "fch", json=True) for s in (leader, follower)]
    try:
        for s in streams:
            assert orjson.loads(s.bulk())["command"] == "subscribe"
        c.execute_command("EVAL", "tile38.call('SET', 'fleet', 'o', 'POINT', 33.6, -111.5); "
                          "return tile38.call('DEL', 'fleet', 'o')", "0")
        c.execute_command("SET", "fleet", "p", "OBJECT", feature(33.5, speed=1))
        c.execute_command("JSET", "fleet", "p", "properties.speed", "2")
        got = [strip([orjson.loads(s.bulk()) for _ in range(6)]) for s in streams]
        assert got[0] == got[1]
        assert [(e["command"], e.get("detect"), e["id"]) for e in got[1]] == [
            ("set", "enter", "o"), ("set", "inside", "o"), ("del", None, "o"),
            ("set", "enter", "p"), ("set", "inside", "p"), ("set", "inside", "p")]
    finally:
        for s in streams:
            s.close()
