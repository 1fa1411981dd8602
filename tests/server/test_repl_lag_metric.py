"""geoserver_replication_lag_bytes grows while a follower falls behind, and returns to 0.

Real leader and follower processes; between them a TCP proxy (in this test) that can stall the
AOF stream's connection while the leader keeps taking writes (a congested or half-dead link):
the follower sees a silent stream, asks the leader's SERVER on its side connection, and the lag
it reports is what it lacks. Before this, the lag only used the leader's size at the handshake."""

from __future__ import annotations

import asyncio
import threading
import urllib.request

import pytest
from helpers import GeoServer, wait_until

pytestmark = pytest.mark.timeout(60)


class StallingProxy:
    """Forwards 127.0.0.1:<port> to the leader; ``stall()`` holds the leader's bytes on
    connections that asked for the AOF stream (others, e.g. SERVER side-checks, pass)."""

    def __init__(self, target: int):
        self.target, self.port = target, 0
        self.stalled = threading.Event()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        stream = asyncio.Event()  # this connection carries the AOF stream

        async def to_leader() -> None:
            while data := await reader.read(65536):
                if b"\r\nAOF\r\n" in data:
                    stream.set()
                up_writer.write(data)
            up_writer.close()

        async def to_follower() -> None:
            while data := await up_reader.read(65536):
                while stream.is_set() and self.stalled.is_set():
                    await asyncio.sleep(0.01)
                writer.write(data)
            writer.close()

        await asyncio.gather(to_leader(), to_follower(), return_exceptions=True)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def lag(server: GeoServer) -> int:
    with urllib.request.urlopen(f"http://{server.host}:{server.port}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("geoserver_replication_lag_bytes "):
                return int(float(line.split()[1]))
    raise AssertionError("no geoserver_replication_lag_bytes on the follower")


@pytest.fixture
def pair(tmp_path):
    leader = GeoServer(tmp_path / "leader").start()
    proxy = StallingProxy(leader.port)
    follower = GeoServer(tmp_path / "follower",
                         args=["--follow", f"127.0.0.1:{proxy.port}", "--repl-timeout", "30"]).start()
    try:
        yield leader, proxy, follower
    finally:
        proxy.stalled.clear()
        follower.stop()
        proxy.close()
        leader.stop()


def write(leader: GeoServer, start: int, count: int) -> None:
    c = leader.client()
    with c.pipeline(transaction=False) as p:
        for i in range(start, start + count):
            p.execute_command("SET", "fleet", f"truck{i}", "POINT", 33.5, -115.2)
        p.execute()


def test_lag_grows_while_the_stream_stalls_and_returns_to_zero(pair):
    leader, proxy, follower = pair
    write(leader, 0, 10)
    wait_until(lambda: follower.stats()["aof_size"] == leader.stats()["aof_size"], message="in step")
    assert lag(follower) == 0

    proxy.stalled.set()
    write(leader, 10, 200)
    first = wait_until(lambda: lag(follower), message="a lag")
    write(leader, 210, 200)
    wait_until(lambda: lag(follower) > first, message="a growing lag")
    behind = leader.stats()["aof_size"] - follower.stats()["aof_size"]
    wait_until(lambda: lag(follower) == behind, message=f"the lag to be all {behind} bytes behind")

    proxy.stalled.clear()
    wait_until(lambda: lag(follower) == 0, message="the lag back to 0")
    assert follower.stats()["aof_size"] == leader.stats()["aof_size"]
    assert follower.json("SCAN", "fleet", "COUNT")["count"] == 410


def test_an_idle_leader_is_no_lag(pair):
    """The side SERVER every second of silence finds the leader where we are: lag stays 0."""
    leader, _, follower = pair
    write(leader, 0, 5)
    wait_until(lambda: follower.stats()["aof_size"] == leader.stats()["aof_size"], message="in step")
    before = leader.json("SERVER")["stats"]
    wait_until(lambda: lag(follower) == 0, message="no lag")
    assert follower.stats()["aof_size"] == before["aof_size"]
