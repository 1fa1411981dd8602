"""Replication and AOF commands: FOLLOW AOF AOFMD5 AOFSHRINK REPLCONF ROLE RESYNC."""

from __future__ import annotations

from typing import Any

from geoserver.commands.base import Args, Ctx, Flag, command
from geoserver.errors import (
    AOF_DISABLED,
    EOF_ERROR,
    POS_TOO_BIG,
    CommandError,
    NotLeaderError,
    invalid_argument,
)
from geoserver.protocol.resp import OK, Raw

A = Flag.ADMIN


@command("follow", min_args=3, max_args=3, flags=A, aliases=("slaveof", "replicaof"))
def cmd_follow(ctx: Ctx, argv: list[bytes]) -> Any:
    """FOLLOW host port | FOLLOW no one -- persisted, so a restart resumes following. FOLLOW of
    the leader a follower already waits for retries at once (its back-off is cut short)."""
    host = argv[1].decode("utf-8", "replace")
    if host.lower() == "no" and argv[2].lower() == b"one":
        ctx.server.stop_following()
        return {} if ctx.json else OK
    port = Args(argv, 2).next_int(1, 65535)
    return _follow(ctx, host, port)


async def _follow(ctx: Ctx, host: str, port: int) -> Any:
    from geoserver.replication.follower import ReplicationError, fetch_leader_stats, leader_tls

    server = ctx.server
    cfg = server.config
    if server.aof is None:
        raise CommandError(f"cannot follow: {AOF_DISABLED}")
    if server.shrink.running:  # its final swap would mix our old file with the new stream
        raise CommandError("cannot follow: an AOFSHRINK is running, retry when it ends")
    # leaderauth goes only to the --follow leader or to one an authenticated client named:
    # on a password-less server anyone may send FOLLOW, and must not get our leader password
    current = server.follower
    same = current is not None and (current.host, current.port) == (host, port)
    trusted = ((host, port) == cfg.startup_follow or (same and current.trusted)
               or bool(server.requirepass and ctx.client is not None and ctx.client.authed))
    try:
        await fetch_leader_stats(host, port, cfg.leaderauth if trusted else "", cfg.server_id,
                                 leader_tls(cfg))
    except ReplicationError as exc:
        message = str(exc)
        raise CommandError(message if message.startswith("cannot") else f"cannot follow: {message}") from None
    if server.shrink.running:  # started while we dialled the leader
        raise CommandError("cannot follow: an AOFSHRINK is running, retry when it ends")
    cfg.follow_trusted = trusted
    if same and current is not None and current.trusted != trusted:  # same leader: no restart
        current.trusted = trusted
        cfg.write_file()
    if same and current is not None and not current.connected:
        # it answered as a leader just now: the follower waiting out its back-off (it started
        # before its leader led, as every member does on Kubernetes) connects now
        current.backoff.reset()
        current._retry_now.set()
    server.start_following(host, port)
    return {} if ctx.json else OK


@command("aof", min_args=2, max_args=2, flags=A)
def cmd_aof(ctx: Ctx, argv: list[bytes]) -> Any:
    """AOF pos -- reply +OK, then stream the AOF from pos, then live (leader side)."""
    server = ctx.server
    if server.aof is None:
        raise CommandError(AOF_DISABLED)
    pos = Args(argv, 1).next_int(0)
    server.aof.flush()
    if pos > server.aof.flushed:
        raise CommandError(POS_TOO_BIG)
    client = ctx.client
    if client is None or not client.resp_conn:
        raise CommandError("AOF streaming needs a RESP connection")
    seen = client.aof_generation
    if seen is not None and seen != server.aof.generation:
        # The file was replaced (shrink) after this connection's SERVER/AOFMD5: the size and
        # prefix it proved belong to the old file, so streaming from `pos` would be wrong.
        raise CommandError("aof changed during the handshake, retry")
    from geoserver.replication.leader import AofStream

    client.stream = AofStream(server, client, pos)
    return Raw(b"+OK\r\n")


