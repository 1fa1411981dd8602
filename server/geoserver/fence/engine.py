"""The fence engine: where hooks, channels and live fences live, and where changes become
events. One per server (`server.fences`).

Hook and channel definitions belong to a dataset (`Registry`, one per `Database`): a full
resync swaps them in with the leader's data, FLUSHDB clears them, as in Tile38. Live fences
belong to connections. `active` is the one check a write pays when there is nothing to
notify; otherwise the commands layer collects `Change`s and dispatch calls `notify` after the
write. Candidates come from a spatial index of fence areas per key (`grid.FenceGrid`), plus
the fences that may report any write to their key (outside detection, roaming).

Outputs: live fences write to their connection, channels publish to `server.pubsub`, hooks go
to `server.hook_sink` on the leader only (a follower evaluates its channels, never its hooks).
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedDict

from geoserver.fence.grid import Box, FenceGrid
from geoserver.fence.match import Message, encode, fence_match, haversine, sort_key
from geoserver.fence.model import Change, Fence, Hook
from geoserver.store import query
from geoserver.store.geometry import GeoObject
from geoserver.store.glob import matcher

if TYPE_CHECKING:
    from geoserver.server import Client, Server
    from geoserver.store.database import Database

log = logging.getLogger(__name__)


def _box(obj: GeoObject) -> Box | None:
    if obj.kind == "point":
        return obj.lon, obj.lat, obj.lon, obj.lat
    return obj.bbox


def fence_box(fence: Fence) -> Box | None:
    area = fence.area
    if area is None:
        return None
    return area.minlon, area.minlat, area.maxlon, area.maxlat


@dataclass(slots=True)
class KeyFences:
    """The hooks and channels on one key."""

    everywhere: dict[str, Hook] = field(default_factory=dict)
    grid: FenceGrid = field(default_factory=FenceGrid)
    cross: FenceGrid = field(default_factory=FenceGrid)  # those that detect crossings
    by_name: dict[str, Hook] = field(default_factory=dict)

    def candidates(self, ch: Change) -> list[Hook]:
        if ch.command == "drop":
            return list(self.everywhere.values())
        near: list = []
        new_obj = ch.obj.obj if ch.obj is not None else None
        old_obj = ch.old.obj if ch.old is not None else None
        grid = self.grid
        if len(grid) and not len(self.cross):  # the hot path: points, no crossings wanted
            if new_obj is not None and new_obj.kind == "point":
                near = grid.at_point(new_obj.lon, new_obj.lat)
                new_obj = None
            if old_obj is not None and old_obj.kind == "point":
                near = near + grid.at_point(old_obj.lon, old_obj.lat)
                old_obj = None
        new = _box(new_obj) if new_obj is not None and new_obj.is_spatial else None
        old = _box(old_obj) if old_obj is not None and old_obj.is_spatial else None
        if len(grid):
            for box in (new, old):
                if box is not None:
                    near += grid.overlapping(box)
            if len(self.cross) and new is not None and old is not None:
                both = (min(new[0], old[0]), min(new[1], old[1]), max(new[2], old[2]), max(new[3], old[3]))
                near += self.cross.overlapping(both)
        if not near:  # the common case: nothing near, nothing that hears every write
            if not self.everywhere:
                return []
            return [self.by_name[n] for n in sorted(self.everywhere)]
        by_name = self.by_name
        return [by_name[n] for n in sorted({*self.everywhere, *near})]


class Registry:
    """The hooks and channels of one dataset, by name and by key."""

    def __init__(self) -> None:
        self.hooks: SortedDict[str, Hook] = SortedDict()
        self.keys: dict[str, KeyFences] = {}
        self.expiring = 0  # hooks with an EX
        self.soonest = float("inf")  # no EX runs out before this (a lower bound)

    def __len__(self) -> int:
        return len(self.hooks)

    def get(self, name: str) -> Hook | None:
        return self.hooks.get(name)

    def add(self, hook: Hook) -> None:
        self.remove(hook.name)
        self.hooks[hook.name] = hook
        kf = self.keys.setdefault(hook.fence.key, KeyFences())
        kf.by_name[hook.name] = hook
        box = fence_box(hook.fence)
        if hook.fence.everywhere() or box is None:
            kf.everywhere[hook.name] = hook
        else:
            kf.grid.insert(hook.name, box)
            if hook.fence.detects("cross"):
                kf.cross.insert(hook.name, box)
        if hook.expires_at is not None:
            self.expiring += 1
            self.soonest = min(self.soonest, hook.expires_at)

    def remove(self, name: str) -> Hook | None:
        hook = self.hooks.pop(name, None)
        if hook is None:
            return None
        kf = self.keys[hook.fence.key]
        del kf.by_name[name]
        kf.everywhere.pop(name, None)
        kf.grid.remove(name)
        kf.cross.remove(name)
        if not kf.by_name:
            del self.keys[hook.fence.key]
        if hook.expires_at is not None:
            self.expiring -= 1
        return hook

    def matching(self, pattern: str, channel: bool) -> list[Hook]:
        """Hooks (or channels) whose name matches a glob, in name order."""
        match = matcher(pattern)
        return [h for name, h in self.hooks.items() if h.channel == channel and match(name)]

    def expired(self, now: float) -> list[Hook]:
        """Hooks whose EX has passed; a walk over the hooks only once one may have."""
        if not self.expiring or now < self.soonest:
            return []
        gone = [h for h in self.hooks.values() if h.expired(now)]
        left = [h.expires_at for h in self.hooks.values() if h.expires_at is not None and not h.expired(now)]
        self.soonest = min(left, default=float("inf"))
        return gone

    def clear(self) -> list[Hook]:
        gone = list(self.hooks.values())
        self.hooks.clear()
        self.keys.clear()
        self.expiring = 0
        self.soonest = float("inf")
        return gone


class Groups:
    """Tile38's groups: one id per (hook, key, object) from the object's entering a fence
    until it leaves the key, so consumers can tie an enter to its exit."""

    _counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
    _machine = int.from_bytes(os.urandom(3), "big")

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str, dict[str, str]]] = {}

    @classmethod
    def new_id(cls) -> str:
        """A 24-hex-digit id in the layout of Tile38's bsonID (time, machine, pid, counter)."""
        return (f"{int(time.time()) & 0xFFFFFFFF:08x}{cls._machine:06x}{os.getpid() & 0xFFFF:04x}"
                f"{next(cls._counter) & 0xFFFFFF:06x}")

    def get(self, hook: str, key: str, oid: str) -> str:
        return self._by_key.get(key, {}).get(oid, {}).get(hook, "")

    def connect(self, hook: str, key: str, oid: str) -> str:
        gid = self.new_id()
        self._by_key.setdefault(key, {}).setdefault(oid, {})[hook] = gid
        return gid

    def disconnect(self, hook: str, key: str, oid: str) -> None:
        self._by_key.get(key, {}).get(oid, {}).pop(hook, None)

    def drop_object(self, key: str, oid: str) -> None:
        ids = self._by_key.get(key)
        if ids is not None:
            ids.pop(oid, None)

    def drop_key(self, key: str) -> None:
        self._by_key.pop(key, None)

    def drop_hook(self, hook: str) -> None:
        for ids in self._by_key.values():
            for hooks in ids.values():
                hooks.pop(hook, None)


