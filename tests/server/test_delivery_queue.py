"""The durable hook queue (queue.db) through its own API, and the pure delivery policy: FIFO
per hook, what survives a reopen and a kill -9, the per-hook bound (drop oldest, counted), forget,
a foreign queue.db (Tile38's buntdb file) set aside."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from geoserver.delivery.policy import expired, parse_timeout, retry_delay
from geoserver.delivery.queue import HookQueue
from geoserver.delivery.stats import DeliveryStats


def open_queue(path: Path, limit: int = 0, stats: DeliveryStats | None = None) -> HookQueue:
    return HookQueue(path / "queue.db", lambda: limit, on_drop=stats.dropped if stats else None)


def payloads(q: HookQueue, hook: str) -> list[bytes]:
    return [e.payload for e in q.head(hook, limit=1000)]


def test_fifo_per_hook_and_reopen(tmp_path: Path) -> None:
    q = open_queue(tmp_path)
    for i in range(5):
        q.enqueue("a", ["http://127.0.0.1:1/a"], b"a%d" % i)
        q.enqueue("b", ["redis://127.0.0.1/b", "http://127.0.0.1:1/b"], b"b%d" % i)
    q.commit()
    assert payloads(q, "a") == [b"a0", b"a1", b"a2", b"a3", b"a4"]
    first = q.head("b", limit=1)[0]
    assert first.endpoints == ("redis://127.0.0.1/b", "http://127.0.0.1:1/b")
    q.ack(q.head("a", limit=1)[0])
    assert q.depth() == 9 and sorted(q.hooks_with_events()) == ["a", "b"]
    for name in ("queue.db", "queue.db-wal", "queue.db-shm"):  # owner-only, like the AOF
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    q.close()
    q = open_queue(tmp_path)  # acks and events are in the file
    assert q.depth() == 9 and q.counts == {"a": 4, "b": 5}
    assert payloads(q, "a") == [b"a1", b"a2", b"a3", b"a4"]
    q.enqueue("a", ["http://127.0.0.1:1/a"], b"a5")  # sequence numbers go on after a reopen
    assert payloads(q, "a")[-1] == b"a5"
    q.close()


def test_overflow_drops_the_oldest_of_that_hook_only(tmp_path: Path) -> None:
    stats = DeliveryStats()
    q = open_queue(tmp_path, limit=3, stats=stats)
    q.enqueue("quiet", ["http://127.0.0.1:1/q"], b"q0")
    for i in range(10):
        q.enqueue("noisy", ["http://127.0.0.1:1/n"], b"n%d" % i)
    q.commit()
    assert payloads(q, "noisy") == [b"n7", b"n8", b"n9"]
    assert payloads(q, "quiet") == [b"q0"]
    assert q.counts == {"quiet": 1, "noisy": 3}
    assert stats.hooks["noisy"].dropped["overflow"] == 7 and "quiet" not in stats.hooks
    q.close()


def test_event_read_then_dropped_is_not_live(tmp_path: Path) -> None:
    q = open_queue(tmp_path, limit=2)
    q.enqueue("h", ["http://127.0.0.1:1/h"], b"0")
    in_flight = q.head("h")[0]  # the worker holds it while its endpoint is slow
    for i in range(1, 4):
        q.enqueue("h", ["http://127.0.0.1:1/h"], b"%d" % i)
    q.commit()
    assert not q.is_live(in_flight)
    q.ack(in_flight)  # a late ack of a dropped event does not miscount
    assert q.counts == {"h": 2} and payloads(q, "h") == [b"2", b"3"]
    q.close()


def test_forget(tmp_path: Path) -> None:
    q = open_queue(tmp_path)
    for i in range(3):
        q.enqueue("gone", ["http://127.0.0.1:1/g"], b"%d" % i)
    q.commit()
    q.enqueue("gone", ["http://127.0.0.1:1/g"], b"pending")
    assert q.forget("gone") == 4
    assert q.depth() == 0 and q.head("gone") == []
    q.enqueue("gone", ["http://127.0.0.1:1/g"], b"new")  # a new hook of the same name
    assert payloads(q, "gone") == [b"new"]
    q.close()
    assert payloads(open_queue(tmp_path), "gone") == [b"new"]


def test_foreign_queue_file_is_set_aside(tmp_path: Path) -> None:
    (tmp_path / "queue.db").write_bytes(b"*3\r\n$3\r\nset\r\n$10\r\nhook:idx\r\n$1\r\n5\r\n" * 4)  # buntdb
    q = open_queue(tmp_path)
    assert q.depth() == 0
    q.enqueue("h", ["http://127.0.0.1:1/h"], b"x")
    q.close()
    assert [p.name for p in tmp_path.glob("queue.db.unreadable-*")]


SCRIPT = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from geoserver.delivery.queue import HookQueue

    async def main():
        q = HookQueue(Path(sys.argv[1]), lambda: 0)
        for i in range(int(sys.argv[2])):
            q.enqueue("h", ["http://127.0.0.1:1/h"], b"%d" % i)  # no explicit commit
        await asyncio.sleep(0)  # the loop turn ends: its commit runs
        print("queued", flush=True)
        time.sleep(60)  # killed -9 here, the file never closed

    asyncio.run(main())
""")


