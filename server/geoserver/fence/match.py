"""Tile38's fenceMatch, ported: one change against one fence gives the event messages.

Pure: the caller passes the time, the group bookkeeping (`Groups`) and, for ROAM fences, a
lookup of the objects near a point (`Nearby`). Messages are dicts in Tile38's field order
(command, group, detect, hook, meta, key, time, id, object/point/..., fields, distance,
nearby/faraway); `encode` turns one into the exact JSON bytes Tile38 sends.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import shapely

from geoserver.commands.replies import bounds_json, field_out, object_json, point_json
from geoserver.fence.model import Change, Fence
from geoserver.protocol.output import dumps_json
from geoserver.store.collection import Item
from geoserver.store.geometry import EARTH_RADIUS_M, GeoObject, encode_geohash, num
from geoserver.store.glob import matcher
from geoserver.store.query import Area

Message = dict[str, Any]
# (id, object, meters) of the objects of a key near a point: Nearby(key, lat, lon, meters)
Nearby = Callable[[str, float, float, float], list[tuple[str, GeoObject, float]]]
DETECT_ORDER = {"exit": 1, "outside": 2, "enter": 3, "inside": 4}  # Tile38's sortMsgs


class Groups(Protocol):
    def get(self, hook: str, key: str, oid: str) -> str: ...
    def connect(self, hook: str, key: str, oid: str) -> str: ...
    def disconnect(self, hook: str, key: str, oid: str) -> None: ...


def haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def time_text(ns: int) -> str:
    """Go's RFC 3339 with nanoseconds, trailing zeros trimmed (`...05.12345Z`), in UTC."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return base + (f".{frac:09d}".rstrip("0") if frac else "") + "Z"


def point_in_area(area: Area, lat: float, lon: float) -> bool:
    """A point inside the area or on its boundary (WITHIN and INTERSECTS agree for points)."""
    if area.kind == "circle":
        return haversine(area.lat, area.lon, lat, lon) <= area.meters
    if not (area.minlat <= lat <= area.maxlat and area.minlon <= lon <= area.maxlon):
        return False
    if area.kind == "box":
        return True
    if area.kind == "point":
        return lat == area.lat and lon == area.lon
    return bool(shapely.intersects_xy(area.geometry(), lon, lat))


def object_in_area(area: Area, obj: GeoObject, within: bool) -> bool:
    """Tile38's fenceMatchObject: the object within (WITHIN) or intersecting the area."""
    if obj.kind == "point":
        return point_in_area(area, obj.lat, obj.lon)
    if obj.bbox is None:
        return False
    minlon, minlat, maxlon, maxlat = obj.bbox
    if minlon > area.maxlon or maxlon < area.minlon or minlat > area.maxlat or maxlat < area.minlat:
        return False
    geom = area.geometry()
    return bool(shapely.covered_by(obj.shape(), geom) if within else shapely.intersects(obj.shape(), geom))


def _in_fence(fence: Fence, item: Item | None) -> bool:
    if item is None or fence.area is None or fence.roam is not None or not item.obj.is_spatial:
        return False
    return object_in_area(fence.area, item.obj, fence.cmd == "within")


def _crosses(fence: Fence, old: GeoObject, new: GeoObject) -> bool:
    """The segment between the old and new centers touches the area (INTERSECTS, even for a
    WITHIN fence, as Tile38)."""
    assert fence.area is not None
    (lat1, lon1), (lat2, lon2) = old.center(), new.center()
    line = shapely.LineString([(lon1, lat1), (lon2, lat2)])
    return bool(shapely.intersects(line, fence.area.geometry()))


def _globs_match(fence: Fence, oid: str) -> bool:
    matches = fence.search.matches
    return not matches or any(m(oid) for m in matches)


def _distance(fence: Fence, obj: GeoObject) -> float:
    """Tile38's geojson Distance: between the centers of the object and the fence area."""
    area = fence.area
    if area is None:
        return 0.0
    lat, lon = obj.center()
    if area.kind in ("circle", "point"):
        return haversine(lat, lon, area.lat, area.lon)
    return haversine(lat, lon, (area.minlat + area.maxlat) / 2, (area.minlon + area.maxlon) / 2)


