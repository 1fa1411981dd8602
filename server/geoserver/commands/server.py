"""Connection and server commands: PING ECHO QUIT AUTH OUTPUT SERVER INFO CONFIG GC HEALTHZ
READONLY."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from geoserver import TILE38_COMPAT_VERSION, __version__
from geoserver.commands import serverinfo, slices
from geoserver.commands.base import Args, Ctx, Flag, command, pattern_arg
from geoserver.config import PROPERTIES
from geoserver.errors import (
    CATCHING_UP,
    INVALID_PASSWORD,
    NOT_CAUGHT_UP,
    AuthError,
    CommandError,
    invalid_argument,
)
from geoserver.protocol.output import render
from geoserver.protocol.resp import OK, PONG, Map, Raw, Simple
from geoserver.security import password_matches
from geoserver.store.glob import matcher

if TYPE_CHECKING:
    from geoserver.server import Server

N = Flag.NOAUTH | Flag.LOADING_OK
REDACTED = "********"


@command("ping", max_args=2, flags=N)
def cmd_ping(ctx: Ctx, argv: list[bytes]) -> Any:
    """PING [message]"""
    if ctx.json:
        return {"ping": "pong"}
    return argv[1] if len(argv) > 1 else PONG


@command("echo", min_args=2, max_args=2, flags=N)
def cmd_echo(ctx: Ctx, argv: list[bytes]) -> Any:
    """ECHO message"""
    return {"message": argv[1].decode("utf-8", "replace")} if ctx.json else argv[1]


@command("quit", max_args=None, flags=N)
def cmd_quit(ctx: Ctx, argv: list[bytes]) -> Any:
    """QUIT -- close the connection: `+OK` first in RESP output, nothing in JSON output
    (Tile38; tile38-ts waits for the close, not for a reply)."""
    client = ctx.client
    if client is not None:
        client.closing = True
        if client.resp_conn:
            return Raw(b"" if ctx.json else b"+OK\r\n")
    return {} if ctx.json else OK


@command("auth", min_args=2, max_args=2, flags=N)
def cmd_auth(ctx: Ctx, argv: list[bytes]) -> Any:
    """AUTH password"""
    if not password_matches(argv[1], ctx.server.requirepass):
        raise AuthError(INVALID_PASSWORD)
    if ctx.client is not None:
        ctx.client.authed = True
    return {} if ctx.json else OK


@command("hello", max_args=None, flags=N)
def cmd_hello(ctx: Ctx, argv: list[bytes]) -> Any:
    """HELLO [protover [AUTH username password] [SETNAME name]] -- the handshake redis-py and
    other RESP3-era clients send first. `HELLO 3` gets its server info as a RESP3 map; every
    other reply keeps its RESP2 shape, which RESP3 parsers accept."""
    proto = 2
    args = Args(argv, 1)
    if args.more():
        proto = args.next_int()
        if proto not in (2, 3):
            raise CommandError("NOPROTO unsupported protocol version")
    while args.more():
        word = args.peek_upper()
        args.next()
        if word == "AUTH":
            args.next()
            cmd_auth(ctx, [b"auth", args.next()])
        elif word == "SETNAME":
            name = args.next()
            if ctx.client is not None:
                ctx.client.name = name.decode("utf-8", "replace")
        else:
            raise invalid_argument(argv[args.pos - 1])
    info = {"server": "tile38", "version": TILE38_COMPAT_VERSION, "proto": proto,
            "id": ctx.client.id if ctx.client is not None else 0, "mode": "standalone",
            "role": "replica" if ctx.server.follower else "master", "modules": []}
    if ctx.json:
        return info
    return Map(info) if proto == 3 else [x for kv in info.items() for x in kv]


@command("output", max_args=2, flags=N)
def cmd_output(ctx: Ctx, argv: list[bytes]) -> Any:
    """OUTPUT [json|resp] -- switch this connection's reply format (RESP connections only)."""
    client = ctx.client
    if len(argv) == 1:
        return {"output": "json"} if ctx.json else "resp"
    mode = argv[1].decode("utf-8", "replace").lower()
    if mode not in ("json", "resp"):
        raise invalid_argument(argv[1])
    if client is not None and client.resp_conn:
        client.json = mode == "json"
        # The reply already speaks the new format (RESP `+OK` even when leaving JSON mode).
        return Raw(render({}, True, 0, True)) if client.json else Raw(b"+OK\r\n")
    if mode == "resp":
        raise CommandError("resp output is not available over HTTP")
    return {}


