"""Geofence commands: live fences (NEARBY|WITHIN|INTERSECTS ... FENCE), SETHOOK DELHOOK
PDELHOOK HOOKS, SETCHAN DELCHAN PDELCHAN CHANS. Semantics follow Tile38 1.30 (docs/geofencing.md).

A fence is a search: its options (MATCH, WHERE, WHEREIN, NOFIELDS, DISTANCE, output) are
parsed by commands/search.py's `parse_options` and its area by `parse_area`; this module adds
FENCE, DETECT, COMMANDS, NODWELL and ROAM. The search commands get their FENCE form here: their
table entries are wrapped once, at import, so search.py keeps owning the searches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from geoserver.binary import text
from geoserver.commands import search
from geoserver.commands.base import TABLE, Args, Ctx, Flag, command
from geoserver.delivery.endpoints.urls import EndpointError, parse_endpoint
from geoserver.errors import CommandError, duplicate_argument, invalid_argument
from geoserver.fence.model import COMMAND_NAMES, DETECTS, Fence, Hook, Roam
from geoserver.protocol.resp import Raw
from geoserver.store import query

FENCE_CMDS = ("NEARBY", "WITHIN", "INTERSECTS")


# ---- parsing -------------------------------------------------------------------------------


def _word_list(args: Args, allowed: frozenset[str] | tuple[str, ...], name: str) -> frozenset[str]:
    token = args.next()
    parts = [p.strip().lower() for p in token.decode("utf-8", "replace").split(",")]
    seen: set[str] = set()
    for part in parts:
        if part not in allowed:
            raise invalid_argument(token if name == "DETECT" else part)
        if part in seen:
            raise duplicate_argument(part)
        seen.add(part)
    return frozenset(seen)


def _merge(into: Any, s: Any, output_set: bool) -> None:
    # Options a fence does not apply are refused, never silently dropped (docs/geofencing.md).
    for given, word in ((s.buffer, "BUFFER"), (s.clip, "CLIP"), (s.sparse, "SPARSE")):
        if given:
            raise CommandError(f"{word} is not supported when FENCE is specified")
    into.matches += s.matches
    into.wheres += s.wheres
    into.whereins += s.whereins
    into.nofields |= s.nofields
    into.distance |= s.distance
    if output_set:
        into.output, into.precision = s.output, s.precision


def _output_given(args: Args, before: int, s: Any) -> bool:
    if s.output != "OBJECTS":
        return True
    return args.pos > before and args.argv[args.pos - 1].upper() == b"OBJECTS"


def parse_fence(ctx: Ctx, argv: list[bytes], start: int, require_fence: bool,
                implied: bool = False) -> Fence:
    """`NEARBY|WITHIN|INTERSECTS key [options] FENCE [DETECT ...] [COMMANDS ...] [NODWELL]
    [output] area` from argv[start]. `implied`: SETHOOK/SETCHAN, where FENCE may be left out
    (Tile38 starts their parse with fence set, token.go `fromFence`)."""
    cmd = argv[start].decode("utf-8", "replace").upper()
    if cmd not in FENCE_CMDS:
        raise invalid_argument(argv[start])
    if len(argv) < start + 2:
        raise CommandError("invalid number of arguments")
    key = text(argv[start + 1])
    args = Args(argv, start + 2)
    s = search.Search(cmd)
    fence = implied
    detect: frozenset[str] | None = None
    accept: frozenset[str] | None = None
    nodwell = False
    while args.more():
        word = args.peek_upper()
        if word == "FENCE":
            args.next()
            if fence and not implied:
                raise duplicate_argument("FENCE")
            fence = True
            continue
        if word in ("DETECT", "COMMANDS"):
            args.next()
            args.once(word)
            if word == "DETECT":
                detect = _word_list(args, DETECTS, word)
            else:
                accept = _word_list(args, COMMAND_NAMES, word)
            continue
        if word == "NODWELL":
            args.next()
            args.once(word)
            nodwell = True
            continue
        before = args.pos
        part = search.parse_options(args, cmd, ctx)
        if part.cursor:
            raise CommandError("CURSOR is not allowed when FENCE is specified")
        given = _output_given(args, before, part)
        _merge(s, part, given)
        if given or args.pos == before:
            break
    if not fence:
        if require_fence:
            raise CommandError("missing FENCE argument")
        if detect is not None:
            raise CommandError("DETECT is not allowed when FENCE is not specified")
    area, roam = _fence_area(ctx, args, cmd)
    args.done()
    return Fence(cmd.lower(), key, s, area, detect, accept, nodwell, roam)


def _fence_area(ctx: Ctx, args: Args, cmd: str) -> tuple[query.Area | None, Roam | None]:
    if not args.more():
        raise CommandError("invalid number of arguments")
    if cmd != "NEARBY":
        return search.parse_area(ctx, args), None
    word = args.peek_upper()
    if word == "ROAM":
        args.next()
        key, pattern = args.next_str(), args.next_str()
        meters = args.next_float()
        scan = ""
        if args.more():
            if args.peek_upper() != "SCAN":
                raise invalid_argument(args.argv[args.pos])
            args.next()
            scan = args.next_str()
        return None, Roam(key, pattern, any(c in pattern for c in "*?["), meters, scan)
    if word != "POINT":
        raise invalid_argument(args.argv[args.pos])
    args.next()
    lat, lon = args.next_float(), args.next_float()
    if not args.more():
        return None, None  # Tile38: no radius, a circle that holds nothing
    meters = args.next_float()
    if meters < 0:
        raise invalid_argument(args.argv[args.pos - 1])
    return query.circle_area(lat, lon, meters), None


def has_fence(argv: list[bytes]) -> bool:
    return any(len(a) == 5 and a.upper() == b"FENCE" for a in argv[2:])


# ---- live fences ---------------------------------------------------------------------------


def _live_or_search(name: str) -> None:
    """Give a search command its FENCE form: with FENCE the connection becomes a live fence."""
    base = TABLE[name]
    search_func = base.func

    def func(ctx: Ctx, argv: list[bytes]) -> Any:
        if not has_fence(argv):
            return search_func(ctx, argv)
        fence = parse_fence(ctx, argv, 0, True)
        client = ctx.client
        if client is None:
            raise CommandError("not allowed here")
        client.start_live(fence)
        if ctx.json:  # Tile38 sends this bulk string as is, on RESP as on HTTP
            return Raw(client.frame(b'{"ok":true,"live":true}', True))
        return Raw(b"+OK\r\n")

    func.__doc__ = (search_func.__doc__ or "") + (
        "\n    -- with FENCE [DETECT what] [COMMANDS which] [NODWELL] before the output: a live fence"
        " (docs/geofencing.md)")
    func.__name__ = search_func.__name__
    func.__module__ = search_func.__module__  # listed with the searches (commands/reference.py)
    TABLE[name] = dataclasses.replace(base, func=func)


for _name in ("nearby", "within", "intersects"):
    _live_or_search(_name)


# ---- hooks and channels --------------------------------------------------------------------


def _endpoints(ctx: Ctx, token: bytes) -> tuple[str, ...]:
    """The endpoint list. A client's URLs must be ones delivery can use (its parse_endpoint
    says why not); a replayed or replicated one loads as acknowledged (a Tile38 AOF may name
    kinds geoserver does not deliver to: they stay defined, and their sends fail)."""
    out = []
    for part in text(token).split(","):
        url = part.strip()
        if not url:
            raise invalid_argument(token)
        if ctx.client is not None:
            try:
                parse_endpoint(url)
            except EndpointError as exc:
                raise CommandError(f"invalid argument '{url}': {exc}") from None
        out.append(url)
    return tuple(out)


def _set_hook(ctx: Ctx, argv: list[bytes], channel: bool) -> Any:
    args = Args(argv, 1)
    name = args.next_str()
    if not name:
        raise CommandError("invalid number of arguments")
    endpoints = ("local://" + name,) if channel else _endpoints(ctx, args.next())
    metas: dict[str, str] = {}
    expires_at: float | None = None
    while True:
        word = args.peek_upper()
        if word == "META":
            args.next()
            meta_name, value = args.next_str(), args.next_str()
            if not meta_name or not value:
                raise CommandError("invalid number of arguments")
            metas[meta_name] = value
        elif word == "EX":
            args.next()
            token = args.next()
            expires_at = ctx.now + _seconds(token)
        elif word in FENCE_CMDS:
            break
        elif not args.more():
            raise CommandError("invalid number of arguments")
        else:
            raise invalid_argument(args.argv[args.pos])
    fence_at = args.pos
    fence = parse_fence(ctx, argv, fence_at, True, implied=True)
    hook = Hook(name, channel, endpoints, tuple(sorted(metas.items())), fence, argv[fence_at:],
                expires_at, list(argv))
    reg = ctx.server.fences.registry(ctx.db)
    prev = reg.get(name)
    if prev is not None:
        if prev.channel != channel:
            raise CommandError("hooks and channels cannot share the same name")
        if prev.same_as(hook):
            return {} if ctx.json else 0
        reg.remove(name)
        ctx.server.fences.hook_removed(prev)
    reg.add(hook)
    ctx.dirty = True
    return {} if ctx.json else 1


def _seconds(token: bytes) -> float:
    try:
        value = float(token)
    except ValueError:
        raise invalid_argument(token) from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise invalid_argument(token)
    return value


@command("sethook", min_args=7, flags=Flag.WRITE)
def cmd_sethook(ctx: Ctx, argv: list[bytes]) -> Any:
    """SETHOOK name endpoint[,endpoint ...] [META name value ...] [EX seconds]
    (NEARBY|WITHIN|INTERSECTS) key [options] FENCE [DETECT what] [COMMANDS which] [NODWELL] area"""
    return _set_hook(ctx, argv, channel=False)


@command("setchan", min_args=6, flags=Flag.WRITE)
def cmd_setchan(ctx: Ctx, argv: list[bytes]) -> Any:
    """SETCHAN name [META name value ...] [EX seconds]
    (NEARBY|WITHIN|INTERSECTS) key [options] FENCE [DETECT what] [COMMANDS which] [NODWELL] area"""
    return _set_hook(ctx, argv, channel=True)


def _del_hooks(ctx: Ctx, hooks: list[Hook]) -> int:
    reg = ctx.server.fences.registry(ctx.db)
    for hook in hooks:
        reg.remove(hook.name)
        ctx.server.fences.hook_removed(hook)
    ctx.dirty = bool(hooks)
    return len(hooks)


def _del_one(ctx: Ctx, argv: list[bytes], channel: bool) -> Any:
    hook = ctx.server.fences.registry(ctx.db).get(text(argv[1]))
    n = _del_hooks(ctx, [hook] if hook is not None and hook.channel == channel else [])
    return {} if ctx.json else n


def _pdel(ctx: Ctx, argv: list[bytes], channel: bool) -> Any:
    n = _del_hooks(ctx, ctx.server.fences.registry(ctx.db).matching(text(argv[1]), channel))
    return {} if ctx.json else n


@command("delhook", min_args=2, max_args=2, flags=Flag.WRITE)
def cmd_delhook(ctx: Ctx, argv: list[bytes]) -> Any:
    """DELHOOK name"""
    return _del_one(ctx, argv, channel=False)


@command("delchan", min_args=2, max_args=2, flags=Flag.WRITE)
def cmd_delchan(ctx: Ctx, argv: list[bytes]) -> Any:
    """DELCHAN name"""
    return _del_one(ctx, argv, channel=True)


@command("pdelhook", min_args=2, max_args=2, flags=Flag.WRITE)
def cmd_pdelhook(ctx: Ctx, argv: list[bytes]) -> Any:
    """PDELHOOK pattern"""
    return _pdel(ctx, argv, channel=False)


@command("pdelchan", min_args=2, max_args=2, flags=Flag.WRITE)
def cmd_pdelchan(ctx: Ctx, argv: list[bytes]) -> Any:
    """PDELCHAN pattern"""
    return _pdel(ctx, argv, channel=True)


def _list(ctx: Ctx, argv: list[bytes], channel: bool) -> Any:
    hooks = [h for h in ctx.server.fences.registry(ctx.db).matching(text(argv[1]), channel)
             if not h.expired(ctx.now)]
    if ctx.json:
        out = []
        for h in hooks:
            ttl = -1 if h.expires_at is None else max(0, int(h.expires_at - ctx.now))
            entry: dict[str, Any] = {"name": h.name, "key": h.fence.key, "ttl": ttl}
            if not channel:
                entry["endpoints"] = list(h.endpoints)
            entry["command"] = [text(a) for a in h.command]
            entry["meta"] = dict(h.metas)
            out.append(entry)
        return {"chans" if channel else "hooks": out}
    return [[h.name, h.fence.key, list(h.endpoints), list(h.command), [x for kv in h.metas for x in kv]]
            for h in hooks]


@command("hooks", min_args=2, max_args=2, flags=Flag.READ)
def cmd_hooks(ctx: Ctx, argv: list[bytes]) -> Any:
    """HOOKS pattern"""
    return _list(ctx, argv, channel=False)


@command("chans", min_args=2, max_args=2, flags=Flag.READ)
def cmd_chans(ctx: Ctx, argv: list[bytes]) -> Any:
    """CHANS pattern"""
    return _list(ctx, argv, channel=True)

