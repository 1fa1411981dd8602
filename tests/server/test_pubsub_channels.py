"""Channels and pub/sub, black-box: SETCHAN/CHANS/DELCHAN/PDELCHAN, SUBSCRIBE, PSUBSCRIBE,
PUBLISH with redis-py and pyle38, Tile38's message shapes in RESP and JSON, the cases of
tidwall/tile38 tests/fence_test.go that go through channels, and channels on a follower."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
from fencewire import EventStream
from helpers import GeoServer, wait_until
from pyle38 import Tile38


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoServer]:
    srv = GeoServer(Path(tmp_path_factory.mktemp("pubsub")) / "s").start()
    yield srv
    srv.kill9()


def receive(ps: redis.client.PubSub) -> dict:
    """The next message (confirmations skipped)."""
    while True:
        msg = ps.get_message(timeout=10)
        assert msg is not None, "no message"
        if msg["type"] in ("message", "pmessage"):
            return msg


def test_publish_subscribe_shapes(server: GeoServer) -> None:
    c = server.client(decode_responses=True)
    ps = c.pubsub()
    ps.subscribe("news")
    assert ps.get_message(timeout=5) == {"type": "subscribe", "pattern": None, "channel": "news", "data": 1}
    ps.psubscribe("n*")
    assert ps.get_message(timeout=5)["data"] == 2
    assert c.publish("news", "hello") == 2
    assert receive(ps) == {"type": "message", "pattern": None, "channel": "news", "data": "hello"}
    assert receive(ps) == {"type": "pmessage", "pattern": "n*", "channel": "news", "data": "hello"}
    assert c.publish("other", "x") == 0
    ps.unsubscribe("news")
    ps.punsubscribe("n*")
    ps.close()
    reply = server.json("PUBLISH", "news", "x")
    assert (reply["ok"], reply["published"]) == (True, 0)


def test_subscriber_mode_rules(server: GeoServer) -> None:
    """After SUBSCRIBE only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT run (Tile38)."""
    stream = EventStream(server, "SUBSCRIBE", "a")
    try:
        assert stream.read_line() == b"*3"
        stream.sock.sendall(b"GET k id\r\nPING\r\n")
        buf = b""
        while b"PONG" not in buf or b"context" not in buf:
            buf += stream.sock.recv(4096)
        assert b"-ERR only (P)SUBSCRIBE / (P)UNSUBSCRIBE / PING / QUIT allowed in this context\r\n" in buf
        assert b"*2\r\n$4\r\nPONG\r\n$0\r\n\r\n" in buf
    finally:
        stream.close()


def test_json_subscriber_gets_documents(server: GeoServer) -> None:
    """OUTPUT json subscribers: confirmations and messages are JSON documents; a non-JSON
    message arrives as a JSON string (`"DONE"`), as in Tile38's fence_eecio_test."""
    stream = EventStream(server, "SUBSCRIBE", "j", json=True)
    try:
        confirm = orjson.loads(stream.bulk())
        assert {k: confirm[k] for k in ("ok", "command", "channel", "num")} == {
            "ok": True, "command": "subscribe", "channel": "j", "num": 1}
        c = server.client()
        c.publish("j", "DONE")
        c.publish("j", '{"a":1}')
        assert stream.bulk() == b'"DONE"'
        assert stream.bulk() == b'{"a":1}'
    finally:
        stream.close()


def test_channel_message_order(server: GeoServer) -> None:
    """tests/fence_test.go fence_channel_message_order_test: one SET leaving two fences and
    entering two others gives exit, outside, enter, inside, each by channel name."""
    c = server.client(decode_responses=True)
    ps = c.pubsub()
    ps.psubscribe("*")
    ps.get_message(timeout=5)
    c.execute_command("SET", "points", "point", "POINT", "33.412529053733444", "-111.93368911743164")
    polys = {
        "A": [[-111.95205688476562, 33.400491820565236], [-111.92630767822266, 33.422272258866045]],
        "B": [[-111.93952560424803, 33.403501285221594], [-111.92630767822266, 33.41997983836345]],
        "C": [[-111.9255781173706, 33.40342963251261], [-111.91201686859131, 33.41994401881284]],
        "D": [[-111.92562103271484, 33.40063513076968], [-111.90021514892578, 33.42212898435788]],
    }
    for name, ((x0, y0), (x1, y1)) in polys.items():
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        c.execute_command("SETCHAN", name, "WITHIN", "points", "FENCE", "OBJECT",
                          orjson.dumps({"type": "Polygon", "coordinates": [ring]}).decode())
    c.execute_command("SET", "points", "point", "POINT", "33.412529053733444", "-111.91909790039062")
    got = []
    for _ in range(8):
        doc = orjson.loads(receive(ps)["data"])
        got.append(f"{doc['detect']}:{doc['hook']}")
    assert got == ["exit:A", "exit:B", "outside:A", "outside:B", "enter:C", "enter:D", "inside:C", "inside:D"]
    ps.close()
    assert c.execute_command("PDELCHAN", "*") == 4


