"""Follower side: keep this server's dataset and AOF a byte-exact copy of a prefix of the
leader's AOF.

Each session: dial, [AUTH], SERVER (refuse self / a follower), then prove the local AOF is a
prefix of the leader's with `AOFMD5 0 <local size>`. If it is, stream `AOF <local size>` and
apply incrementally. If it is not (the leader shrank, a different leader, a torn file) or a
RESYNC was requested, do a *full resync*: build a fresh dataset and a fresh AOF file from
`AOF 0` while the old ones keep serving reads, then swap both at once. After the swap the
follower's `aof_size` equals the leader's and the old dataset is freed -- never the Tile38
1.30 behaviour of replaying the leader's file on top of stale memory and a stale size counter.

The stream's records are RESP arrays or inline command lines (a Tile38 leader streams its AOF
verbatim, and old Tile38 versions wrote inline lines), decided per record by the request framer
as the AOF loader does; each is applied through the command table and its original bytes are
appended, so `aof_size` and AOFMD5 stay equal to the leader's. A record that does not parse or
apply ends the session with its leader offset in `replication_error`; the follower keeps what
it applied before it (a full resync in progress is discarded) and retries with backoff.

Safety (docs/replication.md):
- A full resync that would throw away a dataset the leader does not have is refused
  (`resync_refusal`): the dataset and AOF stay untouched and keep serving reads, the state is
  `refused`, and the follower retries with backoff until the leader qualifies or RESYNC FORCE.
- A silent stream (no bytes for `repl-timeout` s) is checked over a second connection: the
  leader's SERVER aof_size equal to what we applied means an idle leader (Tile38 leaders send
  nothing then) and the stream is kept; anything else -- no answer, more data, another id --
  means a dead link: the session ends (caught_up false) and the follower reconnects.
- Failed sessions back off exponentially (1 s doubling to 30 s); a session that caught up
  resets the delay.
- leaderauth goes only to a trusted leader: the `--follow` one, or one named by a FOLLOW from
  a client that authenticated against a set requirepass (`Follower.trusted`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hiredis
import orjson

from geoserver import dispatch, fastpath
from geoserver.aof.log import private_file
from geoserver.errors import CommandError, GeoServerError, ProtocolError
from geoserver.protocol.framing import FrameLimits, RequestReader
from geoserver.protocol.resp import encode_command
from geoserver.store.database import Database
from geoserver.tls import TLS_CLOSED_HINT, replication_context

if TYPE_CHECKING:
    from geoserver.config import ServerConfig
    from geoserver.server import Server

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 2.0
REPLY_TIMEOUT = 30.0  # AOFMD5 of a large prefix takes a while on the leader
CHECK_TIMEOUT = 5.0  # most a side-check waits (less with a shorter repl-timeout)
STREAM_GRACE = 1.0  # after a side-check saw the leader ahead: bytes may still be in flight
LAG_POLL = 1.0  # seconds of stream silence after which the leader's aof_size is asked for (lag)
BACKOFF_BASE = 1.0
BACKOFF_MAX = 30.0
READ_SIZE = 256 << 10
CLOSED = "leader closed the connection"


class ReplicationError(Exception):
    """The session cannot continue; the follower retries after a pause."""


class ResyncRefused(ReplicationError):
    """A full resync would replace our dataset with a leader's much smaller one."""


class LinkDead(ReplicationError):
    """The stream was silent and the side-check says the leader is gone or ahead of us."""


def resync_refusal(ours: int, leader_objects: int, leader_id: str, synced_id: str,
                   min_ratio: float) -> str:
    """Why a full resync from this leader must be refused, or "" to accept it.

    With `min_ratio` > 0 and a non-empty dataset: refuse a leader with no objects, and a leader
    other than the one the dataset came from (`synced_id`) holding fewer than min_ratio times
    our objects. The same leader after an AOFSHRINK is accepted whatever its count."""
    if min_ratio <= 0 or ours == 0:
        return ""
    if leader_objects == 0:
        return f"the leader has no objects and this follower has {ours}"
    if leader_id != synced_id and leader_objects < min_ratio * ours:
        return (f"the leader (id {leader_id}) is not the one this dataset came from "
                f"(id {synced_id or 'unknown'}) and has {leader_objects} objects, fewer than "
                f"{min_ratio:g} x {ours}")
    return ""