def server_stats(server: Server, db: dict[str, int] | None = None) -> dict[str, Any]:
    """The SERVER fields, with real values. Never gated, so an operator can watch a catching-up
    follower (Tile38 refuses SERVER until the first catch-up; see docs/commands.md).
    `db`: the dataset totals when the caller counted them already (in slices)."""
    db = db or server.db.stats()
    rss = server.rss_bytes()
    shrink = server.shrink
    stats: dict[str, Any] = {
        "id": server.config.server_id,
        "version": TILE38_COMPAT_VERSION,
        "geoserver_version": __version__,
        "pid": os.getpid(),
        "uptime": int(time.time() - server.started),
        "aof_size": server.aof_size,
        "aof_shrinking": shrink.running,
        "last_shrink_time": shrink.last_time,
        "last_shrink_result": shrink.last_result,
        "last_shrink_duration_ms": round(shrink.last_duration * 1000, 3),
        "last_shrink_size_before": shrink.last_size_before,
        "last_shrink_size_after": shrink.last_size_after,
        "num_collections": db["num_collections"],
        "num_objects": db["num_objects"],
        "num_points": db["num_points"],
        "num_strings": db["num_strings"],
        "num_hooks": len(server.fences.registry(server.db)),  # hooks and channels, as Tile38
        "in_memory_size": db["in_memory_size"],
        "avg_item_size": db["in_memory_size"] // db["num_objects"] if db["num_objects"] else 0,
        "mem_alloc": rss,
        "heap_size": rss,
        "heap_released": 0,
        "max_heap_size": server.config.maxmemory,
        "pointer_size": 8,
        "read_only": server.read_only,
        "http_transport": server.config.http_transport,
        "threads": threading.active_count(),
        "cpus": os.cpu_count() or 1,
        "connected_clients": len(server.clients),
        "connected_followers": len(server.live_streams),
        "resyncs": server.resyncs,
        "pending_events": server.hook_sink.depth(),
    }
    stats.update(server.lease.stats())  # lease_state/_epoch/_remaining_ms once a lease was given
    follower = server.follower
    if follower is not None:
        stats.update(follower.stats())
    return stats


@command("server", max_args=2, flags=Flag.LOADING_OK)
def cmd_server(ctx: Ctx, argv: list[bytes]) -> Any:
    """SERVER [EXT] -- EXT: Tile38's extended stats (Go runtime names, CPython figures)."""
    ext = len(argv) == 2
    if ext and argv[1].lower() != b"ext":
        raise invalid_argument(argv[1])
    if slices.sliced(ctx, len(ctx.db.collections)):
        return _server_sliced(ctx, ext)
    return _server_reply(ctx, server_stats(ctx.server), ext)


async def _server_sliced(ctx: Ctx, ext: bool) -> Any:
    """SERVER over many keys: the totals are counted in slices (each key as it is then)."""
    totals, _ = await slices.run_sliced(ctx.db.stats_steps())
    return _server_reply(ctx, server_stats(ctx.server, totals), ext)


def _server_reply(ctx: Ctx, stats: dict[str, Any], ext: bool = False) -> Any:
    if ctx.client is not None and ctx.server.aof is not None:  # read with stats' aof_size
        ctx.client.aof_generation = ctx.server.aof.generation  # see AOF pos
    if ext:
        stats = serverinfo.extended_stats(ctx.server, stats)
    if ctx.json:
        return {"stats": stats}
    if ext:  # Tile38 sorts the extended fields by name
        stats = dict(sorted(stats.items()))
    return [x for kv in stats.items() for x in (kv[0], _resp_scalar(kv[1]))]


def _resp_scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else str(int(value))
    return value


