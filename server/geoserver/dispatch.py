"""Run one command through the table: the checks every path shares, then the command, then
the AOF record. Client connections use `execute`; the AOF loader and the follower stream use
`apply_record`, which runs the same table without the client-facing checks.

A command that must wait for I/O (FOLLOW dials the leader) returns a coroutine; `execute`
then returns an awaitable reply and the connection holds later pipelined commands until it
resolves, so replies stay in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine
from typing import TYPE_CHECKING, Any

from geoserver.commands import TABLE, Command, clients, slices
from geoserver.commands.base import Ctx
from geoserver.errors import (
    AUTH_REQUIRED,
    LOADING,
    OOM,
    READ_ONLY,
    ArityError,
    AuthError,
    CatchingUpError,
    CommandError,
    GeoServerError,
    NotLeaderError,
    unknown_command,
)
from geoserver.lease import attach as attach_lease  # noqa: F401  (Server.__init__ makes its lease)
from geoserver.protocol.output import render, render_error

if TYPE_CHECKING:
    from geoserver.server import Client, Server
    from geoserver.store.database import Database

log = logging.getLogger(__name__)

# Errors a replayed record may raise without meaning corruption (Tile38's commandErrIsFatal).
_HARMLESS_REPLAY_ERRORS = {"key not found", "id not found", "id already exists"}

Reply = bytes | Awaitable[bytes]


def execute(server: Server, client: Client, argv: list[bytes], json: bool) -> Reply:
    """Execute a client's command and return the encoded reply (or an awaitable of it)."""
    start = time.perf_counter_ns()
    server.gate_version += 1  # any command may change what the fast path may run (fastpath.py)
    name = argv[0].decode("utf-8", "replace").lower()
    deadline = None
    cmd = TABLE.get(name)
    try:
        if cmd is None and name.startswith(("config ", "script ")):  # one token (node-tile38)
            argv = [*argv[0].split(None, 1), *argv[1:]]
            name = "config" if name[0] == "c" else "script"
            cmd = TABLE.get(name)
        if name == "timeout":  # TIMEOUT seconds CMD ...: the inner command, with a deadline
            argv, deadline = clients.split_timeout(argv)
            name = argv[0].decode("utf-8", "replace").lower()
            cmd = TABLE.get(name)
        if cmd is None:
            raise unknown_command(argv[0])
        if server.requirepass and not client.authed and not cmd.noauth:
            raise AuthError(AUTH_REQUIRED)
        if server.loading and not cmd.loading_ok:
            raise CommandError(LOADING)
        if not cmd.check_arity(len(argv)):
            raise ArityError(name)
        if cmd.write:
            if (refusal := write_refusal(server, cmd.grows)) is not None:
                raise refusal
        elif cmd.read and server.follower is not None and not server.follower.caught_up_once:
            raise CatchingUpError()
        if cmd.write and (busy := slices.blocker(server.db, name, argv)) is not None:
            return _execute_after(busy, server, client, argv, json)
        client.last_cmd = name
        if server.monitors:
            clients.send_monitor(server, client.peer, argv)
        ctx = Ctx(server, client, json, time.time(), server.db)
        if cmd.write:
            ctx.watch_changes()  # the fence engine gets them after the write
        if deadline is not None:
            return _execute_timed(server, client, cmd, ctx, argv, deadline, start)
        result = cmd.func(ctx, argv)
        if asyncio.iscoroutine(result):
            return _finish_later(server, client, name, start, json, result, ctx, argv)
        ctx.finish_write(argv)
        return _ok(server, client, name, start, json, result)
    except GeoServerError as exc:
        return _error(server, client, name if cmd else "unknown", start, json, exc)
    except Exception as exc:  # a bug in one command must not take the server down
        log.exception("command failed", extra={"command": name})
        return _error(server, client, name, start, json, CommandError(f"internal error: {exc}"))


def write_refusal(server: Server, grows: bool) -> GeoServerError | None:
    """Why this server may not take a write now, or None: the one write gate, shared by the
    command table and any fast path that applies writes without it. A leader given a lease
    (geoserver.lease) takes writes only while it is valid: one clock read, only once given."""
    if server.follower is not None:
        return NotLeaderError()
    if server.read_only:
        return CommandError(READ_ONLY)
    lease = server.lease
    if lease.until is not None and lease.clock() >= lease.until:
        return lease.refusal()
    if server.aof_error:
        return CommandError(server.aof_error)
    if server.over_maxmemory and grows:
        return CommandError(OOM)
    return None