@dataclass(slots=True, eq=False)
class LiveFence:
    """A connection turned into an event stream by NEARBY|WITHIN|INTERSECTS ... FENCE."""

    client: Client
    fence: Fence


class FenceEngine:
    def __init__(self, server: Server) -> None:
        self.server = server
        self._registries: weakref.WeakKeyDictionary[Database, Registry] = weakref.WeakKeyDictionary()
        self.live: dict[str, set[LiveFence]] = {}
        self.groups = Groups()
        self.events = 0  # messages produced (all outputs)
        self._db: Database | None = None
        self._reg: Registry | None = None

    # --- definitions ---------------------------------------------------------------------
    def registry(self, db: Database) -> Registry:
        reg = self._registries.get(db)
        if reg is None:
            reg = self._registries[db] = Registry()
            self._db = None  # `active` looks again
        return reg

    @property
    def active(self) -> bool:
        """Whether a write must report its changes: any live fence, hook or channel."""
        if self.live:
            return True
        db = self.server.db
        if db is not self._db:
            self._db, self._reg = db, self._registries.get(db)
        return bool(self._reg)

    def hook_removed(self, hook: Hook) -> None:
        """A hook or channel was deleted, replaced or expired: forget its groups and queue."""
        self.groups.drop_hook(hook.name)
        if not hook.channel:
            self.server.hook_sink.forget(hook.name)

    def flush(self, db: Database) -> None:
        for hook in self.registry(db).clear():
            self.hook_removed(hook)

    def expired_records(self, now: float) -> list[list[bytes]]:
        """DELHOOK/DELCHAN records for the leader's hooks whose EX has passed (Tile38 logs
        them, so followers and a replay drop them too)."""
        reg = self._registries.get(self.server.db)
        if reg is None:
            return []
        return [[b"delchan" if h.channel else b"delhook", h.name.encode("utf-8", "surrogateescape")]
                for h in reg.expired(now)]

    # --- live fences ---------------------------------------------------------------------
    def add_live(self, client: Client, fence: Fence) -> LiveFence:
        lf = LiveFence(client, fence)
        self.live.setdefault(fence.key, set()).add(lf)
        return lf

    def remove_live(self, lf: LiveFence) -> None:
        fences = self.live.get(lf.fence.key)
        if fences is not None:
            fences.discard(lf)
            if not fences:
                del self.live[lf.fence.key]

    # --- events --------------------------------------------------------------------------
    def nearby(self, key: str, lat: float, lon: float, meters: float) -> list[tuple[str, GeoObject, float]]:
        """Spatial objects of `key` within `meters` of a point (every one when meters < 0),
        with their center distance (ROAM)."""
        col = self.server.db.get(key)
        if col is None:
            return []
        if meters < 0:
            pairs: Iterable[tuple[str, Any]] = ((oid, item) for oid, item in col.items.items())
        else:
            batch = query.nearby(col.points, col.shapes, lat, lon, meters)
            ids = batch.ids(0, len(batch))
            pairs = ((oid, col.items.get(oid)) for oid in ids)
        out = []
        now = time.time()
        for oid, item in pairs:
            if item is None or item.expired(now) or not item.obj.is_spatial:
                continue
            olat, olon = item.obj.center()
            out.append((oid, item.obj, haversine(lat, lon, olat, olon)))
        return out

    def notify(self, changes: list[Change], db: Database) -> None:
        """Turn a write's changes into events (called by dispatch after the write)."""
        server = self.server
        if db is not server.db:
            return  # a full resync building its dataset: nobody watches it yet
        reg = self._registries.get(db)
        leader = server.follower is None
        now = time.time()
        for ch in changes:
            ns = time.time_ns()
            try:
                if reg is not None and (kf := reg.keys.get(ch.key)) is not None:
                    self._hooks(kf.candidates(ch), ch, ns, now, leader)
                for lf in list(self.live.get(ch.key, ())):
                    for msg in fence_match("", (), lf.fence, ch, ns, self.groups, self.nearby):
                        self.events += 1
                        lf.client.send_event(encode(msg))
            except Exception:  # the write is done and logged: a fence bug must not fail it
                log.exception("fence evaluation failed", extra={"key": ch.key, "id": ch.oid})
            if ch.command == "del":
                self.groups.drop_object(ch.key, ch.oid)
            elif ch.command == "drop":
                self.groups.drop_key(ch.key)

    def _hooks(self, candidates: list[Hook], ch: Change, ns: int, now: float, leader: bool) -> None:
        out: list[tuple[Message, Hook]] = []
        for hook in candidates:
            if hook.expired(now) or (not leader and not hook.channel):
                continue
            for msg in fence_match(hook.name, hook.metas, hook.fence, ch, ns, self.groups, self.nearby):
                out.append((msg, hook))
        if not out:
            return
        out.sort(key=lambda mh: sort_key(mh[0]))  # stable: Tile38's order (detect, then hook)
        pubsub, sink = self.server.pubsub, self.server.hook_sink
        for msg, hook in out:
            self.events += 1
            payload = encode(msg)
            if hook.channel:
                pubsub.publish(hook.name, payload, known_json=True)
            else:
                sink.enqueue(hook.name, hook.endpoints, payload)
