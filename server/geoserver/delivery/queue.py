"""The durable hook queue: `<dir>/queue.db` (Tile38 keeps its queue there too), one sqlite
table in WAL mode, FIFO per hook.

Durability (docs/geofencing-endpoints.md#delivery-guarantee): `enqueue` only appends to a list
in memory and asks the loop for a commit at the end of the current turn, the way the AOF's group
commit works; every event queued in one loop turn, every acknowledgement and every trim go to
the file in one transaction. An event queued while a write command runs is therefore in the
file before that write's reply is sent (the reply waits for the AOF write scheduled after it).
With `synchronous=NORMAL` (appendfsync everysec/no) a committed transaction survives kill -9 of
the server; a power loss may drop the last transactions since sqlite's last WAL checkpoint.
With appendfsync always, `synchronous=FULL` fsyncs each commit.

Bounds: at most `hook-queue-max` events per hook; beyond, that hook's oldest events are
dropped (counted, and logged at most once a second), so one hook whose endpoints are down
cannot push out the events of the others. At most `hook-queue-max-total` events in all;
beyond, the oldest events of the hooks holding most go first. `forget` drops a hook's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,      -- global enqueue order; per hook it is the delivery order
    hook TEXT NOT NULL,
    endpoints BLOB NOT NULL,      -- JSON list of URLs, tried in order
    payload BLOB NOT NULL,        -- the event JSON as the fence engine encoded it
    queued_at REAL NOT NULL       -- unix time, for delivery latency and hook-queue-max-age
);
CREATE INDEX IF NOT EXISTS events_by_hook ON events (hook, seq);
"""
DROP_LOG_INTERVAL = 1.0
ACK_DELAY = 0.05  # acks alone are committed at most this late (a crash may resend them: at least once)
CHECKPOINT_INTERVAL = 1.0  # seconds between WAL checkpoints, run in a thread (they fsync)
RETRY_COMMIT = 1.0  # seconds before a failed commit is tried again


@dataclass(frozen=True)
class Event:
    seq: int
    hook: str
    endpoints: tuple[str, ...]
    payload: bytes
    queued_at: float


