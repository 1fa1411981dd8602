"""Scripting commands as Tile38 defines them (internal/server/scripts.go): EVAL, EVALSHA (may
write), EVALRO, EVALROSHA (read only), EVALNA, EVALNASHA (non-atomic in Tile38; every command
here runs on the one event loop, so all three run a script without interleaving), and SCRIPT
LOAD|EXISTS|FLUSH. The Lua side is geoserver.scripting.

A script's `tile38.call` runs through the one command table with the checks Tile38 applies in
scripts: only its in-script commands, writes refused on a follower, with READONLY yes and under
EVALRO, reads gated on a catching-up follower, TIMEOUT for reads only. The script command is not
logged; each write it makes reaches the AOF (and followers) as its own record, as in Tile38.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from geoserver.commands import clients
from geoserver.commands.base import TABLE, Args, Ctx, Flag, command
from geoserver.errors import (
    CATCHING_UP,
    NOT_LEADER,
    READ_ONLY,
    ArityError,
    CommandError,
    GeoServerError,
    NotLeaderError,
    invalid_argument,
)
from geoserver.scripting import ScriptEngine, ScriptError, ScriptReplyError, to_json, to_resp

if TYPE_CHECKING:
    from geoserver.server import Server

log = logging.getLogger(__name__)
NOT_SUPPORTED = "command not supported in scripts"
# Tile38's commandInScript: the commands a script may call.
IN_SCRIPT = frozenset({"set", "fset", "del", "pdel", "drop", "expire", "rename", "renamenx",
                       "persist", "ttl", "stats", "scan", "nearby", "within", "intersects",
                       "search", "bounds", "get", "fget", "jget", "jset", "jdel", "type", "keys",
                       "exists", "fexists", "test", "server"})

_engines: weakref.WeakKeyDictionary[Server, ScriptEngine] = weakref.WeakKeyDictionary()


def engine(server: Server) -> ScriptEngine:
    """The server's Lua runtime and script cache, made on first use."""
    found = _engines.get(server)
    if found is None:
        found = _engines[server] = ScriptEngine()
    found.time_limit = float(server.config.script_time_limit)
    return found


def script_call(server: Server, mode: str, argv: list[bytes]) -> tuple[bool, Any]:
    """One `tile38.call` from a script: (True, RESP-shaped result) or (False, error text)."""
    deadline = None
    try:
        name = argv[0].decode("utf-8", "replace").lower()
        if name == "timeout":
            argv, deadline = clients.split_timeout(argv)
            name = argv[0].decode("utf-8", "replace").lower()
        cmd = TABLE.get(name)
        if cmd is None or name not in IN_SCRIPT:
            return False, NOT_SUPPORTED
        if cmd.write:
            if mode == "ro":
                return False, READ_ONLY
            if server.follower is not None:
                return False, NOT_LEADER
            if server.read_only:
                return False, READ_ONLY
            if (lapsed := server.lease.refusal()) is not None:  # the leader lease (geoserver.lease)
                return False, lapsed.message
            if server.aof_error:
                return False, server.aof_error
            if deadline is not None:
                return False, f"timeout not supported for '{name}'"
        elif server.follower is not None and not server.follower.caught_up_once:
            return False, CATCHING_UP
        if not cmd.check_arity(len(argv)):
            return False, ArityError(name).resp_message()
        if server.monitors:
            clients.send_monitor(server, "lua", argv)
        ctx = Ctx(server, None, False, time.time(), server.db)
        if cmd.write:
            ctx.watch_changes()
        token = clients.DEADLINE.set(deadline) if deadline is not None else None
        try:
            result = cmd.func(ctx, argv)
            if deadline is not None:
                clients.check_deadline()
        finally:
            if token is not None:
                clients.DEADLINE.reset(token)
        ctx.finish_write(argv)  # its own AOF record and fence events, as in Tile38
        return True, result
    except GeoServerError as exc:
        return False, exc.message
    except Exception as exc:  # a bug in one command must not escape into Lua as a traceback
        log.exception("command failed in a script", extra={"command": argv[0]})
        return False, f"internal error: {exc}"