def _tail(fence: Fence, oid: str, item: Item) -> Message | None:
    """The object part of a message in the fence's output kind; None for COUNT."""
    s = fence.search
    out, obj = s.output, item.obj
    if out == "COUNT":
        return None
    tail: Message = {"id": oid}
    if out == "IDS":
        return tail
    if out == "OBJECTS":
        tail["object"] = object_json(obj)
    elif out == "POINTS":
        tail["point"] = point_json(obj)
    elif out == "BOUNDS":
        tail["bounds"] = bounds_json(obj)
    else:
        tail["hash"] = encode_geohash(*obj.center(), s.precision)
    if not s.nofields and item.fields:
        tail["fields"] = {name: field_out(value) for name, value in item.field_list()}
    return tail


def _head(command: str, hook: str, metas: tuple[tuple[str, str], ...], key: str, ns: int) -> Message:
    msg: Message = {"command": command}
    if hook:
        msg["hook"] = hook
    if metas:
        msg["meta"] = dict(metas)
    msg["key"] = key
    msg["time"] = time_text(ns)
    return msg


def _makemsg(command: str, group: str, detect: str, hook: str, metas: tuple[tuple[str, str], ...],
             key: str, ns: int, tail: Message) -> Message:
    msg: Message = {"command": command, "group": group, "detect": detect}
    if hook:
        msg["hook"] = hook
    if metas:
        msg["meta"] = dict(metas)
    msg["key"] = key
    msg["time"] = time_text(ns)
    msg.update(tail)
    return msg


def fence_match(hook: str, metas: tuple[tuple[str, str], ...], fence: Fence, ch: Change, ns: int,
                groups: Groups, nearby: Nearby) -> list[Message]:
    """The messages of one change for one fence (Tile38's FenceMatch, COMMANDS applied)."""
    msgs = _fence_match(hook, metas, fence, ch, ns, groups, nearby)
    if fence.accept is None:
        return msgs
    return [m for m in msgs if m["command"] in fence.accept]


def _fence_match(hook: str, metas: tuple[tuple[str, str], ...], fence: Fence, ch: Change, ns: int,
                 groups: Groups, nearby: Nearby) -> list[Message]:
    if ch.command == "drop":
        return [_head("drop", hook, metas, ch.key, ns)]
    item = ch.obj
    if item is None or not _globs_match(fence, ch.oid) or not item.obj.is_spatial:
        return []
    if ch.command == "fset" and fence.search.nofields:
        return []
    if ch.command == "del":
        msg = _head("del", hook, metas, ch.key, ns)
        msg["id"] = ch.oid
        msg["time"] = msg.pop("time")  # Tile38 puts the id before the time for del
        return [msg]
    accept = fence.search.accept
    roam_near: list[Message] = []
    roam_far: list[Message] = []
    if fence.roam is not None:
        if ch.command == "set":
            roam_near, roam_far = _roam(fence, ch, nearby)
            if not roam_near and not roam_far:
                return []
        detect = "roam"
    else:
        detect = "outside"
        nocross = False
        old = ch.old
        match1 = _in_fence(fence, old)
        if match1:
            assert old is not None
            match1 = accept(ch.oid, old)
            nocross = not match1
        match2 = _in_fence(fence, item)
        if match2:
            match2 = accept(ch.oid, item)
            nocross = not match2
        if match1 and match2:
            detect = "inside"
        elif match1:
            detect = "exit"
        elif match2:
            detect = "enter" if ch.command != "fset" else "inside"
        elif ch.command != "fset":
            if not accept(ch.oid, item):
                return []
            # only a fence that reports crossings needs the segment test: otherwise a
            # crossing reads as "outside" below anyway
            if (not nocross and old is not None and fence.detects("cross") and fence.area is not None
                    and old.obj.is_spatial and _crosses(fence, old.obj, item.obj)):
                detect = "cross"
    while not fence.detects(detect):
        if detect == "enter":
            detect = "inside"
        elif detect in ("exit", "cross"):
            detect = "outside"
        else:
            return []
    tail = _tail(fence, ch.oid, item)
    if tail is None:
        return []
    if fence.search.distance and fence.area is not None:
        tail["distance"] = num(_distance(fence, item.obj))
    if detect == "enter":
        group = groups.connect(hook, ch.key, ch.oid)
    elif detect == "cross":
        groups.disconnect(hook, ch.key, ch.oid)
        group = groups.connect(hook, ch.key, ch.oid)
    else:
        group = groups.get(hook, ch.key, ch.oid) or groups.connect(hook, ch.key, ch.oid)
    msgs = [_makemsg(ch.command, group, detect, hook, metas, ch.key, ns, tail)]
    if detect == "enter" and fence.detects("inside"):
        msgs.append(_makemsg(ch.command, group, "inside", hook, metas, ch.key, ns, tail))
    elif detect in ("exit", "cross") and fence.detects("outside"):
        msgs.append(_makemsg(ch.command, group, "outside", hook, metas, ch.key, ns, tail))
    elif detect == "roam":
        base = msgs[0]
        msgs = [m for m in msgs if m["command"] != "set"]
        msgs += [{**base, "nearby": n} for n in roam_near]
        msgs += [{**base, "faraway": f} for f in roam_far]
    return msgs


