"""Follower side: keep this server's dataset and AOF a byte-exact copy of a prefix of the
leader's AOF.

Each session: dial, [AUTH], SERVER (refuse self / a follower), then prove the local AOF is a
prefix of the leader's with `AOFMD5 0 <local size>`. If it is, stream `AOF <local size>` and
apply incrementally. If it is not (the leader shrank, a different leader, a torn file) or a
RESYNC was requested, do a *full resync*: build a fresh dataset and a fresh AOF file from
`AOF 0` while the old ones keep serving reads, then swap both at once. After the swap the
follower's `aof_size` equals the leader's and the old dataset is freed -- never the Tile38
1.30 behaviour of replaying the leader's file on top of stale memory and a stale size counter.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hiredis
import orjson

from geoserver import dispatch
from geoserver.aof.log import private_file
from geoserver.errors import CommandError
from geoserver.protocol.resp import encode_command
from geoserver.store.database import Database

if TYPE_CHECKING:
    from geoserver.server import Server

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 2.0
REPLY_TIMEOUT = 30.0  # AOFMD5 of a large prefix takes a while on the leader
RETRY_DELAY = 1.0
READ_SIZE = 256 << 10


class ReplicationError(Exception):
    """The session cannot continue; the follower retries after a pause."""


class LeaderConnection:
    """Request/reply over one connection to the leader, replies parsed by hiredis."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()

    @classmethod
    async def open(cls, host: str, port: int, password: str) -> LeaderConnection:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), DIAL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ReplicationError(f"cannot connect to {host}:{port}: {exc or 'timeout'}") from None
        conn = cls(reader, writer)
        await conn.call_json(b"OUTPUT", b"json")
        if password:
            await conn.call_json(b"AUTH", password.encode())
        return conn

    async def reply(self) -> Any:
        while True:
            item = self.parser.gets()
            if item is not False:
                return item
            data = await asyncio.wait_for(self.reader.read(READ_SIZE), REPLY_TIMEOUT)
            if not data:
                raise ReplicationError("leader closed the connection")
            self.parser.feed(data)

    async def call(self, *argv: bytes) -> Any:
        self.writer.write(encode_command(argv))
        return await self.reply()

    async def call_json(self, *argv: bytes) -> dict[str, Any]:
        raw = await self.call(*argv)
        if isinstance(raw, hiredis.ReplyError):
            raise ReplicationError(str(raw))
        doc = orjson.loads(raw) if isinstance(raw, bytes) else {"ok": True}
        if not doc.get("ok"):
            raise ReplicationError(str(doc.get("err", "error")))
        return doc

    def close(self) -> None:
        self.writer.close()


async def leader_stats(conn: LeaderConnection, own_id: str) -> dict[str, Any]:
    """SERVER of a prospective leader, refusing self and followers."""
    stats = (await conn.call_json(b"SERVER"))["stats"]
    if not isinstance(stats, dict) or not stats.get("id"):
        raise ReplicationError("invalid id")
    if stats["id"] == own_id:
        raise ReplicationError("cannot follow self")
    if stats.get("following"):
        raise ReplicationError("cannot follow a follower")
    return stats


async def fetch_leader_stats(host: str, port: int, password: str, own_id: str) -> dict[str, Any]:
    """FOLLOW's synchronous check: dial, SERVER, refuse self and followers, hang up."""
    conn = await LeaderConnection.open(host, port, password)
    try:
        return await leader_stats(conn, own_id)
    finally:
        conn.close()


class FullResync:
    """A dataset and AOF file built from the leader's stream, swapped in when complete."""

    def __init__(self, server: Server) -> None:
        assert server.aof is not None
        self.server = server
        self.db = Database()
        self.path = Path(f"{server.aof.path}-resync")
        self.file = private_file(self.path)  # closed in finish/abort
        self.size = 0

    def apply(self, argv: list[bytes], record: bytes) -> None:
        dispatch.apply_record(self.server, argv, self.db)
        self.file.write(record)
        self.size += len(record)

    async def finish(self) -> None:
        self.file.flush()
        await asyncio.to_thread(os.fsync, self.file.fileno())
        self.file.close()
        server = self.server
        assert server.aof is not None
        server.aof.replace_with(self.path)  # synchronous from here: the swap is atomic
        server.db = self.db
        server.resyncs += 1
        server.metrics.resyncs.inc()
        _release_memory()

    def abort(self) -> None:
        self.file.close()
        self.path.unlink(missing_ok=True)