@command("info", flags=Flag.READ)
def cmd_info(ctx: Ctx, argv: list[bytes]) -> Any:
    """INFO [section ...] -- sections: server clients memory persistence stats replication cpu
    cluster keyspace, or all / default."""
    if slices.sliced(ctx, len(ctx.db.collections)):
        return _info_sliced(ctx, argv)
    return _info_reply(ctx, argv, server_stats(ctx.server))


async def _info_sliced(ctx: Ctx, argv: list[bytes]) -> Any:
    totals, _ = await slices.run_sliced(ctx.db.stats_steps())
    return _info_reply(ctx, argv, server_stats(ctx.server, totals))


def _info_reply(ctx: Ctx, argv: list[bytes], basic: dict[str, Any]) -> Any:
    names = serverinfo.pick_sections([a.decode("utf-8", "replace") for a in argv[1:]])
    text = serverinfo.info_text(serverinfo.info_sections(ctx.server, basic), names)
    if ctx.json:
        return {"info": serverinfo.info_json(text)}
    return text


@command("config", min_args=2, max_args=4, flags=Flag.ADMIN)
def cmd_config(ctx: Ctx, argv: list[bytes]) -> Any:
    """CONFIG GET pattern | CONFIG SET property [value] | CONFIG REWRITE -- passwords read
    back redacted (`********` when set), so a leaked admin session does not leak them. Also
    sent as one token (`config get`, as node-tile38 does)."""
    sub = argv[1].decode("utf-8", "replace").upper()
    cfg = ctx.server.config
    if sub == "GET" and len(argv) == 3:
        pattern = pattern_arg(ctx, argv[2]).lower()
        props = {name: REDACTED if prop.secret and cfg.get_property(name) else cfg.get_property(name)
                 for name, prop in PROPERTIES.items() if matcher(pattern)(name)}
        if ctx.json:
            return {"properties": props}
        return [x for kv in props.items() for x in kv]
    if sub == "SET" and (len(argv) == 4 or (len(argv) == 3 and argv[2].lower() == b"requirepass")):
        name = argv[2].decode("utf-8", "replace").lower()
        if name not in PROPERTIES:
            raise CommandError(f"Unsupported CONFIG parameter: {name}")
        value = argv[3].decode("utf-8", "replace") if len(argv) == 4 else ""  # clears it
        try:
            cfg.set_property(name, value)
        except ValueError:
            raise CommandError(f"Invalid argument '{value}' for CONFIG SET '{name}'") from None  # Tile38's
        if name == "appendfsync" and ctx.server.aof is not None:
            ctx.server.aof.fsync = value
        if name == "maxmemory":
            ctx.server.sample_memory()
        return {} if ctx.json else OK
    if sub == "REWRITE" and len(argv) == 2:
        cfg.write_file()
        return {} if ctx.json else OK
    if sub in ("GET", "SET", "REWRITE"):
        raise CommandError("invalid number of arguments")
    raise invalid_argument(argv[1])


@command("gc", max_args=1)
def cmd_gc(ctx: Ctx, argv: list[bytes]) -> Any:
    """GC -- run a full garbage collection."""
    gc.collect()
    return {} if ctx.json else OK


def health_error(server: Server) -> str:
    """Why this server is not healthy, or "" when it is (followers must be caught up)."""
    follower = server.follower
    if server.loading:
        return "loading"
    if follower is not None:
        if not follower.caught_up_once:
            return CATCHING_UP
        if not follower.caught_up:
            return NOT_CAUGHT_UP
    return ""


@command("healthz", max_args=1, flags=N)
def cmd_healthz(ctx: Ctx, argv: list[bytes]) -> Any:
    """HEALTHZ -- OK on a leader; on a follower only when caught up."""
    err = health_error(ctx.server)
    if err:
        raise CommandError(err)
    return {} if ctx.json else OK


@command("readonly", min_args=2, max_args=2, flags=Flag.ADMIN)
def cmd_readonly(ctx: Ctx, argv: list[bytes]) -> Any:
    """READONLY yes|no -- persisted in the config file."""
    value = argv[1].decode("utf-8", "replace")
    if value not in ("yes", "no"):
        raise invalid_argument(argv[1])
    ctx.server.config.read_only = value == "yes"
    ctx.server.config.write_file()
    return {} if ctx.json else OK


__all__ = ["Simple", "health_error", "server_stats"]
