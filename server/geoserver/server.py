"""The server: state owned by one asyncio loop, and the client connection protocol.

Data flow: bytes -> RequestReader / HTTP -> argv -> dispatch.execute (the command table)
-> store -> AOF append -> replies. After each batch of pipelined commands the AOF is flushed
(and fsynced with `always`) before the batch's replies are written, in one transport.write.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import os
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

import psutil
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from geoserver import dispatch, fastpath
from geoserver.aof.loader import load_aof, migrate_legacy
from geoserver.aof.log import AofLog
from geoserver.aof.shrink import ShrinkState
from geoserver.binary import raw
from geoserver.commands import clients, slices
from geoserver.commands.pubsub import subscribed
from geoserver.config import ServerConfig
from geoserver.delivery import HookSink, MemorySink
from geoserver.delivery.sink import DurableSink
from geoserver.errors import GeoServerError, ProtocolError
from geoserver.fence.engine import FenceEngine, LiveFence
from geoserver.fence.model import Fence
from geoserver.limits import OutputGuard, client_budget, frame_limits, idle_reason, request_reason
from geoserver.metrics import ServerMetrics
from geoserver.protocol import http
from geoserver.protocol.framing import RequestReader
from geoserver.protocol.output import Chunks, render_error
from geoserver.protocol.resp import encode_command
from geoserver.pubsub import Hub, Subscriber
from geoserver.security import password_matches
from geoserver.store.database import Database
from geoserver.tls import HANDSHAKE_TIMEOUT, ServerTls

if TYPE_CHECKING:
    from geoserver.replication.follower import Follower
    from geoserver.replication.leader import AofStream

log = logging.getLogger(__name__)

EXPIRE_INTERVAL = 0.1
HIGH_WATER = 4 << 20  # pause reading (and a pipelined batch) while unsent replies exceed this
SWEEP_INTERVAL = 1.0  # how often output-buffer soft limits and timeouts are checked
LINGER = 1.0  # seconds a connection closed for a protocol error is drained before closing


class Server:
    # Inputs of the fast path's cached gate (fastpath.py): setting one invalidates it.
    loading = fastpath.gate_input("loading")
    follower = fastpath.gate_input("follower")
    over_maxmemory = fastpath.gate_input("over_maxmemory")
    aof_error = fastpath.gate_input("aof_error")

    def __init__(self, config: ServerConfig) -> None:
        self.gate_version = 0  # moves with anything the fast path's gate depends on
        self.config = config
        self.db = Database()
        self.aof: AofLog | None = None
        self.metrics = ServerMetrics(self, fastpath.NAMES)
        self.lease = dispatch.attach_lease(self)  # leader lease: writes only while valid (geoserver.lease)
        self.clients: set[Client] = set()
        self.monitors: set[Client] = set()  # connections in MONITOR (commands/clients.py)
        self._client_ids = itertools.count(1)  # CLIENT LIST ids, as Tile38 numbers them
        self.live_streams: set[AofStream] = set()
        self.follower: Follower | None = None
        # Where fence events for hooks go (geoserver.delivery): the in-memory twin until the
        # leader starts its durable queue; a follower never delivers.
        self.hook_sink: HookSink = MemorySink()
        self.fences = FenceEngine(self)  # live fences, hooks, channels (geoserver.fence)
        self.pubsub = Hub()
        self.delivery: DurableSink | None = None  # queue.db and its worker, opened at start
        self.shrink = ShrinkState()
        self.loading = False
        self.started = time.time()
        self.resyncs = 0
        self.over_maxmemory = False  # sampled by the background loop, read per write
        self.aof_error = ""  # set while AOF writes fail: writes are refused (MISCONF)
        self._tasks: set[asyncio.Task] = set()
        self._pending_replies: list[tuple[Client, bytes, int]] = []
        self._server: asyncio.base_events.Server | None = None
        self.tls: ServerTls | None = None  # set at start when tls-cert-file is configured
        self._tls_server: asyncio.base_events.Server | None = None  # --tls-port's listener
        self._process = psutil.Process()
        self.maxclients = config.maxclients  # lowered at start when descriptors are short
        self._refusals_unlogged = 0
        self._refusal_logged_at = 0.0

    # --- settings that commands read -------------------------------------------------
    @property
    def requirepass(self) -> str:
        return self.config.requirepass

    @property
    def read_only(self) -> bool:
        return self.config.read_only

    @property
    def aof_size(self) -> int:
        return self.aof.size if self.aof else 0

    def rss_bytes(self) -> int:
        return self._process.memory_info().rss

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.config
        cfg.dir.mkdir(parents=True, exist_ok=True)
        cfg.load_file()
        # queue.db, with what a crashed run queued; delivery starts below only if this server
        # leads (docs/geofencing-endpoints.md)
        self.delivery = DurableSink(cfg)
        self.maxclients, warning = client_budget(cfg.maxclients)
        if warning:
            log.warning(warning)
        loop = asyncio.get_running_loop()
        if cfg.tls_cert_file or cfg.tls_key_file:  # docs/security.md#tls
            try:
                self.tls = ServerTls(cfg)
            except (OSError, ValueError) as exc:
                raise SystemExit(f"geoserver: cannot set up TLS: {exc}") from None
        tls_here = self.tls is not None and not cfg.tls_port
        tls_kw = {"ssl": self.tls.context, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT} if self.tls else {}
        if cfg.unix_socket:  # tile38-server -s
            with contextlib.suppress(FileNotFoundError):
                os.unlink(cfg.unix_socket)
            self._server = await loop.create_unix_server(lambda: Client(self), cfg.unix_socket,
                                                         backlog=1024)
        else:
            self._server = await loop.create_server(
                lambda: Client(self), cfg.host or None, cfg.port, reuse_address=True, backlog=1024,
                **(tls_kw if tls_here else {}),
            )
        log.info("listening", extra={"host": cfg.host, "port": cfg.port, "id": cfg.server_id,
                                     "tls": tls_here, "socket": cfg.unix_socket})
        if self.tls is not None:
            if cfg.tls_port:
                self._tls_server = await loop.create_server(
                    lambda: Client(self), cfg.host, cfg.tls_port, reuse_address=True, backlog=1024,
                    **tls_kw)
                log.info("listening", extra={"host": cfg.host, "port": cfg.tls_port, "tls": True})
            self.spawn(self.tls.watch(), "tls-reload")
        # The dataset is millions of small acyclic objects: the default GC thresholds would
        # rescan them all every few thousand allocations (pauses that grow with the data).
        gc.set_threshold(100_000, 50, 1000)
        if cfg.appendonly:
            await self._load()
        # only now: a DELHOOK replayed from the AOF must not drop events of the hook's later life
        self.hook_sink = self.delivery
        gc.collect()
        gc.freeze()  # what was loaded is long-lived; keep it out of future collections
        self.spawn(self._expire_loop(), "expiry")
        self.spawn(self._fsync_loop(), "fsync")
        self.spawn(self._sweep_clients(), "client-limits")
        self.spawn(self._autogc_loop(), "autogc")
        if cfg.follow_host:
            self.start_following(cfg.follow_host, cfg.follow_port)
        else:
            self.delivery.start_delivering()  # only the leader fires hooks

    async def _load(self) -> None:
        path = self.config.aof_path
        self.loading = True
        started = time.monotonic()
        try:
            migrate_legacy(self.config.dir, path)  # Tile38's pre-RESP `aof` file, once
            if path.exists() and path.stat().st_size:
                log.info("loading AOF", extra={"path": str(path), "bytes": path.stat().st_size})
                await load_aof(path, lambda argv: dispatch.apply_record(self, argv),
                               lambda done, total: log.info(
                                   "loading AOF", extra={"done": done, "total": total}),
                               fastpath.replayer(self))
            self.aof = AofLog(path, self.config.appendfsync)
        finally:
            self.loading = False
        log.info("AOF ready", extra={"aof_size": self.aof_size,
                                     "seconds": round(time.monotonic() - started, 3)})

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def stop(self) -> None:
        """Stop accepting, close clients, flush and fsync the AOF."""
        if self._server is not None:
            self._server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        if self.follower is not None:
            await self.follower.stop()
        for task in list(self._tasks):
            task.cancel()
        for client in list(self.clients):
            client.close()
        self.cut_replication_streams("server shutting down")
        if self.delivery is not None:
            await self.delivery.close()
        if self.aof is not None:
            self.aof.close()
        log.info("stopped")

    def reload_tls(self) -> None:
        """SIGHUP: re-read the TLS certificate, key and CA files (docs/security.md#tls)."""
        if self.tls is None:
            log.info("SIGHUP: TLS is not configured, nothing to reload")
        else:
            self.tls.reload("SIGHUP")

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception(),
                      extra={"task": task.get_name()})

    # --- writes ------------------------------------------------------------------------
    def record_write(self, argv: list[bytes]) -> None:
        """Append a successful mutation to the AOF (flushed before the reply goes out)."""
        if self.aof is not None:
            self.aof.append(encode_command(argv))

    def flush_aof(self) -> bool:
        """Write buffered AOF records; False when the write failed. Then writes are refused
        with MISCONF until a later flush succeeds (the fsync loop retries every second), and
        replies of batches whose records are not in the file are never sent (`_commit`)."""
        if self.delivery is not None:
            self.delivery.queue.commit()  # hook events reach queue.db before the writes' replies
        if self.aof is None:
            return True
        try:
            self.aof.flush()
        except OSError as exc:
            if not self.aof_error:
                log.error("AOF write failed; refusing writes until it works again",
                          extra={"error": str(exc)})
            self.aof_error = f"MISCONF Errors writing to the AOF file: {exc.strerror or exc}"
            return False
        if self.aof_error:
            log.warning("AOF writes work again")
            self.aof_error = ""
        return True

    def queue_reply(self, client: Client, data: bytes, needs: int) -> None:
        """Send `data` once the AOF file holds `needs` bytes (0: it depends on no record).

        Group commit: replies wait for one AOF write (and, with `appendfsync always`, one
        fsync) shared by every client served in the same loop iteration, one syscall per
        iteration instead of one per client batch, as Redis does before it sleeps. Without an
        AOF too: the replies of a loop iteration are written after all its reads (one
        delivery-queue commit for them, and fewer, fuller loop iterations: SET -P1 22.7 -> ~11
        us of server CPU per request, docs/benchmarks.md)."""
        self._pending_replies.append((client, data, needs))
        if len(self._pending_replies) == 1:
            asyncio.get_running_loop().call_soon(self._commit)

    def _commit(self) -> None:
        pending, self._pending_replies = self._pending_replies, []
        self.flush_aof()
        written = self.aof.flushed if self.aof is not None else 0
        for client, data, needs in pending:
            if client.transport is None or client.transport.is_closing():
                continue
            if needs <= written:
                client.write_now(data)
            else:  # its writes did not reach the file: close instead of acknowledging them
                client.close()

    def refuse_client(self, client: Client) -> None:
        """Over maxclients: an error reply and close, logged at most once a second."""
        assert client.transport is not None
        self.metrics.clients_refused += 1
        client.transport.write(b"-ERR max number of clients reached\r\n")
        client.close()
        self._refusals_unlogged += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= 1.0:
            log.warning("connections refused: max number of clients reached", extra={
                "maxclients": self.maxclients, "refused": self._refusals_unlogged, "peer": client.peer})
            self._refusals_unlogged, self._refusal_logged_at = 0, now

    async def _sweep_clients(self) -> None:
        """Once a second: output buffers held over their soft limit, idle and auth timeouts.
        A CONFIG SET of `maxclients` or the output limits takes effect here."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.maxclients = min(self.config.maxclients, client_budget(self.config.maxclients)[0])
            normal, replica = self.config.output_limit("normal"), self.config.output_limit("replica")
            pubsub = self.config.output_limit("pubsub")
            now = time.monotonic()
            for client in list(self.clients):
                client.output.limit = (replica if client.stream is not None
                                       else pubsub if client.events_only else normal)
                client.check_limits(now)

    def start_following(self, host: str, port: int) -> None:
        """Become a follower of host:port (persisted so a restart resumes following)."""
        from geoserver.replication.follower import Follower

        if self.follower is not None:
            if (self.follower.host, self.follower.port) == (host, port):
                return
            self.follower.cancel()
        self.config.follow_host, self.config.follow_port = host, port
        self.config.write_file()
        self.cut_replication_streams("this server became a follower")
        if self.delivery is not None:
            self.delivery.stop_delivering()  # its queue stays for when it leads again
        self.follower = Follower(self, host, port)
        self.follower.start()

    def stop_following(self) -> None:
        """FOLLOW no one: keep the data, become a leader."""
        if self.follower is not None:
            self.follower.cancel()
            self.follower = None
        self.config.follow_host, self.config.follow_port = "", 0
        if self.delivery is not None:
            self.delivery.start_delivering()
        self.config.write_file()

    def cut_replication_streams(self, reason: str) -> None:
        for stream in list(self.live_streams):
            stream.close(reason)

    async def _expire_loop(self) -> None:
        """Every 100 ms: sample memory against `maxmemory`, and delete expired objects, logging
        each delete as Tile38 does (followers wait for the leader's deletes instead)."""
        from geoserver.commands.base import Ctx
        from geoserver.commands.keys import delete_object

        while True:
            await asyncio.sleep(EXPIRE_INTERVAL)
            try:
                self.sample_memory()
                now = time.time()
                if self.loading:
                    continue
                if self.follower is not None:
                    self.db.prune_expiry(now)  # the leader's DELs remove the objects
                    continue
                ctx = Ctx(self, None, True, now, self.db)
                ctx.watch_changes()
                expired = list(self.db.due_expirations(now))
                for key, oid in expired:
                    if delete_object(ctx, key, oid):
                        self.metrics.expired_keys += 1
                        self.record_write([b"del", raw(key), raw(oid)])  # exact bytes (binary.py)
                ctx.finish_write(None)  # each delete was logged above, as its own DEL
                hooks = self.fences.expired_records(now)  # logged, as Tile38: followers drop them too
                for record in hooks:
                    dispatch.apply_record(self, record)
                    self.record_write(record)
                if expired or hooks:
                    self.flush_aof()
            except Exception:  # one bad pass must not end expiry for good
                log.exception("expiry pass failed")

    def sample_memory(self) -> None:
        """Compare RSS with `maxmemory`: every 100 ms, and at once when CONFIG SET changes it
        (a client that lowers it expects the next write to see it, as Tile38's tests do)."""
        limit = self.config.maxmemory
        self.over_maxmemory = bool(limit) and self.rss_bytes() > limit

    async def _autogc_loop(self) -> None:
        """Tile38's autogc (watchAutoGC): with `autogc` N > 0, checked once a second, a full
        collection every N seconds, then the freed heap handed back to the OS (glibc's
        malloc_trim, for Go's debug.FreeOSMemory). SERVER EXT's last_gc_time_seconds shows it."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            every = self.config.autogc
            if every <= 0 or time.monotonic() - last < every:
                continue
            before = self.rss_bytes()
            gc.collect()
            with contextlib.suppress(OSError, AttributeError):
                await asyncio.to_thread(ctypes.CDLL("libc.so.6").malloc_trim, 0)
            last = time.monotonic()
            log.debug("autogc", extra={"rss_before": before, "rss_after": self.rss_bytes()})

    async def _fsync_loop(self) -> None:
        """Once a second: retry a failed AOF write, and fsync for `everysec`."""
        while True:
            await asyncio.sleep(1.0)
            aof = self.aof
            if aof is None:
                continue
            try:
                if self.flush_aof() and aof.fsync == "everysec":
                    await aof.sync()
            except OSError as exc:
                log.error("AOF fsync failed", extra={"error": str(exc)})


class Client(asyncio.Protocol):
    """One connection: RESP (pipelined, inline) or HTTP, sniffed from the first bytes.

    Limits (docs/security.md): requests are framed against `limits.frame_limits` (smaller
    before AUTH); a pipelined batch stops executing while the unsent output is above the
    transport's high-water mark and resumes when it drains; a client over its output-buffer
    limit, idle past `timeout` or unauthenticated past `auth-timeout` is disconnected.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.id = next(server._client_ids)  # CLIENT LIST / ID / KILL ID
        self.name = ""  # CLIENT SETNAME
        self.last_cmd = ""  # CLIENT LIST cmd=
        self.monitoring = False  # MONITOR: no more commands, input ends the connection
        self._authed = False
        self.reader = RequestReader(frame_limits(server.config, False))
        self.json = server.config.json_output
        self.resp_conn = True
        self.http: http.HttpRequestParser | None = None
        self.replica_port: int | None = None  # set by REPLCONF listening-port
        self.replica_ip: str | None = None
        self.aof_generation: int | None = None  # AOF file generation at SERVER/AOFMD5
        self._waiting = False  # a command is awaiting I/O; later ones wait their turn
        self._aof_mark = 0  # AOF size when the current batch started
        self._write_paused = False  # the transport's buffer is above the high-water mark
        self._drained: asyncio.Future[None] | None = None  # awaited by slices.send
        self.pending_output = 0  # bytes of a reply slices.send has not handed to the transport
        self.stream: AofStream | None = None  # set while this connection streams the AOF
        self.closing = False
        self.peer = ""
        self._sniffed = False
        self.connected_at = self.last_active = time.monotonic()
        self.request_since = self.connected_at  # when the request being received began arriving
        self.output = OutputGuard(server.config.output_limit("normal"))
        self._batch_held = False  # a pipelined batch stopped at the high-water mark
        self.lingering = False  # close after a protocol error: FIN first, then a short drain
        self._eof_sent = False
        self.subscriber: Subscriber | None = None  # after SUBSCRIBE / PSUBSCRIBE
        self.live: LiveFence | None = None  # after NEARBY|WITHIN|INTERSECTS ... FENCE
        self.http_streaming = False  # an HTTP response sent as chunks, one event each
        self.ws: FrameProtocol | None = None  # an HTTP request upgraded to a WebSocket (Tile38)
        self.fast_gate = fastpath.NO_GATE  # which requests fastpath may run (fastpath.modes)

    @property
    def authed(self) -> bool:
        return self._authed

    @authed.setter
    def authed(self, value: bool) -> None:
        """AUTH lifts the pre-auth framing limits for the requests that follow."""
        self._authed = value
        self.reader.limits = frame_limits(self.server.config, value)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else ""
        server = self.server
        server.metrics.connections_received += 1
        if len(server.clients) >= server.maxclients:
            server.refuse_client(self)
            return
        server.clients.add(self)
        transport.set_write_buffer_limits(high=HIGH_WATER)
        if not clients.peer_is_loopback(self.peer) and clients.protected(server):
            transport.write(clients.DENIED)  # Tile38's protected mode
            self.close()
        clients.set_keepalive(transport, server.config.keepalive)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.clients.discard(self)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)  # a reply being sent in pieces stops (slices.send)
        if self.subscriber is not None:
            self.server.pubsub.drop(self.subscriber)
        if self.live is not None:
            self.server.fences.remove_live(self.live)
        if self in self.server.monitors or self.live is not None:  # others may run fast again
            self.server.gate_version += 1
        self.server.monitors.discard(self)
        if self.stream is not None:
            self.stream.close("follower disconnected")

    def pause_writing(self) -> None:
        if self.stream is not None:
            self.stream.pause_writing()
        else:
            self._write_paused = True
            self._update_reading()

    def resume_writing(self) -> None:
        if self.stream is not None:
            self.stream.resume_writing()
        else:
            self._write_paused = False
            self.request_since = time.monotonic()  # its reading was paused by us, not by it
            if self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
            self._update_reading()
            if self._batch_held:  # the batch that stopped at the high-water mark goes on
                self._batch_held = False
                self._continue()

    @property
    def write_paused(self) -> bool:
        return self._write_paused

    def drained(self) -> asyncio.Future[None]:
        """Done once the transport's buffer is back under its low-water mark (or it closes)."""
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()
        return self._drained

    def _update_reading(self) -> None:
        """Read only while the peer takes our replies and no command awaits I/O."""
        if self.transport is None or self.closing:
            return
        if self._write_paused or self._waiting:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def disconnect(self, reason: str) -> None:
        """Close a connection the server refuses to keep, with a log line saying why."""
        log.warning("client disconnected", extra={"peer": self.peer, "reason": reason})
        self.server.metrics.clients_disconnected += 1
        if self.transport is not None:
            self.transport.abort()  # its unsent replies are what it is dropped for
        self.closing = True

    def check_limits(self, now: float) -> None:
        """The periodic sweep: output buffer held over the soft limit, idle and auth timeouts."""
        if self.closing or self.transport is None:
            return
        reason = self.output.check(self.transport.get_write_buffer_size() + self.pending_output, now)
        if reason or self._waiting or self.stream is not None or self.events_only:  # never idle
            pass
        elif self.http is not None:  # closing is set once its request is complete
            reason = request_reason(self.server.config, True, self.connected_at, now)
        else:
            config = self.server.config
            reason = idle_reason(config, self._authed, self.connected_at, self.last_active, now)
            if not reason and self.reader.buffered and not (self._batch_held or self._write_paused):
                reason = request_reason(config, False, self.request_since, now)  # a request half in
        if reason:
            self.disconnect(reason)

    def data_received(self, data: bytes) -> None:
        if self.ws is not None:  # a WebSocket event stream: only its close frame matters
            self._ws_received(data)
            return
        if self.closing:
            return
        self.last_active = now = time.monotonic()
        if idle := not self.reader.buffered:
            self.request_since = now
        if self.stream is not None:
            self.stream.close("follower sent data on the stream")  # Tile38: input ends a stream
            return
        if self.monitoring:
            clients.monitor_input(self, data)
            return
        if not self._sniffed:
            self._sniffed = True
            if http.looks_like_http(data):
                if not self.server.config.http_transport:  # --http-transport no
                    self.close()
                    return
                self.resp_conn = False
                self.json = True
                cfg = self.server.config
                self.http = http.HttpRequestParser(cfg.max_inline_size, cfg.max_request_size,
                                                   cfg.requirepass, cfg.preauth_max_bulk)
        if self.http is not None:
            self._http_received(data)
            return
        if idle and not self._waiting and fastpath.ENABLED:  # straight from the read (every -P1 request)
            held = self.transport.get_write_buffer_size()  # type: ignore[union-attr]
            replies, done, logged = fastpath.serve(self, data, max(0, HIGH_WATER - held))
            hard = self.output.limit.hard
            if done == len(data) and not (hard and held + len(replies) > hard):
                server = self.server
                server.queue_reply(self, replies, server.aof.size if logged else 0)  # type: ignore[union-attr]
                return
            if done:  # the rest (or the output limits) through the reader, replies in order
                self.reader.feed(data[done:])
                self._process([replies], logged)
                return
        self.reader.feed(data)
        if not self._waiting:
            self._process()

    def _process(self, out: list[bytes] | None = None, logged: bool = False) -> None:
        """Run every complete buffered command; stop at one that must wait for I/O, and while
        the unsent output is above the high-water mark (the rest runs once it drains).
        `out`: replies already produced for this batch (fastpath.serve), `logged` whether
        their writes were appended to the AOF (then the batch's reply waits for it)."""
        assert self.transport is not None
        self._aof_mark = -1 if logged else self.server.aof_size
        if out is None:
            out = []
        held = self.transport.get_write_buffer_size() + sum(map(len, out))
        hard = self.output.limit.hard
        if hard and held > hard:
            self.disconnect(f"output buffer {held} bytes over the hard limit {hard}")
            return
        if out and held > HIGH_WATER:  # fastpath.serve's replies alone are over the mark
            self._batch_held = True  # write_now or resume_writing runs the rest
            self._send(out)
            return
        fast = fastpath.ENABLED
        try:
            while True:
                if fast:  # the hot forms run in C++ up to the first other request (fastpath.py)
                    data = fastpath.run(self, max(0, HIGH_WATER - held))
                    if data:
                        out.append(data)
                        held += len(data)
                        if hard and held > hard:
                            self.disconnect(f"output buffer {held} bytes over the hard limit {hard}")
                            return
                        if held > HIGH_WATER:
                            self._batch_held = True
                            break
                        if not self.reader.buffered:  # all of it ran in C++ (every -P1 request)
                            break
                if (argv := self.reader.next()) is None:
                    break
                self.request_since = self.last_active  # what is left began in the latest read
                if self.live is not None:  # a live fence takes no commands: input ends it
                    self.closing = True
                    break
                if self.subscriber is not None:
                    reply = subscribed(self, argv)
                else:
                    reply = dispatch.execute(self.server, self, argv, self.json)
                if not isinstance(reply, bytes):
                    self._send(out)
                    self._wait_for(reply)
                    return
                out.append(reply)
                held += len(reply)
                if hard and held > hard:
                    self.disconnect(f"output buffer {held} bytes over the hard limit {hard}")
                    return
                if self.closing or self.stream is not None or self.monitoring:
                    break
                if held > HIGH_WATER:
                    self._batch_held = True  # write_now or resume_writing runs the rest
                    break
        except ProtocolError as exc:
            out.append(render_error(exc, self.json, 0, True))
            self.lingering = True
            self.closing = True
        self._send(out)

    def _wait_for(self, reply: Awaitable[bytes]) -> None:
        assert self.transport is not None
        self._waiting = True
        self._update_reading()

        async def finish() -> None:
            data = await reply
            if isinstance(data, Chunks):  # a big reply: written in pieces, later commands wait
                await slices.send(self, data)
                data = b""
            self._waiting = False
            if self.transport is None or self.transport.is_closing():
                return
            hard = self.output.limit.hard
            held = self.transport.get_write_buffer_size() + len(data)
            if hard and held > hard:
                self.disconnect(f"output buffer {held} bytes over the hard limit {hard}")
                return
            self._send([data])
            if not self.closing:
                self._update_reading()
                self._process()

        self.server.spawn(finish(), "client-wait")

    def _send(self, out: list[bytes], close: bool = False) -> None:
        if close:
            self.closing = True
        if not out and not self.closing:
            return  # nothing to send (a read that completed no request)
        data = out[0] if len(out) == 1 else b"".join(out)
        server = self.server  # group commit, with or without an AOF (Server.queue_reply)
        size = server.aof.size if server.aof is not None else 0
        server.queue_reply(self, data, size if size != self._aof_mark else 0)  # waits only if it logged

    def write_now(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self._eof_sent:
            return
        if data:
            transport.write(data)
        if self.stream is not None:
            self.stream.start()
        elif self.closing:
            if self.lingering and transport.can_write_eof():
                # After a protocol error: FIN after the reply, and read (discarding) for a
                # moment, so the reply is not lost to a reset for the request's unread tail.
                transport.write_eof()
                self._eof_sent = True
                asyncio.get_running_loop().call_later(LINGER, transport.close)
            else:
                transport.close()
        elif self._batch_held and not self._write_paused:
            self._batch_held = False
            asyncio.get_running_loop().call_soon(self._continue)

    def _continue(self) -> None:
        if not self._waiting and not self.closing and self.transport is not None:
            self._process()

    # --- event streams: subscribers and live fences ---------------------------------------
    @property
    def events_only(self) -> bool:
        """A subscriber or live fence: bounded by the pubsub output class, never idle."""
        return self.subscriber is not None or self.live is not None

    def start_subscriber(self, json: bool) -> Subscriber:
        if self.subscriber is None:
            self.subscriber = Subscriber(lambda data, j=json: self.send_raw(self.frame(data, j)), json)
            self.output.limit = self.server.config.output_limit("pubsub")
        return self.subscriber

    def start_live(self, fence: Fence) -> None:
        self.live = self.server.fences.add_live(self, fence)
        self.output.limit = self.server.config.output_limit("pubsub")

    def frame(self, data: bytes, json: bool) -> bytes:
        """Frame one event or message: JSON as a bulk string on RESP connections (Tile38), as
        one line of a chunked response on HTTP; RESP values as they are."""
        if not json:
            return data
        if self.ws is not None:
            return bytes(self.ws.send_data(data.decode("utf-8", "replace"), fin=True))
        if self.resp_conn:
            return b"$%d\r\n%s\r\n" % (len(data), data)
        return http.chunk(data + b"\r\n") if self.http_streaming else data + b"\r\n"

    def send_raw(self, data: bytes) -> None:
        """Write an event now; a client over its hard output limit is disconnected."""
        transport = self.transport
        if transport is None or transport.is_closing() or self._eof_sent:
            return
        hard = self.output.limit.hard
        held = transport.get_write_buffer_size() + len(data)
        if hard and held > hard:
            self.disconnect(f"output buffer {held} bytes over the hard limit {hard}")
            return
        transport.write(data)

    def send_event(self, payload: bytes) -> None:
        """One live-fence event (Tile38's JSON, whatever the connection's output mode)."""
        self.send_raw(self.frame(payload, True))

    def _ws_received(self, data: bytes) -> None:
        """Input on a WebSocket stream: a close frame (or garbage) ends it; pings get pongs."""
        assert self.ws is not None and self.transport is not None
        self.ws.receive_bytes(data)
        try:
            for frame in self.ws.received_frames():
                if frame.opcode is Opcode.PING:
                    self.send_raw(bytes(self.ws.pong(frame.payload)))
                elif frame.opcode is Opcode.CLOSE:
                    self.send_raw(bytes(self.ws.close(CloseReason.NORMAL_CLOSURE)))
                    self.transport.close()
                    return
        except ParseFailed:
            self.transport.close()

    def _http_received(self, data: bytes) -> None:
        assert self.http is not None and self.transport is not None
        try:
            request = self.http.feed(data)
        except GeoServerError as exc:
            self.transport.write(http.response(400, http.json_error_body(exc.message)))
            self.close()
            return
        if request is None:
            return
        self.closing = True
        if request.password is not None:
            self.authed = password_matches(request.password, self.server.requirepass)
        self.server.spawn(self._http_reply(request), "http")

    async def _http_reply(self, request: http.HttpRequest) -> None:
        assert self.transport is not None
        status, content_type, body = await http.handle(self, request)
        if not self.server.flush_aof():
            status, body = 500, http.json_error_body(self.server.aof_error)
        accept = http.websocket_accept(request)
        if accept is not None:  # ws://host/NEARBY+...+FENCE+...: a text frame per reply line / event
            self.ws = FrameProtocol(client=False, extensions=[])
            lines = [line for line in body.split(b"\r\n") if line.strip()]
            self.transport.write(accept + b"".join(self.frame(line, True) for line in lines))
            if not self.events_only:
                self.transport.write(bytes(self.ws.close(CloseReason.NORMAL_CLOSURE)))
                self.transport.close()
            return
        cors = http.allowed_origin(request, self.server.config.cors_origins)
        if self.events_only and status == 200:  # SUBSCRIBE / FENCE: a chunked event stream
            head = http.stream_head(content_type, cors)
            self.transport.write(head + http.chunk(body.rstrip(b"\r\n") + b"\r\n"))
            self.http_streaming = True
            return
        self.transport.write(http.response(status, body, content_type, request.method == "HEAD", cors))
        self.transport.close()


def run(config: ServerConfig) -> None:
    """Run a server until SIGINT/SIGTERM, with uvloop when available."""
    import signal

    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux/macOS
        runner = asyncio.run

    async def main() -> None:
        server = Server(config)
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
        await server.start()
        if config.metrics_addr:  # with tls-metrics yes: TLS, the client port's live context
            host, _, port = config.metrics_addr.rpartition(":")
            tls = {"ssl": server.tls.context, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT} \
                if server.tls is not None and config.tls_metrics == "yes" else {}
            await loop.create_server(lambda: http.MetricsClient(server), host or "0.0.0.0", int(port),
                                     **tls)
            log.info("metrics listening", extra={"addr": config.metrics_addr, "tls": bool(tls)})
        serving = asyncio.create_task(server.serve_forever())
        await stop.wait()
        serving.cancel()
        await server.stop()

    runner(main())