class HookQueue:
    """FIFO per hook, persisted in sqlite. All methods run on the server's loop thread."""

    def __init__(self, path: Path, max_per_hook: Callable[[], int], fsync: str = "everysec",
                 on_drop: Callable[[str, str, int], None] | None = None,
                 max_total: Callable[[], int] = lambda: 0) -> None:
        self.path = path
        self.max_per_hook = max_per_hook  # read at each commit: CONFIG SET applies at once
        self.max_total = max_total
        self.on_drop = on_drop or (lambda hook, reason, n: None)
        self.on_enqueue: Callable[[str], None] = lambda hook: None  # the worker's wake-up
        self.counts: dict[str, int] = {}  # events queued per hook (pending ones included)
        self._dead_upto: dict[str, int] = {}  # per hook, events with seq <= this are dropped
        self._pending: list[Event] = []
        self._acks: list[int] = []
        self._forgets: list[tuple[str, int]] = []
        self._commit_scheduled = False
        self._ack_timer: asyncio.TimerHandle | None = None
        self._drops_unlogged: dict[str, int] = {}
        self._drop_logged_at = 0.0
        self.durable = True  # False when queue.db could not be opened (then kept in memory)
        self._closed = False
        self.db = self._open(fsync)
        self._next_seq = (self.db.execute("SELECT MAX(seq) FROM events").fetchone()[0] or 0) + 1
        self.counts = dict(self.db.execute("SELECT hook, COUNT(*) FROM events GROUP BY hook").fetchall())
        self._total = sum(self.counts.values())
        self._closing = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoints, name="queue-checkpoint", daemon=True)
        if self.durable:
            self._checkpointer.start()
        if self.counts:
            log.info("hook queue loaded", extra={"path": str(path), "events": self.depth(),
                                                 "hooks": len(self.counts)})

    def _open(self, fsync: str) -> sqlite3.Connection:
        """queue.db; a file that is not sqlite (Tile38's buntdb queue.db) is set aside; a queue
        that cannot be written at all (full disk, read-only dir) is kept in memory for this
        run, so the server still starts and serves (its events then do not survive a restart)."""
        try:
            try:
                return self._connect(str(self.path), fsync)
            except sqlite3.DatabaseError as exc:
                if getattr(exc, "sqlite_errorname", "") != "SQLITE_NOTADB":
                    raise
                aside = self.path.with_name(self.path.name + f".unreadable-{int(time.time())}")
                os.replace(self.path, aside)
                log.warning("hook queue file is not an sqlite database: moved aside, starting empty",
                            extra={"path": str(self.path), "moved_to": str(aside), "error": str(exc)})
                return self._connect(str(self.path), fsync)
        except (sqlite3.Error, OSError) as exc:
            log.error("hook queue file unusable: hook events are kept in memory, not across a restart",
                      extra={"path": str(self.path), "error": str(exc)})
            self.durable = False
            return self._connect(":memory:", fsync)

    def _connect(self, path: str, fsync: str) -> sqlite3.Connection:
        if path != ":memory:" and not os.path.exists(path):
            # owner-only like the AOF (events carry the objects); sqlite gives -wal/-shm this mode
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={'FULL' if fsync == 'always' else 'NORMAL'}")
            db.execute("PRAGMA wal_autocheckpoint=0")  # _checkpoints does it, off the loop
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    # --- the HookSink side --------------------------------------------------------------
    def enqueue(self, hook: str, endpoints: Sequence[str], payload: bytes) -> Event:
        event = Event(self._next_seq, hook, tuple(endpoints), bytes(payload), time.time())
        self._next_seq += 1
        self._pending.append(event)
        self.counts[hook] = self.counts.get(hook, 0) + 1
        self._total += 1
        self._schedule_commit()
        self.on_enqueue(hook)
        return event

    def forget(self, hook: str) -> int:
        """Drop every event queued for `hook`; how many there were."""
        n = self.counts.pop(hook, 0)
        self._total -= n
        self._dead_upto[hook] = self._next_seq - 1
        self._pending = [e for e in self._pending if e.hook != hook]
        self._forgets.append((hook, self._next_seq - 1))
        self._schedule_commit()
        return n

    def depth(self) -> int:
        return self._total

    # --- the worker side ----------------------------------------------------------------
    def hooks_with_events(self) -> list[str]:
        return [hook for hook, n in self.counts.items() if n > 0]

    def head(self, hook: str, after: int = 0, limit: int = 16) -> list[Event]:
        """The oldest live events of `hook` with seq > after, in order."""
        if self._pending:
            self.commit()
        after = max(after, self._dead_upto.get(hook, 0))
        rows = self.db.execute(
            "SELECT seq, endpoints, payload, queued_at FROM events WHERE hook = ? AND seq > ? "
            "ORDER BY seq LIMIT ?", (hook, after, limit)).fetchall()
        return [Event(seq, hook, tuple(orjson.loads(eps)), payload, at) for seq, eps, payload, at in rows]

    def is_live(self, event: Event) -> bool:
        """False once the event was dropped (overflow, forget) after the worker read it."""
        return event.seq > self._dead_upto.get(event.hook, 0)

    def ack(self, event: Event) -> None:
        """The event was delivered (or expired): remove it."""
        if self.is_live(event):
            self._total -= 1
            left = self.counts.get(event.hook, 0) - 1
            if left > 0:
                self.counts[event.hook] = left
            else:
                self.counts.pop(event.hook, None)
            self._dead_upto[event.hook] = event.seq  # delivered in order: everything before is done
        self._acks.append(event.seq)
        if not self._commit_scheduled and self._ack_timer is None:
            try:
                self._ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._schedule_commit)
            except RuntimeError:
                self.commit()

    # --- the file -------------------------------------------------------------------------
    def _schedule_commit(self) -> None:
        if self._commit_scheduled:
            return
        self._commit_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self.commit)
        except RuntimeError:  # no loop (a tool or a test driving the queue): commit now
            self.commit()

    def commit(self) -> None:
        """One transaction: new events, trims over the per-hook bound, acks and forgets."""
        self._commit_scheduled = False
        if self._closed:
            return  # a late timer or enqueue after shutdown: nothing to write to
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        pending, self._pending = self._pending, []
        acks, self._acks = self._acks, []
        forgets, self._forgets = self._forgets, []
        if not (pending or acks or forgets):
            return
        db = self.db
        db.execute("BEGIN")
        try:
            for hook, upto in forgets:
                db.execute("DELETE FROM events WHERE hook = ? AND seq <= ?", (hook, upto))
            db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)",
                           [(e.seq, e.hook, orjson.dumps(e.endpoints), e.payload, e.queued_at)
                            for e in pending])
            db.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq in acks])
            limit = self.max_per_hook()
            if limit:
                for hook in {e.hook for e in pending}:
                    if self.counts.get(hook, 0) > limit:
                        self._trim(hook, self.counts[hook] - limit)
            total = self.max_total()
            if total and self._total > total:
                self._trim_total(total)
            db.execute("COMMIT")
        except sqlite3.Error as exc:  # disk full, I/O error: keep everything, retry in a second
            db.execute("ROLLBACK")
            self._pending[:0], self._acks[:0], self._forgets[:0] = pending, acks, forgets
            log.error("hook queue write failed; retrying", extra={"path": str(self.path), "error": str(exc)})
            with contextlib.suppress(RuntimeError):
                asyncio.get_running_loop().call_later(RETRY_COMMIT, self._schedule_commit)

    def _trim_total(self, total: int) -> None:
        """Over `hook-queue-max-total`: the oldest events of the hooks holding most go, down to
        99% of the bound (so the search for the largest hook does not run at every commit)."""
        target = total - total // 100
        while self._total > target and self.counts:
            hook = max(self.counts, key=self.counts.__getitem__)
            if not self._trim(hook, min(self._total - target, self.counts[hook])):
                break

    def _trim(self, hook: str, n: int) -> int:
        rows = self.db.execute("SELECT seq FROM events WHERE hook = ? ORDER BY seq LIMIT ?",
                               (hook, n)).fetchall()
        if not rows:
            return 0
        upto = rows[-1][0]
        self.db.execute("DELETE FROM events WHERE hook = ? AND seq <= ?", (hook, upto))
        self._dead_upto[hook] = max(self._dead_upto.get(hook, 0), upto)
        self.counts[hook] -= len(rows)
        if not self.counts[hook]:
            del self.counts[hook]
        self._total -= len(rows)
        self.on_drop(hook, "overflow", len(rows))
        self._drops_unlogged[hook] = self._drops_unlogged.get(hook, 0) + len(rows)
        now = time.monotonic()
        if now - self._drop_logged_at >= DROP_LOG_INTERVAL:
            log.warning("hook queue full: oldest events dropped", extra={
                "dropped": dict(self._drops_unlogged), "hook_queue_max": self.max_per_hook(),
                "hook_queue_max_total": self.max_total()})
            self._drops_unlogged, self._drop_logged_at = {}, now
        return len(rows)

    def _checkpoints(self) -> None:
        """Copy the WAL into the database file now and then, in this thread: a checkpoint
        fsyncs, which must not stall the loop (sqlite's automatic one runs inside a commit)."""
        db = sqlite3.connect(self.path)
        try:
            while not self._closing.wait(CHECKPOINT_INTERVAL):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    log.warning("hook queue checkpoint failed", extra={"error": str(exc)})
        finally:
            db.close()

    def close(self) -> None:
        if self._closed:
            return
        self.commit()
        self._closed = True
        self._closing.set()
        if self._checkpointer.is_alive():
            self._checkpointer.join()
        self.db.close()  # the last connection: sqlite checkpoints and removes the WAL
