"""What the fence engine works on: the change a write made, a parsed fence, a hook/channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from geoserver.binary import raw
from geoserver.store.collection import Item
from geoserver.store.query import Area

DETECTS = ("inside", "outside", "enter", "exit", "cross")
# The write commands a COMMANDS list may name (Tile38's commandDetails names; the ones that
# never produce an event, such as rename or flushdb, are accepted and simply never match).
COMMAND_NAMES = frozenset({"set", "del", "drop", "fset", "expire", "persist", "pdel", "rename",
                           "renamenx", "flushdb", "jset", "jdel"})


@dataclass(slots=True)
class Change:
    """One change made by a write, as Tile38's commandDetails: `obj` is the object written (for
    del, the one deleted), `old` the one it replaced (set only). A drop has neither."""

    command: str
    key: str
    oid: str = ""
    obj: Item | None = None
    old: Item | None = None


@dataclass(slots=True)
class Roam:
    """NEARBY key FENCE ROAM key pattern meters [SCAN pattern]."""

    key: str
    pattern: str
    is_glob: bool
    meters: float
    scan: str = ""


@dataclass(slots=True, eq=False)
class Fence:
    """A parsed NEARBY|WITHIN|INTERSECTS ... FENCE: its search options (commands.search.Search,
    for MATCH/WHERE/WHEREIN/output/DISTANCE), its area or roam, and what it reports."""

    cmd: str  # nearby | within | intersects
    key: str
    search: Any  # geoserver.commands.search.Search
    area: Area | None  # None for ROAM, or NEARBY POINT without meters (matches nothing)
    detect: frozenset[str] | None = None  # None: every kind
    accept: frozenset[str] | None = None  # COMMANDS; None: every command
    nodwell: bool = False
    roam: Roam | None = None

    def everywhere(self) -> bool:
        """Whether any write to the key may produce an event (outside detection, roaming):
        such a fence is a candidate for every change, not only those near its area."""
        return self.roam is not None or self.area is None or self.detect is None or "outside" in self.detect

    def detects(self, kind: str) -> bool:
        return self.detect is None or kind in self.detect


@dataclass(slots=True, eq=False)
class Hook:
    """A hook (endpoints) or a channel (channel=True): a named, persistent fence."""

    name: str
    channel: bool
    endpoints: tuple[str, ...]
    metas: tuple[tuple[str, str], ...]  # sorted by name
    fence: Fence
    command: list[bytes]  # the fence part as sent: NEARBY key ... (HOOKS "command", AOF)
    expires_at: float | None = None
    record: list[bytes] = field(default_factory=list)  # the SETHOOK/SETCHAN argv as applied

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def shrink_record(self, now: float) -> list[bytes]:
        """The record that recreates this hook (AOFSHRINK), as Tile38's shrink writes it."""
        head = [b"setchan", raw(self.name)] if self.channel else [
            b"sethook", raw(self.name), raw(",".join(self.endpoints))]
        for name, value in self.metas:
            head += [b"meta", raw(name), raw(value)]
        if self.expires_at is not None:
            head += [b"ex", b"%.1f" % max(0.1, self.expires_at - now)]
        return head + list(self.command)

    def same_as(self, other: Hook) -> bool:
        """Tile38's Hook.Equals: a SETHOOK that changes nothing replies 0 and is not logged."""
        return (self.channel == other.channel and self.endpoints == other.endpoints
                and self.metas == other.metas and self.command == other.command
                and self.expires_at is None and other.expires_at is None)