def test_detect_eecio(server: GeoServer) -> None:
    """tests/fence_test.go fence_eecio_test (Tile38 issue 578), JSON subscribers."""
    c = server.client()
    for name, detect in (("test-eec", "enter,exit,cross"), ("test-eecio", "enter,exit,cross,inside,outside")):
        assert server.json("SETCHAN", name, "NEARBY", "fleet", "FENCE", "DETECT", detect,
                           "POINT", "10.000", "10.000", "10000")["ok"]
    eec = EventStream(server, "SUBSCRIBE", "test-eec", json=True)
    eecio = EventStream(server, "SUBSCRIBE", "test-eecio", json=True)
    try:
        eec.bulk(), eecio.bulk()
        for lat, lon in (("10.0", "10.0"), ("0.0", "0.0"), ("20.0", "20.0")):
            c.execute_command("SET", "fleet", "vehicle_1", "POINT", lat, lon)
        c.publish("test-eecio", "DONE")
        c.publish("test-eec", "DONE")

        def detects(stream: EventStream) -> list[str]:
            out = []
            while (raw := stream.bulk()) != b'"DONE"':
                out.append(orjson.loads(raw)["detect"])
            return out

        assert detects(eec) == ["enter", "exit", "cross"]
        assert detects(eecio) == ["enter", "inside", "exit", "outside", "cross", "outside"]
    finally:
        eec.close()
        eecio.close()
        c.execute_command("DELCHAN", "test-eec")
        c.execute_command("DELCHAN", "test-eecio")


def test_channel_meta_chans_and_events(server: GeoServer) -> None:
    """tests/fence_test.go fence_channel_meta_test, plus META in the events."""
    c = server.client(decode_responses=True)
    assert c.execute_command("SETCHAN", "carbon", "NEARBY", "x", "MATCH", "carbon*", "FENCE", "NODWELL",
                             "points", "ROAM", "x", "*", "200000") == 1
    chans = server.json("CHANS", "*")
    assert chans["chans"][0]["name"] == "carbon" and chans["chans"][0]["ttl"] == -1
    assert c.execute_command("SETCHAN", "m", "META", "b", "2", "META", "a", "1", "WITHIN", "mk", "FENCE",
                             "DETECT", "inside", "BOUNDS", 0, 0, 1, 1) == 1
    # the same definition again changes nothing: 0, and no AOF record
    assert c.execute_command("SETCHAN", "m", "META", "b", "2", "META", "a", "1", "WITHIN", "mk", "FENCE",
                             "DETECT", "inside", "BOUNDS", 0, 0, 1, 1) == 0
    (entry,) = server.json("CHANS", "m")["chans"]
    assert entry == {"name": "m", "key": "mk", "ttl": -1,
                     "command": ["WITHIN", "mk", "FENCE", "DETECT", "inside", "BOUNDS", "0", "0", "1", "1"],
                     "meta": {"a": "1", "b": "2"}}
    assert c.execute_command("CHANS", "m") == [
        ["m", "mk", ["local://m"], entry["command"], ["a", "1", "b", "2"]]]
    ps = c.pubsub()
    ps.subscribe("m")
    ps.get_message(timeout=5)
    c.execute_command("SET", "mk", "o", "POINT", 0.5, 0.5)
    raw = receive(ps)["data"]
    assert '"detect":"inside","hook":"m","meta":{"a":"1","b":"2"},"key":"mk"' in raw
    ps.close()
    assert c.execute_command("DELCHAN", "m") == 1
    assert c.execute_command("DELCHAN", "m") == 0
    assert c.execute_command("DELCHAN", "carbon") == 1


async def test_pyle38_setchan_and_subscribe(server: GeoServer) -> None:
    """pyle38 defines the channel; a redis-py subscriber receives its events."""
    tile38 = Tile38(url=f"redis://127.0.0.1:{server.port}")
    try:
        resp = await tile38.setchan("py").within("pyfleet").detect(["enter"]).bounds(0, 0, 1, 1).activate()
        assert resp.ok
        chans = await tile38.chans("py*")
        assert [ch.name for ch in chans.chans] == ["py"]
        ps = server.client(decode_responses=True).pubsub()
        ps.subscribe("py")
        ps.get_message(timeout=5)
        await tile38.set("pyfleet", "t1").point(0.5, 0.5).exec()
        doc = orjson.loads(receive(ps)["data"])
        assert (doc["detect"], doc["id"], doc["hook"]) == ("enter", "t1", "py")
        ps.close()
        assert (await tile38.delchan("py")).ok
    finally:
        await tile38.quit()


def test_channels_fire_on_followers(make_server) -> None:
    """A follower applies the leader's writes, so its own subscribers get channel events
    (Tile38 1.33.1, issue 468); SETCHAN reaches it through the AOF stream."""
    leader = make_server("leader")
    follower = make_server("follower")
    assert follower.json("FOLLOW", leader.host, leader.port)["ok"]
    leader.client().execute_command("SETCHAN", "fc", "WITHIN", "fleet", "FENCE", "DETECT", "enter",
                                    "BOUNDS", 0, 0, 1, 1)
    wait_until(lambda: follower.json("CHANS", "*")["chans"], message="channel on the follower")
    ps = follower.client(decode_responses=True).pubsub()
    ps.subscribe("fc")
    ps.get_message(timeout=5)
    leader.client().execute_command("SET", "fleet", "t", "POINT", 0.5, 0.5)
    doc = orjson.loads(receive(ps)["data"])
    assert (doc["detect"], doc["hook"], doc["id"]) == ("enter", "fc", "t")
    ps.close()


def test_subscriber_is_cut_at_the_pubsub_output_limit(make_server) -> None:
    """A subscriber that does not read is disconnected at the pubsub class's hard limit;
    the server and other clients keep going."""
    srv = make_server("lim", args=["--client-output-buffer-limit", "pubsub 64kb 0 0"])
    stream = EventStream(srv, "SUBSCRIBE", "flood")
    c = srv.client()
    payload = "x" * 8192
    wait_until(lambda: c.publish("flood", payload) == 0, timeout=20, interval=0,
               message="slow subscriber disconnected")
    assert c.ping()
    stream.close()
