"""The one command table. Each command is declared once with its arity and flags; dispatch,
arity errors, auth, LOADING, "not the leader", read-only refusals, follower read gating and AOF
logging all derive from these declarations, for every path: RESP, HTTP, AOF load, follower.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geoserver.binary import text
from geoserver.errors import ArityError, CommandError, duplicate_argument, invalid_argument
from geoserver.store.geometry import GeoLimits, parse_float

if TYPE_CHECKING:
    from geoserver.fence.model import Change
    from geoserver.server import Client, Server
    from geoserver.store.database import Database


class Flag(enum.Flag):
    NONE = 0
    WRITE = enum.auto()  # mutates data: AOF-logged, refused on followers / when read-only
    READ = enum.auto()  # reads data: gated on a follower until it has caught up once
    NOAUTH = enum.auto()  # allowed before AUTH
    LOADING_OK = enum.auto()  # allowed while the AOF is loading
    ADMIN = enum.auto()  # server management (CONFIG, FOLLOW, AOFSHRINK ...)
    GROWS = enum.auto()  # adds data: refused above `maxmemory` (deletes stay allowed)


CommandFunc = Callable[["Ctx", list[bytes]], Any]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    func: CommandFunc
    min_args: int  # including the command name
    max_args: int | None
    flags: Flag
    # The flags as plain bools: dispatch tests them on every command, and enum.Flag `&`
    # costs a microsecond each.
    write: bool = False
    read: bool = False
    noauth: bool = False
    loading_ok: bool = False
    grows: bool = False
    admin: bool = False

    def check_arity(self, argc: int) -> bool:
        return argc >= self.min_args and (self.max_args is None or argc <= self.max_args)


TABLE: dict[str, Command] = {}


def command(name: str, *, min_args: int = 1, max_args: int | None = None, flags: Flag = Flag.NONE,
            aliases: tuple[str, ...] = ()) -> Callable[[CommandFunc], CommandFunc]:
    """Register a command function; its docstring carries the syntax."""

    def register(func: CommandFunc) -> CommandFunc:
        cmd = Command(name, func, min_args, max_args, flags, write=bool(flags & Flag.WRITE),
                      read=bool(flags & Flag.READ), noauth=bool(flags & Flag.NOAUTH),
                      loading_ok=bool(flags & Flag.LOADING_OK), grows=bool(flags & Flag.GROWS),
                      admin=bool(flags & Flag.ADMIN))
        for n in (name, *aliases):
            if n in TABLE:
                raise RuntimeError(f"command {n} declared twice")
            TABLE[n] = cmd
        return func

    return register


@dataclass(slots=True)
class Ctx:
    """What a command may touch: the server, the calling client (None for AOF replay and the
    follower stream), the reply mode, and the `dirty` flag that says a write changed data."""

    server: Server
    client: Client | None
    json: bool
    now: float
    db: Database  # the server's, or the fresh one a full resync is building
    dirty: bool = False
    record: list[bytes] | None = None  # the AOF record when it is not argv as sent
    # What a write changed, collected only while fences watch (geoserver.fence): dispatch
    # hands them to server.fences after the write. None: nobody watches, nothing to collect.
    changes: list[Change] | None = None

    def watch_changes(self) -> None:
        """A write is about to run: collect what it changes if any fence watches."""
        if self.server.fences.active:
            self.changes = []

    def finish_write(self, argv: list[bytes] | None) -> None:
        """The step every write path ends with (client, script, replay): its AOF record when
        it changed data (argv None: a replay, already logged), then its changes to the fence
        engine, so a hook, channel or live fence sees a write whichever way it came in."""
        if argv is not None and self.dirty:
            self.server.record_write(self.record or argv)
        if self.changes:
            self.server.fences.notify(self.changes, self.db)


class Args:
    """A cursor over a command's arguments with Tile38-style errors."""

    __slots__ = ("argv", "pos", "seen")

    def __init__(self, argv: list[bytes], start: int = 1) -> None:
        self.argv = argv
        self.pos = start
        self.seen: set[str] = set()

    def more(self) -> bool:
        return self.pos < len(self.argv)

    def peek_upper(self) -> str:
        return self.argv[self.pos].decode("utf-8", "replace").upper() if self.more() else ""

    def next(self) -> bytes:
        if not self.more():  # Tile38: `wrong number of arguments for 'set' command` in RESP
            raise ArityError(text(self.argv[0]))
        value = self.argv[self.pos]
        self.pos += 1
        return value

    def next_str(self) -> str:
        """The next argument as text, byte-exact (geoserver.binary)."""
        return text(self.next())

    def next_float(self) -> float:
        return parse_float(self.next())

    def next_int(self, minimum: int | None = None, maximum: int | None = None) -> int:
        token = self.next()
        try:
            value = int(token)
        except ValueError:
            raise invalid_argument(token) from None
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise invalid_argument(token)
        return value

    def flag(self, keyword: str) -> bool:
        """Consume an optional keyword (`WITHFIELDS`, `XX`) if it comes next."""
        if self.peek_upper() == keyword:
            self.pos += 1
            return True
        return False

    def once(self, keyword: str) -> None:
        """Refuse a keyword given twice (`duplicate argument 'LIMIT'`)."""
        if keyword in self.seen:
            raise duplicate_argument(keyword)
        self.seen.add(keyword)

    def done(self) -> None:
        if self.more():
            raise invalid_argument(self.argv[self.pos])


def pattern_arg(ctx: Ctx, token: bytes) -> str:
    """A glob pattern argument (MATCH, KEYS, PDEL, CONFIG GET), at most `max-pattern-length`
    bytes from a client (a replayed PDEL was acknowledged under the limits of its time)."""
    limit = ctx.server.config.max_pattern_length
    if len(token) > limit and ctx.client is not None:
        raise CommandError(f"invalid pattern: too long (limit {limit} bytes)")
    return text(token)


def geojson_limits(ctx: Ctx) -> GeoLimits | None:
    """The GeoJSON limits of a client's write or query; None for AOF replay and the follower
    stream, which apply what was acknowledged whatever the limits are now."""
    if ctx.client is None:
        return None
    cfg = ctx.server.config
    return GeoLimits(cfg.geojson_max_vertices, cfg.geojson_max_parts, cfg.geojson_max_depth)