def _eval(ctx: Ctx, argv: list[bytes], is_sha: bool, mode: str) -> Any:
    server = ctx.server
    if mode == "rw":
        if server.follower is not None:
            raise NotLeaderError()
        if server.read_only:
            raise CommandError(READ_ONLY)
        if (lapsed := server.lease.refusal()) is not None:  # the leader lease (geoserver.lease)
            raise lapsed
    args = Args(argv, 1)
    script = args.next()
    if not script:
        raise ArityError(argv[0].decode("utf-8", "replace"))
    token = args.next()
    try:
        numkeys = int(token)
    except ValueError:
        raise invalid_argument(token) from None
    if numkeys < 0:
        raise invalid_argument(token)
    if len(argv) - args.pos < numkeys:
        raise ArityError(argv[0].decode("utf-8", "replace"))
    keys, rest = argv[args.pos:args.pos + numkeys], argv[args.pos + numkeys:]
    try:
        value = engine(server).run(script, is_sha, keys, rest,
                                   lambda call: script_call(server, mode, call),
                                   clients.DEADLINE.get())
    except ScriptError as exc:
        raise CommandError(exc.message) from None
    if ctx.json:
        return {"result": to_json(value)}
    try:
        return to_resp(value)
    except ScriptReplyError as exc:
        raise CommandError(exc.message) from None


_R = Flag.READ


@command("eval", min_args=3)
def cmd_eval(ctx: Ctx, argv: list[bytes]) -> Any:
    """EVAL script numkeys [key ...] [arg ...] -- run a Lua script that may write."""
    return _eval(ctx, argv, False, "rw")


@command("evalsha", min_args=3)
def cmd_evalsha(ctx: Ctx, argv: list[bytes]) -> Any:
    """EVALSHA sha1 numkeys [key ...] [arg ...]"""
    return _eval(ctx, argv, True, "rw")


@command("evalro", min_args=3, flags=_R)
def cmd_evalro(ctx: Ctx, argv: list[bytes]) -> Any:
    """EVALRO script numkeys [key ...] [arg ...] -- writes inside reply `read only`."""
    return _eval(ctx, argv, False, "ro")


@command("evalrosha", min_args=3, flags=_R)
def cmd_evalrosha(ctx: Ctx, argv: list[bytes]) -> Any:
    """EVALROSHA sha1 numkeys [key ...] [arg ...]"""
    return _eval(ctx, argv, True, "ro")


@command("evalna", min_args=3)
def cmd_evalna(ctx: Ctx, argv: list[bytes]) -> Any:
    """EVALNA script numkeys [key ...] [arg ...] -- Tile38's non-atomic form."""
    return _eval(ctx, argv, False, "na")


@command("evalnasha", min_args=3)
def cmd_evalnasha(ctx: Ctx, argv: list[bytes]) -> Any:
    """EVALNASHA sha1 numkeys [key ...] [arg ...]"""
    return _eval(ctx, argv, True, "na")


@command("script", min_args=2)
def cmd_script(ctx: Ctx, argv: list[bytes]) -> Any:
    """SCRIPT LOAD script | SCRIPT EXISTS sha1 [sha1 ...] | SCRIPT FLUSH"""
    sub = argv[1].decode("utf-8", "replace").lower()
    scripts = engine(ctx.server)
    if sub == "load":
        if len(argv) != 3 or not argv[2]:
            raise ArityError("script")
        try:
            sha = scripts.load(argv[2])
        except ScriptError as exc:
            raise CommandError(exc.message) from None
        return {"result": sha} if ctx.json else sha
    if sub == "exists":
        if len(argv) < 3:
            raise ArityError("script")
        found = [int(scripts.exists(a.decode("utf-8", "replace"))) for a in argv[2:]]
        return {"result": found} if ctx.json else found
    if sub == "flush":
        scripts.flush()
        return {} if ctx.json else "OK"  # Tile38 answers a bulk "OK"
    raise CommandError(f"unknown command 'script {sub}'")