@dataclass
class Backoff:
    """Delays between sessions: BACKOFF_BASE doubling to BACKOFF_MAX, reset by a healthy one."""

    failures: int = 0
    delay: float = 0.0

    def next(self) -> float:
        self.failures += 1
        self.delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(self.failures - 1, 16))
        return self.delay

    def reset(self) -> None:
        self.failures = 0
        self.delay = 0.0


class LeaderConnection:
    """Request/reply over one connection to the leader, replies parsed by hiredis."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 timeout: float = REPLY_TIMEOUT) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = hiredis.Reader()
        self.timeout = timeout  # per reply, unless a call gives its own

    @classmethod
    async def open(cls, host: str, port: int, password: str, timeout: float = REPLY_TIMEOUT,
                   tls: ssl.SSLContext | None = None) -> LeaderConnection:
        dial = (asyncio.open_connection(host, port, ssl=tls, server_hostname=host) if tls
                else asyncio.open_connection(host, port))
        try:
            reader, writer = await asyncio.wait_for(dial, DIAL_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ReplicationError(f"cannot connect to {host}:{port}: {exc or 'timeout'}") from None
        conn = cls(reader, writer, timeout)
        try:
            await conn.call_json(b"OUTPUT", b"json")
            if password:
                await conn.call_json(b"AUTH", password.encode())
        except ReplicationError as exc:
            conn.close()
            if tls is not None and str(exc) == CLOSED:  # TLS 1.3: a refused client certificate
                raise ReplicationError(CLOSED + TLS_CLOSED_HINT) from None  # is an EOF after it
            raise
        except ConnectionResetError:  # the same refusal, when the leader's close came as a reset
            conn.close()
            if tls is not None:
                raise ReplicationError(CLOSED + TLS_CLOSED_HINT) from None
            raise
        except BaseException:
            conn.close()
            raise
        return conn

    async def reply(self, timeout: float | None = None) -> Any:
        while True:
            item = self.parser.gets()
            if item is not False:
                return item
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), timeout or self.timeout)
            except TimeoutError:
                raise ReplicationError("no reply from the leader in time") from None
            if not data:
                raise ReplicationError(CLOSED)
            if data[:1] == b"*" and not self.parser.has_data():
                # Replies in JSON mode are never arrays, and hiredis would allocate the list a
                # `*3000000000` header announces: a FOLLOWed stranger must not do that.
                raise ReplicationError("unexpected array reply from the leader")
            self.parser.feed(data)

    async def status_line(self) -> bytes:
        """The one-line reply (`+OK`) that starts the AOF stream, read without hiredis so the
        stream's bytes after it reach the request framer instead."""
        if self.parser.has_data():
            raise ReplicationError("unexpected data from the leader before the AOF stream")
        try:
            return await asyncio.wait_for(self.reader.readuntil(b"\r\n"), self.timeout)
        except TimeoutError:
            raise ReplicationError("no reply from the leader in time") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise ReplicationError("invalid reply to AOF from the leader") from None

    async def call(self, *argv: bytes, timeout: float | None = None) -> Any:
        self.writer.write(encode_command(argv))
        return await self.reply(timeout)

    async def call_json(self, *argv: bytes, timeout: float | None = None) -> dict[str, Any]:
        raw = await self.call(*argv, timeout=timeout)
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


def leader_tls(config: ServerConfig) -> ssl.SSLContext | None:
    """The TLS context to dial a leader with (`tls-replication`), or None for plaintext."""
    try:
        return replication_context(config)
    except (OSError, ValueError) as exc:
        raise ReplicationError(f"tls-replication: {exc}") from None