def _release_memory() -> None:
    """Return the freed old dataset to the OS, so RSS tracks the leader's (glibc only)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Follower:
    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        self.caught_up = False
        self.caught_up_once = False
        self.connected = False
        self.leader_aof_size = 0
        self.last_error = ""
        self.state = "connecting"
        self.force_resync = False
        self._conn: LeaderConnection | None = None
        self._task: asyncio.Task | None = None
        self._retry_now = asyncio.Event()

    def start(self) -> None:
        self._task = self.server.spawn(self._run(), "follow")

    def cancel(self) -> None:
        """Stop at once: the session task is suspended at an await, so after this call it
        applies nothing more (FOLLOW to another leader must not mix two streams)."""
        if self._task is not None:
            self._task.cancel()
        if self._conn is not None:
            self._conn.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._conn is not None:
            self._conn.close()

    def request_resync(self) -> None:
        """RESYNC: drop the session and rebuild dataset and AOF from the leader."""
        self.force_resync = True
        self.caught_up = False
        if self._conn is not None:
            self._conn.close()
        self._retry_now.set()

    def stats(self) -> dict[str, Any]:
        return {
            "following": f"{self.host}:{self.port}",
            "caught_up": self.caught_up,
            "caught_up_once": self.caught_up_once,
            "leader_aof_size": self.leader_aof_size,
            "replication_state": self.state,
            "replication_error": self.last_error,
        }

    async def _run(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (ReplicationError, CommandError, OSError, TimeoutError,
                    hiredis.ProtocolError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                if not self.force_resync:
                    log.warning("follow: %s", self.last_error, extra={"leader": f"{self.host}:{self.port}"})
            except Exception as exc:  # an unexpected reply must not end following for good
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("follow: unexpected error", extra={"leader": f"{self.host}:{self.port}"})
            finally:
                self.connected = False
                self.caught_up = False
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
            self.state = "reconnecting"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), RETRY_DELAY)
            self._retry_now.clear()

    async def _session(self) -> None:
        server = self.server
        aof = server.aof
        if aof is None:
            raise ReplicationError("aof disabled")
        # One connection for the whole handshake: the leader refuses `AOF pos` on it if its
        # file was replaced after this SERVER/AOFMD5, so size and prefix stay consistent.
        self._conn = conn = await LeaderConnection.open(self.host, self.port, server.config.leaderauth)
        leader_size = int((await leader_stats(conn, server.config.server_id))["aof_size"])
        aof.flush()
        local = aof.size
        full = self.force_resync or local == 0 or local > leader_size
        if not full:
            try:
                theirs = (await conn.call_json(b"AOFMD5", b"0", str(local).encode()))["md5"]
            except ReplicationError:  # EOF: the leader's file is shorter than ours
                theirs = ""
            full = theirs != await aof.md5(0, local)
        pos = 0 if full else local
        await conn.call_json(b"REPLCONF", b"listening-port", str(server.config.port).encode())
        conn.writer.write(encode_command([b"AOF", str(pos).encode()]))
        ok = await conn.reply()
        if isinstance(ok, hiredis.ReplyError) or ok != b"OK":
            raise ReplicationError(f"AOF {pos} refused: {ok}")
        self.force_resync = False
        self.connected = True
        self.leader_aof_size = leader_size
        self.last_error = ""
        log.info("following", extra={"leader": f"{self.host}:{self.port}", "pos": pos,
                                     "leader_aof_size": leader_size, "full_resync": full})
        resync = FullResync(server) if full else None
        self.state = "resyncing" if full else "streaming"
        started = time.monotonic()
        try:
            if resync is not None and leader_size == 0:
                await self._finish_resync(resync, started)
                resync = None
            elif resync is None:
                self._check_caught_up()
            await self._stream(conn, resync, started)
        except BaseException:
            if resync is not None and not resync.file.closed:
                resync.abort()
            raise

    async def _stream(self, conn: LeaderConnection, resync: FullResync | None, started: float) -> None:
        server = self.server
        parser = conn.parser
        while True:
            applied = 0
            while True:
                item = parser.gets()
                if item is False:
                    break
                if not isinstance(item, list) or not all(isinstance(a, bytes) for a in item):
                    raise ReplicationError("invalid multibulk")
                record = encode_command(item)
                if resync is not None:
                    resync.apply(item, record)
                    if resync.size >= self.leader_aof_size:
                        await self._finish_resync(resync, started)
                        resync = None
                else:
                    dispatch.apply_record(server, item)
                    assert server.aof is not None
                    server.aof.append(record)
                applied += 1
                if applied % 256 == 0:
                    await asyncio.sleep(0)  # a big backlog must not starve clients
            if resync is None:
                server.flush_aof()
                self._check_caught_up()
            data = await conn.reader.read(READ_SIZE)
            if not data:
                raise ReplicationError("leader closed the stream")
            parser.feed(data)

    async def _finish_resync(self, resync: FullResync, started: float) -> None:
        await resync.finish()
        self.state = "streaming"
        log.info("full resync complete", extra={
            "aof_size": self.server.aof_size, "seconds": round(time.monotonic() - started, 3),
            "objects": self.server.db.stats()["num_objects"]})
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if not self.caught_up and self.server.aof_size >= self.leader_aof_size:
            self.caught_up = True
            self.caught_up_once = True
            log.info("caught up", extra={"aof_size": self.server.aof_size})