def _execute_timed(server: Server, client: Client, cmd: Command, ctx: Ctx, argv: list[bytes],
                   deadline: float, start: int) -> Reply:
    """A command under TIMEOUT: writes refuse it (Tile38); a read past its deadline replies
    `timeout`, checked when it ends (and inside Lua scripts, commands/clients.DEADLINE)."""
    name, json = cmd.name, ctx.json
    if cmd.write:
        return _error(server, client, name, start, json,
                      CommandError(f"timeout not supported for '{name}'"))
    token = clients.DEADLINE.set(deadline)
    try:
        result = cmd.func(ctx, argv)
        if asyncio.iscoroutine(result):
            return _finish_later(server, client, name, start, json, _timed(result, deadline), ctx, argv)
        clients.check_deadline()
    except GeoServerError as exc:
        return _error(server, client, name, start, json, exc)
    finally:
        clients.DEADLINE.reset(token)
    if ctx.dirty:
        server.record_write(ctx.record or argv)
    return _ok(server, client, name, start, json, result)


async def _timed(pending: Coroutine[Any, Any, Any], deadline: float) -> Any:
    token = clients.DEADLINE.set(deadline)
    try:
        result = await pending
    finally:
        clients.DEADLINE.reset(token)
    if time.monotonic() > deadline:
        raise CommandError(clients.TIMEOUT_ERROR)
    return result


def _ok(server: Server, client: Client, name: str, start: int, json: bool, result: Any) -> bytes:
    elapsed = time.perf_counter_ns() - start
    server.metrics.observe_command(name, elapsed, ok=True)
    return render(result, json, elapsed, client.resp_conn)


def _error(server: Server, client: Client, name: str, start: int, json: bool,
           exc: GeoServerError) -> bytes:
    elapsed = time.perf_counter_ns() - start
    server.metrics.observe_command(name, elapsed, ok=False)
    return render_error(exc, json, elapsed, client.resp_conn)


async def _finish_later(server: Server, client: Client, name: str, start: int, json: bool,
                        pending: Coroutine[Any, Any, Any], ctx: Ctx, argv: list[bytes]) -> bytes:
    try:
        result = await pending
    except GeoServerError as exc:
        return _error(server, client, name, start, json, exc)
    except Exception as exc:
        log.exception("command failed", extra={"command": name})
        return _error(server, client, name, start, json, CommandError(f"internal error: {exc}"))
    finally:
        ctx.finish_write(argv)  # a sliced write (PDEL) is logged when it ends, as one record
        server.gate_version += 1  # what it changed while it ran (fastpath.py)
    return _ok(server, client, name, start, json, result)


async def _execute_after(busy: asyncio.Future, server: Server, client: Client, argv: list[bytes],
                         json: bool) -> bytes:
    """Run a write once the sliced write on its key has ended (commands/slices.py `hold`)."""
    await asyncio.shield(busy)
    reply = execute(server, client, argv, json)
    return reply if isinstance(reply, bytes) else await reply


def apply_record(server: Server, argv: list[bytes], db: Database | None = None) -> None:
    """Replay one AOF/replication record into `db` (default: the server's dataset).
    Raises CommandError for a record that cannot apply."""
    name = argv[0].decode("utf-8", "replace").lower()
    cmd = TABLE.get(name)
    if cmd is None:
        raise unknown_command(argv[0])
    if not cmd.write:
        raise CommandError(f"'{name}' is not a write command")
    if not cmd.check_arity(len(argv)):
        raise ArityError(name)
    server.gate_version += 1  # a leader's SETHOOK, FLUSHDB... (fastpath.py)
    ctx = Ctx(server, None, True, time.time(), db if db is not None else server.db)
    if not server.loading and server.fences.active:  # a follower's channels and live fences
        ctx.changes = []
    try:
        cmd.func(ctx, argv)
    except CommandError as exc:
        if exc.message not in _HARMLESS_REPLAY_ERRORS:
            raise
    ctx.finish_write(None)