async def fetch_leader_stats(host: str, port: int, password: str, own_id: str,
                             tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """FOLLOW's synchronous check: dial, SERVER, refuse self and followers, hang up."""
    conn = await LeaderConnection.open(host, port, password, tls=tls)
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
        self.write(record)

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

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
    caught_up_once = fastpath.gate_input("caught_up_once")  # reads are served from then on

    def __init__(self, server: Server, host: str, port: int) -> None:
        self.server = server
        self.host = host
        self.port = port
        # leaderauth is sent only to a trusted leader (see the module docstring); FOLLOW
        # sets config.follow_trusted before it starts a follower
        self.trusted = server.config.follow_trusted
        self.caught_up = False
        self.caught_up_once = False
        self.connected = False
        self.leader_aof_size = 0  # at the handshake: where this session's catch-up ends
        # the leader's AOF size as last known (handshake, bytes streamed since, SERVER while the
        # stream is silent): geoserver_replication_lag_bytes is this minus ours
        self.leader_size_seen = 0
        self._stream_end = 0  # leader AOF offset of the last byte received
        self._poll: LeaderConnection | None = None  # for LAG_POLL, kept for the session
        self.leader_id = ""  # SERVER id of the leader of the current session
        self.last_error = ""
        self.refusal = ""  # why the last full resync was refused; "" once one is allowed
        self.state = "connecting"
        self.force_resync = False
        self.force_accept = False  # RESYNC FORCE: the next full resync skips the refusal rule
        self.backoff = Backoff()
        self.link_checks = 0  # side-checks of a silent stream that found the leader idle
        self._conn: LeaderConnection | None = None
        self._task: asyncio.Task | None = None
        self._retry_now = asyncio.Event()

    @property
    def password(self) -> str:
        return self.server.config.leaderauth if self.trusted else ""

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

    def request_resync(self, force: bool = False) -> None:
        """RESYNC [FORCE]: drop the session and rebuild dataset and AOF from the leader; with
        FORCE even from a leader the refusal rule would refuse."""
        self.force_resync = True
        self.force_accept = self.force_accept or force
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
            "replication_failures": self.backoff.failures,
            "replication_retry_delay": self.backoff.delay,
            "replication_link_checks": self.link_checks,
            "resync_refusal": self.refusal,
        }

    async def _run(self) -> None:
        where = {"leader": f"{self.host}:{self.port}"}
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except ResyncRefused as exc:
                self.refusal = self.last_error = str(exc)
                # the dataset we keep is served: reads must not wait for a catch-up that the
                # refusal rule forbids (after a restart nothing else would open them)
                self.caught_up_once = True
                self.server.metrics.resync_refusals.inc()
                log.warning("%s; keeping this dataset (RESYNC FORCE accepts the leader's)",
                            self.refusal, extra=where)
            except (ReplicationError, CommandError, OSError, TimeoutError,
                    hiredis.ProtocolError) as exc:
                self.last_error = str(exc) or type(exc).__name__
                if not self.force_resync:
                    log.warning("follow: %s", self.last_error, extra=where)
            except Exception as exc:  # an unexpected reply must not end following for good
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("follow: unexpected error", extra=where)
            finally:
                self.connected = False
                self.caught_up = False
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                self._close_poll()
            delay = self.backoff.next()
            self.state = "refused" if self.refusal else "reconnecting"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._retry_now.wait(), delay)
            self._retry_now.clear()

    def _reply_timeout(self) -> float:
        """Handshake replies: bounded by repl-timeout (a blackholed link must not hold a
        reconnect for REPLY_TIMEOUT), but never below CHECK_TIMEOUT."""
        timeout = self.server.config.repl_timeout
        return max(CHECK_TIMEOUT, timeout) if timeout > 0 else REPLY_TIMEOUT

    async def _session(self) -> None:
        server = self.server
        aof = server.aof
        if aof is None:
            raise ReplicationError("aof disabled")
        if not self.refusal:
            self.state = "connecting"
        # One connection for the whole handshake: the leader refuses `AOF pos` on it if its
        # file was replaced after this SERVER/AOFMD5, so size and prefix stay consistent.
        self._conn = conn = await LeaderConnection.open(self.host, self.port, self.password,
                                                        self._reply_timeout(), leader_tls(server.config))
        stats = await leader_stats(conn, server.config.server_id)
        leader_size = int(stats["aof_size"])
        aof.flush()
        local = aof.size
        full = self.force_resync or local == 0 or local > leader_size
        if not full:
            try:
                theirs = (await conn.call_json(b"AOFMD5", b"0", str(local).encode(),
                                               timeout=REPLY_TIMEOUT))["md5"]
            except ReplicationError:  # EOF: the leader's file is shorter than ours
                theirs = ""
            full = theirs != await aof.md5(0, local)
        if full:
            self._check_resync_allowed(stats)
        self.refusal = ""
        pos = 0 if full else local
        await conn.call_json(b"REPLCONF", b"listening-port", str(server.config.port).encode())
        conn.writer.write(encode_command([b"AOF", str(pos).encode()]))
        ok = await conn.status_line()
        if ok != b"+OK\r\n":
            raise ReplicationError(f"AOF {pos} refused: {ok.decode('utf-8', 'replace').strip().lstrip('+-')}")
        self.force_resync = False
        if full:
            self.force_accept = False
        self.connected = True
        self.leader_aof_size = self.leader_size_seen = leader_size
        self._stream_end = pos
        self.leader_id = str(stats["id"])
        self.last_error = ""
        if not full:
            self._remember_leader()  # our file is a prefix of this leader's
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

    def _check_resync_allowed(self, stats: dict[str, Any]) -> None:
        """Raise ResyncRefused when a full resync from this leader would throw away a
        dataset it does not have (`resync_refusal`), unless RESYNC FORCE asked for it."""
        ours = self.server.db.stats()["num_objects"]
        cfg = self.server.config
        reason = resync_refusal(ours, int(stats.get("num_objects") or 0), str(stats["id"]),
                                cfg.leader_id, cfg.resync_min_ratio)
        if not reason:
            return
        if self.force_accept:
            log.warning("RESYNC FORCE: replacing this dataset although %s", reason,
                        extra={"leader": f"{self.host}:{self.port}"})
            return
        raise ResyncRefused(f"full resync refused: {reason}")

    def _remember_leader(self) -> None:
        """Persist the id of the leader our dataset now comes from (the refusal rule's)."""
        cfg = self.server.config
        if self.leader_id and cfg.leader_id != self.leader_id:
            cfg.leader_id = self.leader_id
            try:
                cfg.write_file()
            except OSError as exc:
                log.warning("cannot save the leader id", extra={"error": str(exc)})

    async def _stream(self, conn: LeaderConnection, resync: FullResync | None, started: float) -> None:
        server = self.server
        cfg = server.config
        # The stream is framed like client requests, against the same limits: a hostile
        # leader's `*3000000000` is refused, not allocated. The framer decides per record
        # between RESP and an inline line (a Tile38 AOF written by old versions holds both,
        # streamed verbatim); an inline line may be as long as a whole request. Each record's
        # exact bytes are sliced from `fed` (the bytes given to the framer and not yet
        # consumed), so the local AOF stays a byte-exact prefix of the leader's.
        limits = FrameLimits(cfg.max_request_args, cfg.max_request_size, cfg.max_request_size,
                             cfg.max_request_size)
        framer = RequestReader(limits)
        fed = bytearray()
        while True:
            applied = 0
            while True:
                if fed[:1] == b"\0":
                    # NUL bytes between records (blocks pre-allocated before a crash, Tile38
                    # issue #230; the AOF loader skips them too): kept, and framing restarts
                    # after them at a record boundary.
                    nuls = len(fed) - len(fed.lstrip(b"\0"))
                    resync = await self._keep_bytes(resync, bytes(fed[:nuls]), started)
                    del fed[:nuls]
                    framer = RequestReader(limits)
                    framer.feed(bytes(fed))
                before = framer.buffered
                offset = self._stream_end - before  # leader AOF offset of the next record
                try:
                    item = framer.next()
                except ProtocolError as exc:
                    raise ReplicationError(
                        f"invalid record at leader AOF offset {offset}: {exc.message}") from None
                taken = before - framer.buffered
                raw = bytes(fed[:taken])
                del fed[:taken]
                if item is None:
                    if taken:  # blank lines or `*0`: no command, but the leader's bytes
                        resync = await self._keep_bytes(resync, raw, started)
                    break
                try:
                    resync = await self._apply(resync, item, raw, started)
                except GeoServerError as exc:
                    raise ReplicationError(
                        f"record at leader AOF offset {offset} does not apply: {exc.message}") from None
                applied += 1
                if applied % 256 == 0:
                    await asyncio.sleep(0)  # a big backlog must not starve clients
            if resync is None:
                server.flush_aof()
                self._check_caught_up()
            data = await self._read(conn, resync)
            if not data:
                raise ReplicationError("leader closed the stream")
            self._stream_end += len(data)  # every byte of the stream is the leader's AOF
            self.leader_size_seen = max(self.leader_size_seen, self._stream_end)
            fed += data
            framer.feed(data)

    async def _apply(self, resync: FullResync | None, argv: list[bytes], raw: bytes,
                     started: float) -> FullResync | None:
        """Apply one record through the command table and log its original bytes; returns
        the resync still in progress (None once it was swapped in, or when incremental)."""
        if resync is None:
            dispatch.apply_record(self.server, argv)
            assert self.server.aof is not None
            self.server.aof.append(raw)
            return None
        resync.apply(argv, raw)
        return await self._resync_progress(resync, started)

    async def _keep_bytes(self, resync: FullResync | None, raw: bytes,
                          started: float) -> FullResync | None:
        """Bytes of the leader's AOF that are no command (blank lines between inline records)."""
        if resync is None:
            assert self.server.aof is not None
            self.server.aof.append(raw)
            return None
        resync.write(raw)
        return await self._resync_progress(resync, started)

    async def _resync_progress(self, resync: FullResync, started: float) -> FullResync | None:
        if resync.size >= self.leader_aof_size:
            await self._finish_resync(resync, started)
            return None
        return resync

    async def _read(self, conn: LeaderConnection, resync: FullResync | None) -> bytes:
        """The next bytes of the stream; after `repl-timeout` s of silence, a side-check
        decides between an idle leader (keep waiting) and a dead link (LinkDead)."""
        silent_since = time.monotonic()
        while True:
            timeout = self.server.config.repl_timeout
            left = timeout - (time.monotonic() - silent_since) if timeout > 0 else LAG_POLL
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(conn.reader.read(READ_SIZE), max(0.01, min(LAG_POLL, left)))
            if timeout <= 0 or time.monotonic() - silent_since < timeout:
                await self._poll_leader_size()  # silent: is the leader idle, or are we behind?
                continue
            silent_since = time.monotonic()
            position = resync.size if resync is not None else self.server.aof_size
            why, answered = await self._side_check(position, min(CHECK_TIMEOUT, max(1.0, timeout)))
            if not why:
                continue
            if answered:  # the leader is ahead: what it just wrote may still be in flight
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(conn.reader.read(READ_SIZE), STREAM_GRACE)
            self.server.metrics.link_timeouts.inc()
            raise LinkDead(f"leader link silent for {timeout} s and {why}")

    async def _side_check(self, position: int, timeout: float) -> tuple[str, bool]:
        """SERVER over a second, short-lived connection. Returns ("", True) when the leader
        is idle at `position` (the stream is fine), else what says the link is dead and
        whether the leader answered at all."""
        try:
            conn = await LeaderConnection.open(self.host, self.port, self.password, timeout,
                                               leader_tls(self.server.config))
            try:
                stats = (await conn.call_json(b"SERVER"))["stats"]
            finally:
                conn.close()
            size, leader_id = int(stats["aof_size"]), str(stats["id"])
        except (ReplicationError, OSError, TimeoutError, hiredis.ProtocolError,
                orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return f"the leader does not answer a side-check ({exc or type(exc).__name__})", False
        if leader_id != self.leader_id:
            return f"another leader answers there (id {leader_id})", True
        self.leader_size_seen = max(self.leader_size_seen, size)
        if size != position:
            return f"the leader's aof_size is {size}, this follower applied {position}", True
        self.link_checks += 1
        log.debug("leader idle", extra={"aof_size": size})
        return "", True

    async def _poll_leader_size(self) -> None:
        """SERVER to the leader on a second connection kept for the session, for the lag
        metric: a stalled stream or a follower that cannot keep up shows as a growing lag. A
        failure only closes that connection (the stream's own checks judge the link)."""
        try:
            if self._poll is None:
                self._poll = await LeaderConnection.open(self.host, self.port, self.password, CHECK_TIMEOUT,
                                                         leader_tls(self.server.config))
            stats = (await self._poll.call_json(b"SERVER", timeout=CHECK_TIMEOUT))["stats"]
            if str(stats["id"]) == self.leader_id:
                self.leader_size_seen = max(self.leader_size_seen, int(stats["aof_size"]))
        except (ReplicationError, OSError, TimeoutError, hiredis.ProtocolError,
                orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self._close_poll()

    def _close_poll(self) -> None:
        if self._poll is not None:
            self._poll.close()
            self._poll = None

    async def _finish_resync(self, resync: FullResync, started: float) -> None:
        await resync.finish()
        self._remember_leader()
        self.state = "streaming"
        log.info("full resync complete", extra={
            "aof_size": self.server.aof_size, "seconds": round(time.monotonic() - started, 3),
            "objects": self.server.db.stats()["num_objects"]})
        self._check_caught_up()

    def _check_caught_up(self) -> None:
        if not self.caught_up and self.server.aof_size >= self.leader_aof_size:
            self.caught_up = True
            self.caught_up_once = True
            self.backoff.reset()  # a healthy session: its end is retried after BACKOFF_BASE
            log.info("caught up", extra={"aof_size": self.server.aof_size})