def _roam(fence: Fence, ch: Change, nearby: Nearby) -> tuple[list[Message], list[Message]]:
    """Tile38's fenceMatchRoam: objects newly or still near (nearby) and no longer near
    (faraway), nearest first. With NODWELL an object still near is not reported again."""
    roam = fence.roam
    assert roam is not None and ch.obj is not None
    new_obj = ch.obj.obj

    def near(obj: GeoObject | None) -> dict[str, tuple[GeoObject, float]]:
        if obj is None or not obj.is_spatial:
            return {}
        lat, lon = obj.center()
        match = matcher(roam.pattern) if roam.is_glob else roam.pattern.__eq__
        return {oid: (o, m) for oid, o, m in nearby(roam.key, lat, lon, roam.meters)
                if oid != ch.oid and match(oid)}

    old_near = near(ch.old.obj if ch.old is not None else None)
    new_near = near(new_obj)
    far = {oid: v for oid, v in old_near.items() if oid not in new_near}
    if fence.nodwell:
        new_near = {oid: v for oid, v in new_near.items() if oid not in old_near}
    nlat, nlon = new_obj.center()
    far_list = []
    for oid, (o, _m) in far.items():
        olat, olon = o.center()
        far_list.append((haversine(nlat, nlon, olat, olon), oid, o))
    near_list = [(m, oid, o) for oid, (o, m) in new_near.items()]
    return ([_roam_part(fence, ch, oid, o, m, nearby) for m, oid, o in sorted(near_list, key=_by_meters)],
            [_roam_part(fence, ch, oid, o, m, nearby) for m, oid, o in sorted(far_list, key=_by_meters)])


def _by_meters(entry: tuple[float, str, GeoObject]) -> tuple[float, str]:
    return entry[0], entry[1]


def _roam_part(fence: Fence, ch: Change, oid: str, obj: GeoObject, meters: float, nearby: Nearby) -> Message:
    roam = fence.roam
    assert roam is not None
    part: Message = {"key": roam.key, "id": oid, "object": object_json(obj),
                     "meters": num(math.floor(meters * 1000) / 1000)}
    if roam.scan:
        part["scan"] = [{"id": oid, "self": True, "object": object_json(obj)}] + [
            {"id": other, "object": object_json(o)}
            for other, o, _m in nearby(roam.key, *obj.center(), -1.0)
            if other != oid and matcher(oid + roam.scan)(other)]
    return part


def encode(msg: Message) -> bytes:
    """The exact JSON bytes of a message. Every float in it went through `num` (Go prints
    `33`, not `33.0`): objects, points and fields by the reply helpers, distances here."""
    return dumps_json(msg)


def sort_key(msg: Message) -> tuple[int, str]:
    return DETECT_ORDER.get(msg.get("detect", ""), 0), msg.get("hook", "")

