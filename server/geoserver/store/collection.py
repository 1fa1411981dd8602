"""A collection (Tile38 "key"): objects by id in id order, their fields and expiry, and the
spatial index that search commands query.

Plain points (no z, no fields, no expiry: most objects of a fleet) are stored compactly: the
id maps to the PLAIN marker and the coordinates live only in the point index, ~280 bytes less
per object than an `Item`, its `GeoObject`, its bbox tuple and two floats. `Items`, the id-ordered
mapping, hands out an `Item` built from the index on every read (`get`, `[]`, `items()`,
`values()`, `pop`), equal to the one stored before; writing `fields` or `expires_at` of such
an item (FSET, EXPIRE) stores it in place of the marker, so the change sticks.

Ids (and the database's keys) are in byte order, as Tile38 orders them. A str's code-point order
is the byte order of its UTF-8, so valid UTF-8 ids are compared as plain str (in C); only an id
holding bytes that are not UTF-8 (escaped as U+DC80..U+DCFF by `binary.text`, which sort
among the code points instead of after U+10FFFF or before U+0080) is held in the order list as
a `RawOrder`, a str that compares by its bytes. `IdList` converts every id it is given or asked
about, so callers (and the compiled fast path, through `_pending` and `islice`) pass plain str.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from sortedcontainers import SortedDict, SortedList

from geoserver.binary import raw, text
from geoserver.store import index
from geoserver.store.fields import FieldValue, is_zero
from geoserver.store.geometry import GeoObject
from geoserver.store.index import PointIndex, ShapeBoxes


def literal_prefix(*patterns: str) -> str:
    """What every id matching any of the (fnmatch) globs starts with: the longest common start
    of their text up to the first wildcard."""
    stems = []
    for pattern in patterns:
        cut = next((i for i, ch in enumerate(pattern) if ch in "*?["), len(pattern))
        stems.append(pattern[:cut])
    first, last = min(stems, default=""), max(stems, default="")
    for i, ch in enumerate(first):  # the common start of the extremes is everyone's
        if ch != last[i]:
            return first[:i]
    return first


_ESCAPED = re.compile("[\udc80-\udcff]")  # a byte that is not UTF-8, as binary.text keeps it


def _bytes(value: str) -> bytes:
    try:
        return raw(value)
    except UnicodeEncodeError:  # another lone surrogate (no id has one): its code-point place
        return b"".join(raw(ch) if "\udc80" <= ch <= "\udcff" else ch.encode("utf-8", "surrogatepass")
                        for ch in value)


class RawOrder(str):
    """An id or key holding bytes that are not UTF-8, compared by its bytes (equal to, and hashed
    as, the plain str)."""

    __slots__ = ()

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return _bytes(self) < _bytes(other)

    def __le__(self, other: str) -> bool:  # type: ignore[override]
        return _bytes(self) <= _bytes(other)

    def __gt__(self, other: str) -> bool:  # type: ignore[override]
        return _bytes(self) > _bytes(other)

    def __ge__(self, other: str) -> bool:  # type: ignore[override]
        return _bytes(self) >= _bytes(other)

    __hash__ = str.__hash__
    __eq__ = str.__eq__
    __ne__ = str.__ne__


def byte_ordered(value: str) -> str:
    """`value` as the id order compares it: itself when valid UTF-8, else a RawOrder."""
    if value.isascii() or value.isprintable() or value.__class__ is RawOrder \
            or _ESCAPED.search(value) is None:  # a lone surrogate is not printable
        return value
    return RawOrder(value)


def id_sorted(ids: Iterable[str], reverse: bool = False) -> list[str]:
    """`sorted(ids)` in byte order (Tile38's), as fast as sorted() when every id is UTF-8."""
    out = sorted(ids, reverse=reverse)
    if out and not "".join(out).isascii() and _ESCAPED.search("".join(out)):
        out = sorted(map(byte_ordered, out), reverse=reverse)
    return out


def prefix_end(prefix: str) -> str | None:
    """The first id, in byte order, after every id that starts with `prefix` (None: there is
    none: the prefix is all \\xff bytes)."""
    data = raw(prefix).rstrip(b"\xff")
    return text(data[:-1] + bytes((data[-1] + 1,))) if data else None


# pending ids that make IdList merge (the compiled fast path merges at the same count)
MERGE_AT = getattr(index._core, "MERGE_IDS_AT", 1024)


class IdList(SortedList):
    """sortedcontainers' SortedList of ids in byte order: every value given or asked about goes
    through `byte_ordered` (a no-op for ASCII and other UTF-8 ids).

    Inserts are buffered: `add` appends to `pending` (O(1); the compiled fast path appends there
    too, without a call into Python per id), and the pending ids are merged in, sorted, by the
    next read of the order or once MERGE_AT are waiting, so no merge holds the loop for long
    (an unbounded buffer would make the first read after a million-id load a 0.4 s stall).
    Every SortedList method reaches its state through the `_lists`, `_maxes`, `_index` and `_len`
    properties below, which merge first, so no method can see the order without the pending
    ids. The merge costs what SortedList.add does (~0.8 us an id at 100k ids, mostly cache
    misses on the compared strs), in one loop with the state in locals."""

    def __init__(self, iterable: Iterable[str] | None = None) -> None:
        self.pending: list[str] = []  # never rebound: the compiled fast path holds it
        super().__init__(iterable)

    def _merge(self) -> None:
        pending = self.pending
        values = sorted(map(byte_ordered, pending))
        pending.clear()  # first: the reads below see no pending ids
        state = self.__dict__
        lists, maxes, index = state["_lists_"], state["_maxes_"], state["_index_"]
        if maxes and len(values) * 4 < state["_len_"]:  # few: SortedList.add's steps, inline
            twice = self._load << 1
            pos = at = 0  # the values are sorted: each lands at or right of the one before
            last = -1  # the sublist the last value went into (-1: none, or it was split)
            for value in values:
                pos = bisect_right(maxes, value, pos)
                if pos == len(maxes):
                    pos -= 1
                    sublist = lists[pos]
                    sublist.append(value)
                    maxes[pos] = value
                    at = len(sublist)
                else:
                    sublist = lists[pos]
                    at = bisect_right(sublist, value, at if pos == last else 0)
                    sublist.insert(at, value)
                    at += 1
                last = pos
                if len(sublist) > twice:
                    self._expand(pos)  # the split (and the positional index dropped)
                    last = -1
                elif index:
                    child = self._offset + pos
                    while child:
                        index[child] += 1
                        child = (child - 1) >> 1
                    index[0] += 1
            state["_len_"] += len(values)
            return
        values.extend(chain.from_iterable(lists))  # many: two sorted runs, merged by one sort
        values.sort()
        load = self._load
        lists[:] = [values[i:i + load] for i in range(0, len(values), load)]
        maxes[:] = [sublist[-1] for sublist in lists]
        state["_len_"] = len(values)
        del index[:]

    def _state(name: str) -> property:  # type: ignore[misc]
        key = name + "_"

        def get(self: IdList) -> Any:
            if self.pending:
                self._merge()
            return self.__dict__[key]

        def put(self: IdList, value: Any) -> None:
            self.__dict__[key] = value

        return property(get, put)

    _lists = _state("_lists")
    _maxes = _state("_maxes")
    _index = _state("_index")
    _len = _state("_len")
    del _state

    def add(self, value: str) -> None:
        pending = self.pending
        pending.append(value)
        if len(pending) >= MERGE_AT:
            self._merge()

    def update(self, iterable: Iterable[str]) -> None:
        super().update(map(byte_ordered, iterable))

    def remove(self, value: str) -> None:
        if not value.isascii() and not value.isprintable():
            value = byte_ordered(value)
        # SortedList.remove, inline (every DEL takes this path)
        _maxes = self._maxes
        pos = bisect_left(_maxes, value) if _maxes else 0
        if pos == len(_maxes):
            raise ValueError(f"{value!r} not in list")
        _lists = self._lists
        idx = bisect_left(_lists[pos], value)
        if _lists[pos][idx] != value:
            raise ValueError(f"{value!r} not in list")
        self._delete(pos, idx)

    def discard(self, value: str) -> None:
        super().discard(byte_ordered(value))

    def __contains__(self, value: object) -> bool:
        return super().__contains__(byte_ordered(value) if isinstance(value, str) else value)

    def count(self, value: str) -> int:
        return super().count(byte_ordered(value))

    def index(self, value: str, start: int | None = None, stop: int | None = None) -> int:
        return super().index(byte_ordered(value), start, stop)

    def bisect_left(self, value: str) -> int:
        return super().bisect_left(byte_ordered(value))

    def bisect_right(self, value: str) -> int:
        return super().bisect_right(byte_ordered(value))

    bisect = bisect_right

    def irange(self, minimum: str | None = None, maximum: str | None = None,
               inclusive: tuple[bool, bool] = (True, True), reverse: bool = False) -> Iterator[str]:
        return super().irange(None if minimum is None else byte_ordered(minimum),
                              None if maximum is None else byte_ordered(maximum), inclusive, reverse)


class IdOrdered(SortedDict):
    """A SortedDict whose keys are in byte order (an `IdList`): a collection's ids, the keys."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        _list = self._list = IdList()
        self._list_add = _list.add
        self._pending = _list.pending  # new ids: the compiled fast path appends here
        self._merge_pending = _list._merge  # and calls this once MERGE_AT are waiting
        self._list_clear = _list.clear
        self._list_iter = _list.__iter__
        self._list_reversed = _list.__reversed__
        self._list_pop = _list.pop
        self._list_remove = _list.remove
        self._list_update = _list.update
        self.bisect_left = _list.bisect_left
        self.bisect = _list.bisect_right
        self.bisect_right = _list.bisect_right
        self.index = _list.index
        self.irange = _list.irange
        self.islice = _list.islice
        self._reset = _list._reset
        if args and args[0] is None:  # SortedDict.copy passes its key function first
            args = args[1:]
        if args or kwargs:
            self._update(*args, **kwargs)


@dataclass(slots=True)
class Item:
    obj: GeoObject
    fields: dict[str, FieldValue] | None = None
    expires_at: float | None = None  # unix time

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def field_list(self) -> list[tuple[str, FieldValue]]:
        """The fields by name in byte order (Tile38's)."""
        fields = self.fields
        return [(name, fields[name]) for name in id_sorted(fields)] if fields else []


class _Plain:
    """The marker of a compact plain point (its coordinates are in the point index)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "PLAIN"


PLAIN = _Plain()


class PointItem(Item):
    """An `Item` built from a compact plain point. Setting an attribute first stores the item
    in its collection in place of the marker (once), so EXPIRE / FSET through it persist."""

    __slots__ = ("_items", "_oid")

    def __setattr__(self, name: str, value: object) -> None:
        items = self._items
        if items is not None:
            object.__setattr__(self, "_items", None)
            if dict.get(items, self._oid) is PLAIN:
                dict.__setitem__(items, self._oid, self)
        object.__setattr__(self, name, value)


STORE_KINDS = (PLAIN, Item, GeoObject)  # for the compiled fast path (src/core/fastpath.cpp), which
# stores PLAIN for a plain point and Item(GeoObject("point", ...), fields, None) for one with fields

_new_item = PointItem.__new__
_put = object.__setattr__  # slot stores that bypass PointItem.__setattr__


def _point_item(items: Items, oid: str) -> PointItem:
    lat, lon = items.points.point(oid)
    item = _new_item(PointItem)
    _put(item, "obj", GeoObject("point", lat, lon, None, (lon, lat, lon, lat)))
    _put(item, "fields", None)
    _put(item, "expires_at", None)
    _put(item, "_items", items)
    _put(item, "_oid", oid)
    return item


_MISSING = object()


class Items(IdOrdered):
    """The objects of a collection by id, in id order (sortedcontainers' SortedDict: islice,
    irange, bisect for SCAN, CURSOR and MATCH ranges), where a compact plain point's value is
    PLAIN; every read that returns values returns Items (see the module docstring)."""

    def __init__(self, points: object) -> None:
        super().__init__()
        self.points = points

    def __getitem__(self, oid: str) -> Item:
        value = dict.__getitem__(self, oid)
        return _point_item(self, oid) if value is PLAIN else value

    def get(self, oid: str, default: object = None) -> object:  # type: ignore[override]
        value = dict.get(self, oid, default)
        return _point_item(self, oid) if value is PLAIN else value

    def pop(self, oid: str, default: object = _MISSING) -> object:  # type: ignore[override]
        value = dict.get(self, oid, _MISSING)
        if value is _MISSING:
            if default is _MISSING:
                raise KeyError(oid)
            return default
        item = _point_item(self, oid) if value is PLAIN else value
        SortedDict.pop(self, oid)
        return item

    def popitem(self, index: int = -1) -> tuple[str, Item]:
        oid = self.keys()[index]
        return oid, self.pop(oid)

    def setdefault(self, oid: str, default: object = None) -> object:
        raise NotImplementedError("Items.setdefault")

    def raw(self, oid: str) -> object:
        """The stored value: an Item, PLAIN, or None."""
        return dict.get(self, oid)


class Collection:
    def __init__(self) -> None:
        self.points = PointIndex()  # the compiled core or its Python twin (store/index.py)
        self.items = Items(self.points)
        self.shapes = ShapeBoxes()
        self.num_strings = 0
        self.weight = 0  # approximate in-memory bytes

    def __len__(self) -> int:
        return len(self.items)

    def get(self, oid: str) -> Item | None:
        value = dict.get(self.items, oid)  # Items.get, one call less (every read takes this path)
        return _point_item(self.items, oid) if value is PLAIN else value

    def set(self, oid: str, obj: GeoObject, fields: dict[str, FieldValue] | None,
            expires_at: float | None, now: float | None = None) -> Item | None:
        """Insert or replace; returns the previous item. Fields given are merged into the old
        ones, unless the old item had expired by `now` (gone for readers: nothing to keep)."""
        items = self.items
        old = dict.get(items, oid)
        if old is None:
            items._list_add(oid)  # a new id: into the id order (SortedDict.__setitem__'s step)
        else:
            if old is PLAIN:
                old = _point_item(items, oid)
            # point -> point: the point index's insert moves it (in place when it stays in its cell)
            self._unindex(oid, old, keep_point=obj.kind == "point")
            if old.fields and not (now is not None and old.expired(now)):
                merged = dict(old.fields)
                if fields:
                    merged.update(fields)
                fields = merged
        if fields:
            fields = {k: v for k, v in fields.items() if not is_zero(v)} or None
        plain = (obj.kind == "point" and obj.z is None and not fields and expires_at is None
                 and type(obj.lat) is float and type(obj.lon) is float)  # as the index gives them back
        dict.__setitem__(items, oid, PLAIN if plain else Item(obj, fields, expires_at))
        self._index(oid, obj, fields)
        return old  # type: ignore[return-value]

    def delete(self, oid: str) -> Item | None:
        item = self.items.pop(oid, None)
        if item is not None:
            self._unindex(oid, item)  # type: ignore[arg-type]
        return item  # type: ignore[return-value]

    def set_field(self, item: Item, name: str, value: FieldValue) -> bool:
        """Set one field on an item in place; returns whether it changed anything."""
        current = item.fields.get(name) if item.fields else None
        if is_zero(value):
            if current is None:
                return False
            del item.fields[name]  # type: ignore[union-attr]
            if not item.fields:
                item.fields = None
            self.weight -= len(name) + 8
            return True
        if current == value:
            return False
        if item.fields is None:
            item.fields = {}
        if current is None:
            self.weight += len(name) + 8
        item.fields[name] = value
        return True

    def prefix_bounds(self, prefix: str) -> tuple[int, int]:
        """Positions [lo, hi) in id order of the ids that start with `prefix` (all for "")."""
        if not prefix:
            return 0, len(self.items)
        lo = self.items.bisect_left(prefix)
        end = prefix_end(prefix)
        return lo, len(self.items) if end is None else self.items.bisect_left(end)

    def ids_between(self, lo: int, hi: int) -> Iterator[str]:
        return self.items.islice(lo, hi)

    @property
    def num_points(self) -> int:
        return len(self.points)

    def bbox(self) -> tuple[float, float, float, float] | None:
        """(minlon, minlat, maxlon, maxlat) of every spatial object, from the index arrays in
        one vectorised pass (BOUNDS; a walk over the items took 0.5 s at 400k objects)."""
        boxes = []
        points = self.points.bounds()
        if points is not None:
            boxes.append(points)
        if len(self.shapes):
            _ids, a = self.shapes.arrays()
            mins, maxs = np.nanmin(a, axis=0), np.nanmax(a, axis=0)
            boxes.append((mins[0], mins[1], maxs[2], maxs[3]))
        if not boxes:
            return None
        return (float(min(b[0] for b in boxes)), float(min(b[1] for b in boxes)),
                float(max(b[2] for b in boxes)), float(max(b[3] for b in boxes)))

    def _index(self, oid: str, obj: GeoObject, fields: dict[str, FieldValue] | None) -> None:
        if obj.kind == "point":
            self.points.insert(oid, obj.lat, obj.lon)
        elif obj.kind == "geojson":
            assert obj.bbox is not None
            self.shapes.insert(oid, obj.bbox)
        else:
            self.num_strings += 1
        self.weight += obj.weight() + len(oid)
        if fields:
            self.weight += sum(len(k) + 8 for k in fields)

    def _unindex(self, oid: str, item: Item, keep_point: bool = False) -> None:
        obj = item.obj
        if obj.kind == "point":
            if not keep_point:
                self.points.remove(oid)
        elif obj.kind == "geojson":
            self.shapes.remove(oid)
        else:
            self.num_strings -= 1
        self.weight -= obj.weight() + len(oid)
        if item.fields:
            self.weight -= sum(len(k) + 8 for k in item.fields)
