"""behindBytes (lastFailover, the acknowledged-write loss bound) is measured right before the
promotion, not taken from the decision's probes: the local runtime with real processes, where
the candidate really gains bytes between the failover decision and its promotion.

The only follower follows the leader through a TCP proxy the test holds shut: the leader
acknowledges 60 writes the follower has not received, the control loop sees both (the leader
healthy at its new size, the follower still caught up: its link is only silent). Then the
leader is killed (-9). The failover decision sees the follower short of those bytes, so its
estimate is their size; between the decision and the promotion (in the runtime's kill step)
the proxy lets the held bytes through, and the follower applies them. The recorded bound must
be what the target lacks at its promotion (0), and no acknowledged write is lost."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
import redis
from geocluster import failover
from local_lib import FAST, merged
from test_failover import MIN_RECORD, last_failover, running, until  # noqa: F401  (running: a fixture)

pytestmark = pytest.mark.timeout(180)

SPEC = merged(FAST, followers=1, failover={"delay": 2, "maxFailoversPerHour": 10},
              divergence={"gracePeriodSeconds": 120})  # the proxied follower is no repair case
HELD = 60  # writes the follower lacks when the failover is decided


class GatedProxy:
    """127.0.0.1:<port> -> the leader; bytes from the leader pass only while ``flowing``."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> GatedProxy:
        self.server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the leader is gone: the follower's reconnect is refused
            writer.close()
            return
        for src, dst, gated in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._pump(src, dst, gated))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, gated: bool) -> None:
        try:
            while data := await src.read(1 << 16):
                if gated:
                    await self.flowing.wait()  # held here: read from the leader, not yet passed on
                dst.write(data)
                await dst.drain()
        except OSError:
            pass
        finally:
            dst.close()

    async def close(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()


def sizes(port: int) -> dict:
    r = redis.Redis(port=port, protocol=2, socket_timeout=5)
    flat = r.execute_command("SERVER")
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def aof_size(port: int) -> int:
    return int(sizes(port)["aof_size"])


async def test_candidate_gaining_bytes_after_the_decision_is_measured_at_the_promotion(running, monkeypatch):  # noqa: F811
    cluster = await running(SPEC)
    lead, fol = cluster.sup.leader, cluster.sup.procs["follower-1"]
    r = redis.Redis(port=lead.port, protocol=2)
    for i in range(100):
        r.execute_command("SET", "fleet", f"a{i}", "POINT", 33, -115)
    proxy = await GatedProxy(lead.port).start()
    try:
        f = redis.Redis(port=fol.port, protocol=2)
        f.execute_command("CONFIG", "SET", "repl-timeout", "120")  # a held link is silent, not dead
        # FOLLOW dials the leader (through the proxy, on this loop) before it answers: a thread
        await asyncio.to_thread(f.execute_command, "FOLLOW", "127.0.0.1", str(proxy.port))
        await until(lambda: sizes(fol.port).get("following") == f"127.0.0.1:{proxy.port}".encode()
                    and sizes(fol.port)["caught_up"] == b"true"
                    and aof_size(fol.port) == aof_size(lead.port), 20, "caught up through the proxy")

        proxy.flowing.clear()
        acked = []
        for i in range(HELD):  # acknowledged by the leader, held in the proxy
            r.execute_command("SET", "fleet", f"held{i}", "POINT", 33, -115)
            acked.append(f"held{i}")
        full = aof_size(lead.port)
        short = aof_size(fol.port)
        assert full - short >= HELD * MIN_RECORD

        def seen_short() -> bool:  # the loop saw the leader healthy at its new size ...
            watch = cluster.status.get("leaderWatch") or {}
            return watch.get("aofSize") == full and "follower-1" in watch.get("caughtUp", [])

        await until(seen_short, 20, "a tick seeing the leader at its new size, the follower current")
        assert aof_size(fol.port) == short  # ... and the follower still short of the held bytes

        estimates: list[int] = []
        decide = failover.decide

        def recording(*args, **kw):
            d = decide(*args, **kw)
            if d.promotion is not None:
                estimates.append(d.promotion.behind_bytes)
            return d

        monkeypatch.setattr(failover, "decide", recording)
        gained: list[tuple[int, int]] = []
        kill = cluster._kill

        async def kill_then_release(p):
            size = await kill(p)  # the killed leader's file: the exact end of what it acknowledged
            before = await asyncio.to_thread(aof_size, fol.port)
            proxy.flowing.set()  # the target gains the held bytes: after the decision, before FOLLOW no one
            await until(lambda: aof_size(fol.port) == size, 20, "the target applying the held bytes")
            gained.append((before, await asyncio.to_thread(aof_size, fol.port)))
            return size

        cluster._kill = kill_then_release
        os.kill(lead.popen.pid, signal.SIGKILL)
        await until(lambda: last_failover(cluster).get("result") == "ok", 30, "failover")
    finally:
        proxy.flowing.set()
        await proxy.close()

    rec = last_failover(cluster)
    assert rec["kind"] == "failover" and rec["old"] == "leader" and rec["new"] == "follower-1"
    assert estimates == [full - short], estimates  # the decision saw the follower short
    assert gained == [(short, full)], gained  # it really gained those bytes afterwards
    assert rec["behindBytes"] == 0, rec  # measured at the promotion: it lacked nothing
    new = redis.Redis(port=fol.port, protocol=2)
    new.response_callbacks.clear()
    missing = [oid for oid in acked if new.execute_command("GET", "fleet", oid) is None]
    assert missing == [] and len(missing) * MIN_RECORD <= rec["behindBytes"]
    new.execute_command("SET", "fleet", "after", "POINT", 1, 1)  # the new leader takes writes
    assert new.execute_command("GET", "fleet", "after") is not None