def test_enqueued_events_survive_kill_9_after_the_loop_turn(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "queue.db"), "500"],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"queued\n"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    q = open_queue(tmp_path)
    assert payloads(q, "h") == [b"%d" % i for i in range(500)]
    q.close()


@pytest.mark.parametrize(("failures", "jitter", "delay"), [
    (0, 1.0, 0.0), (1, 1.0, 0.5), (2, 1.0, 1.0), (3, 1.0, 2.0), (6, 1.0, 16.0), (7, 1.0, 30.0),
    (1000, 1.0, 30.0), (1, 0.5, 0.25), (7, 0.5, 15.0), (3, 0.0, 1.0), (3, 9.0, 2.0),
])
def test_retry_delay(failures: int, jitter: float, delay: float) -> None:
    assert retry_delay(failures, jitter) == delay


def test_expired_and_timeout_parsing() -> None:
    assert not expired(100.0, 1e9, 0)
    assert not expired(100.0, 130.0, 30) and expired(100.0, 130.5, 30)
    assert parse_timeout("0.25") == 0.25 and parse_timeout("5") == 5.0
    for bad in ("0", "-1", "x", "4000"):
        with pytest.raises(ValueError):
            parse_timeout(bad)


def test_total_bound_trims_the_largest_hooks_first(tmp_path: Path) -> None:
    stats = DeliveryStats()
    q = HookQueue(tmp_path / "queue.db", lambda: 0, on_drop=stats.dropped, max_total=lambda: 100)
    for i in range(60):
        q.enqueue("big", ["http://127.0.0.1:1/b"], b"b%d" % i)
    for i in range(30):
        q.enqueue("mid", ["http://127.0.0.1:1/m"], b"m%d" % i)
    for i in range(11):
        q.enqueue("small", ["http://127.0.0.1:1/s"], b"s%d" % i)
    q.commit()  # 101 queued: down to 99, taken from "big"'s oldest
    assert q.depth() == 99 and q.counts == {"big": 58, "mid": 30, "small": 11}
    assert payloads(q, "big")[0] == b"b2" and stats.hooks["big"].dropped["overflow"] == 2
    q.close()
    assert open_queue(tmp_path).depth() == 99


def test_unwritable_queue_file_falls_back_to_memory(tmp_path: Path) -> None:
    (tmp_path / "queue.db").mkdir()  # cannot be opened as a file
    q = open_queue(tmp_path)
    assert not q.durable
    q.enqueue("h", ["http://127.0.0.1:1/h"], b"x")
    assert payloads(q, "h") == [b"x"]
    q.close()
    assert (tmp_path / "queue.db").is_dir()  # left as it was