@command("aofmd5", min_args=3, max_args=3, flags=A)
def cmd_aofmd5(ctx: Ctx, argv: list[bytes]) -> Any:
    """AOFMD5 pos size -- md5 of that byte range of the AOF."""
    args = Args(argv, 1)
    pos, size = args.next_int(0), args.next_int(0)
    aof = ctx.server.aof
    if aof is None:
        raise CommandError(AOF_DISABLED)
    if pos + size > aof.size or (size == 0 and pos >= aof.size):
        raise CommandError(EOF_ERROR)
    if ctx.client is not None:
        ctx.client.aof_generation = aof.generation
    return _aofmd5(ctx, aof, pos, size)


async def _aofmd5(ctx: Ctx, aof: Any, pos: int, size: int) -> Any:
    digest = await aof.md5(pos, size)  # hashed in a worker thread, off the event loop
    return {"md5": digest} if ctx.json else Raw(b"+" + digest.encode() + b"\r\n")


@command("aofshrink", max_args=1, flags=A)
def cmd_aofshrink(ctx: Ctx, argv: list[bytes]) -> Any:
    """AOFSHRINK -- compact the AOF online, in the background (watch SERVER aof_shrinking)."""
    server = ctx.server
    if server.follower is not None:
        raise NotLeaderError()  # a follower's AOF must stay a prefix of its leader's
    if server.aof is None:
        raise CommandError(AOF_DISABLED)
    if not server.shrink.running:
        from geoserver.aof.shrink import run_shrink

        server.spawn(run_shrink(server), "aofshrink")
    return {} if ctx.json else OK


@command("resync", max_args=2, flags=A)
def cmd_resync(ctx: Ctx, argv: list[bytes]) -> Any:
    """RESYNC [FORCE] -- on a follower: rebuild dataset and AOF from the leader (full resync);
    refused like any full resync when the leader has far fewer objects, unless FORCE."""
    follower = ctx.server.follower
    if follower is None:
        raise CommandError("not a follower")
    force = False
    if len(argv) == 2:
        if argv[1].upper() != b"FORCE":
            raise invalid_argument(argv[1])
        force = True
    if follower.refusal and not force:
        raise CommandError(f"{follower.refusal}; RESYNC FORCE replaces this dataset")
    follower.request_resync(force)
    return {} if ctx.json else OK


@command("replconf", min_args=3, max_args=3, flags=A)
def cmd_replconf(ctx: Ctx, argv: list[bytes]) -> Any:
    """REPLCONF listening-port port | REPLCONF ip-address ip"""
    client = ctx.client
    if client is None:
        raise CommandError("cannot find follower")
    sub = argv[1].decode("utf-8", "replace").lower()
    if sub == "listening-port":
        client.replica_port = Args(argv, 2).next_int(0, 65535)
    elif sub == "ip-address":
        client.replica_ip = argv[2].decode("utf-8", "replace")
    else:
        raise CommandError("cannot find follower")
    return {} if ctx.json else OK


@command("role", max_args=1, flags=Flag.READ)
def cmd_role(ctx: Ctx, argv: list[bytes]) -> Any:
    """ROLE"""
    server = ctx.server
    follower = server.follower
    if follower is None:
        size = server.aof_size
        slaves = [(s.peer_ip, str(s.peer_port), str(size)) for s in server.live_streams]
        if ctx.json:
            return {"role": {"role": "master", "offset": size,
                             "slaves": [{"ip": i, "port": p, "offset": o} for i, p, o in slaves]}}
        return ["master", size, [list(s) for s in slaves]]
    state = "connected" if follower.connected else "connecting"
    if ctx.json:
        return {"role": {"role": "slave", "host": follower.host, "port": follower.port,
                         "state": state, "offset": server.aof_size}}
    return ["slave", follower.host, follower.port, state, server.aof_size]
