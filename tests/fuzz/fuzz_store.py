"""Fuzz target: the store path, command sequences -> the command table -> Database / Collection
with the compiled core (geoserver._core.PointGrid), against a reference model.

The input is read as a program (fuzzkit.Data): SET POINT / SET STRING / DEL / GET / NEARBY / WITHIN
/ SCAN / DROP on two keys, with ids from a pool (empty, binary, not UTF-8, CRLF, 64 KB, 1 MB) or raw
input bytes, and coordinates that are extremes (±90, ±180, -0, 5e-324, just past a bound), any raw
double (NaN, infinities, subnormals, 1e308) or text that is no number. Each command is encoded as
RESP, framed by RequestReader and executed in-process (fuzzkit.inproc_server). The model is a dict
of ids -> (lat, lon) or string per key, with its own haversine; what it checks:

- a write of a NaN / infinite / out-of-range coordinate is refused with the argument error (so it
  never reaches the core), a valid one is OK, and no reply is ever an "internal error";
- GET gives back exactly the stored coordinates; DEL and SCAN COUNT count as the model does; SCAN
  lists the ids in byte order (Tile38's); WITHIN BOUNDS gives exactly the ids in the box; NEARBY
  gives every id within the radius and none beyond (ids within 1e-6 relative of the radius either
  way are not judged), nearest first, also across the antimeridian and over the poles;
- after the program, each collection holds what the model holds: ids, the point index's
  coordinates and counts.

A second part drives geoserver._core.PointGrid directly with raw doubles and slot numbers:
non-finite coordinates raise ValueError, bad slots IndexError, nothing else escapes, and for
in-range input its answers equal the pure-Python twin's (the differential test's contract).

    python tests/fuzz/fuzz_store.py -atheris_runs=20000
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzkit
import hiredis
import numpy as np
from geoserver.protocol.framing import FrameLimits, RequestReader
from geoserver.protocol.resp import encode_command
from geoserver.store import index
from geoserver.store.database import Database

EARTH_RADIUS_M = 6371e3  # Tile38's radius (geo.DistanceTo)
KEYS = (b"fleet", b"\xffkey")
IDS = (b"a", b"b", b"truck1", b"", b"\xff\xfe", b"id\x00\x80", "é".encode(), "\U0001f69a".encode(),
       b"\r\n", b"*1\r\n", b"x" * 300, b"h" * (64 << 10), b"H" * (1 << 20), b"c")
LATS = (90.0, -90.0, 0.0, -0.0, 89.99999999, -89.99999999, 33.0, 33.005, 5e-324, 1e-300, 90.0000001,
        -90.0000001, 45.0)
LONS = (180.0, -180.0, 0.0, -0.0, 179.99999999, -179.99999999, -115.0, -115.005, 5e-324, 180.0000001,
        -180.0000001, 90.0)
NOT_NUMBERS = (b"nan", b"NaN", b"inf", b"-inf", b"+Inf", b"1e999", b"-1e999", b"", b"abc", b"1.2.3", b"--1")
METERS = (0.0, 1.0, 100.0, 1000.0, 50_000.0, 1e6, 2.0015e7, 2.1e7, 1e300)
LIMITS = FrameLimits(1024 * 1024, 64 << 20, 64 << 10, 64 << 20)

Model = dict[bytes, dict[bytes, tuple[float, float] | bytes]]

_server, _client, _execute = fuzzkit.inproc_server()
core = index._core


class KnownBug(AssertionError):
    """An open finding (tests/fuzz/corpus/store/bug-*); GEOFUZZ_KNOWN_BUGS=skip looks past it."""


def known(what: str) -> None:
    if fuzzkit.KNOWN_BUGS != "skip":
        raise KnownBug(what)


def number(d: fuzzkit.Data, extremes: tuple[float, ...], span: float) -> bytes:
    kind = d.below(8)
    if kind < 3:
        value = d.pick(extremes)
    elif kind < 5:
        value = span * ((d.byte() << 8 | d.byte()) / 32767.5 - 1.0)
    elif kind < 7:
        value = d.double()
    else:
        return d.pick(NOT_NUMBERS)
    return repr(value).encode()


def parse(text: bytes, bound: float) -> float | None:
    """The model's coordinate rule: a finite decimal number within ±bound."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and -bound <= value <= bound else None


def distance(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dlon = math.radians(lon2 - lon1)
    h = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dlon / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def call(argv: list[bytes]) -> object:
    """Frame argv as a client would send it, execute it, parse the RESP reply."""
    reader = RequestReader(LIMITS)
    reader.feed(encode_command(argv))
    assert reader.next() == argv and reader.buffered == 0
    reply = _execute(argv, False)
    parser = hiredis.Reader()
    parser.feed(reply)
    value = parser.gets()
    assert value is not False and parser.gets() is False, f"{argv[:3]!r}: not one RESP reply"
    if isinstance(value, hiredis.ReplyError):
        assert "internal error" not in str(value), f"{short(argv)}: {value}"
    return value


def short(argv: list[bytes]) -> list[bytes]:
    return [a[:24] for a in argv]


def is_error(value: object) -> bool:
    return isinstance(value, hiredis.ReplyError)


def an_id(d: fuzzkit.Data) -> bytes:
    return d.take(d.below(24)) if d.below(5) == 0 else d.pick(IDS)


def step(d: fuzzkit.Data, model: Model) -> None:
    op = d.below(10)
    key = d.pick(KEYS)
    objects = model.setdefault(key, {})
    if op <= 2:  # SET key id POINT lat lon
        oid, lat, lon = an_id(d), number(d, LATS, 90.0), number(d, LONS, 180.0)
        got = call([b"SET", key, oid, b"POINT", lat, lon])
        la, lo = parse(lat, 90.0), parse(lon, 180.0)
        if la is None or lo is None:
            assert is_error(got), f"SET POINT {lat!r} {lon!r} was accepted: {got!r}"
        else:
            assert got == b"OK", f"SET POINT {lat!r} {lon!r}: {got!r}"
            objects[oid] = (la, lo)
    elif op == 3:  # SET key id STRING value
        oid, value = an_id(d), d.take(d.below(16))
        assert call([b"SET", key, oid, b"STRING", value]) == b"OK"
        objects[oid] = value
    elif op == 4:  # DEL key id
        oid = an_id(d)
        assert call([b"DEL", key, oid]) == (1 if objects.pop(oid, None) is not None else 0)
    elif op == 5:  # GET key id [POINT]
        oid = an_id(d)
        want = objects.get(oid)
        if isinstance(want, bytes):
            assert call([b"GET", key, oid]) == want
        else:
            got = call([b"GET", key, oid, b"POINT"])
            if want is None:
                assert got is None, f"GET of a missing id: {got!r}"
            else:
                assert isinstance(got, list) and [float(v) for v in got] == list(want), (got, want)
    elif op == 6:  # NEARBY key LIMIT n IDS POINT lat lon meters
        lat, lon = number(d, LATS, 90.0), number(d, LONS, 180.0)
        meters = repr(d.pick(METERS)).encode() if d.below(4) else number(d, METERS, 2e7)
        got = call([b"NEARBY", key, b"LIMIT", b"100000", b"IDS", b"POINT", lat, lon, meters])
        la, lo, r = parse(lat, 90.0), parse(lon, 180.0), parse(meters, math.inf)
        if la is None or lo is None or r is None or r < 0:
            assert is_error(got), f"NEARBY {lat!r} {lon!r} {meters!r} was accepted: {got!r}"
            return
        assert isinstance(got, list) and got[0] == 0, got
        check_nearby(objects, la, lo, r, got[1])
    elif op == 7:  # WITHIN key IDS BOUNDS minlat minlon maxlat maxlon
        box = [number(d, LATS, 90.0), number(d, LONS, 180.0), number(d, LATS, 90.0), number(d, LONS, 180.0)]
        got = call([b"WITHIN", key, b"LIMIT", b"100000", b"IDS", b"BOUNDS", *box])
        a, b, c, e = (parse(v, 90.0 if i % 2 == 0 else 180.0) for i, v in enumerate(box))
        if None in (a, b, c, e) or a > c or b > e:  # type: ignore[operator]
            assert is_error(got), f"WITHIN BOUNDS {box!r} was accepted: {got!r}"
            return
        want = {oid for oid, v in objects.items()
                if isinstance(v, tuple) and a <= v[0] <= c and b <= v[1] <= e}  # type: ignore[operator]
        assert isinstance(got, list) and got[0] == 0 and len(got[1]) == len(set(got[1])), got
        extra, missing = set(got[1]) - want, want - set(got[1])
        assert not extra and not missing, f"WITHIN {box!r}: extra {extra!r} missing {missing!r}"
    elif op == 8:  # SCAN key [COUNT | LIMIT n IDS]
        if d.below(2):
            assert call([b"SCAN", key, b"COUNT"]) == len(objects)
            return
        got = call([b"SCAN", key, b"LIMIT", b"100000", b"IDS"])
        assert isinstance(got, list) and got[0] == 0 and set(got[1]) == set(objects), got
        assert got[1] == sorted(objects), "SCAN does not list the ids in byte order (Tile38's)"
    else:  # DROP key
        assert call([b"DROP", key]) == (1 if objects else 0)
        objects.clear()


def check_nearby(objects: dict, lat: float, lon: float, meters: float, ids: list[bytes]) -> None:
    assert len(ids) == len(set(ids)), ids
    tol = 1e-6 * meters + 1e-3
    dist = {oid: distance(lat, lon, *v) for oid, v in objects.items() if isinstance(v, tuple)}
    got = set(ids)
    for oid, m in dist.items():
        if m < meters - tol:
            assert oid in got, f"NEARBY {lat} {lon} {meters}: {oid[:24]!r} at {m} m missing"
        elif m > meters + tol:
            assert oid not in got, f"NEARBY {lat} {lon} {meters}: {oid[:24]!r} at {m} m listed"
    assert got <= set(dist), f"NEARBY listed ids that are no points: {got - set(dist)!r}"
    order = [dist[oid] for oid in ids]
    assert all(x <= y + tol for x, y in itertools.pairwise(order)), "NEARBY is not nearest first"


def check_state(model: Model) -> None:
    from geoserver.binary import raw, text

    for key, objects in model.items():
        col = _server.db.get(text(key))
        if col is None:
            assert not objects, f"collection {key!r} is gone, the model has {len(objects)}"
            continue
        assert [raw(k) for k in col.items] == sorted(objects), "ids not in byte order"
        points = {text(o): v for o, v in objects.items() if isinstance(v, tuple)}
        assert len(col.points) == len(points) and col.num_strings == len(objects) - len(points)
        for oid, where in points.items():
            assert col.points.point(oid) == where, (oid[:24], col.points.point(oid), where)


def core_part(d: fuzzkit.Data) -> None:
    """Raw doubles and slots into the compiled index; in-range input compared with the twin."""
    if core is None:
        return
    c, p = core.PointGrid(), index.PointGrid()
    scratch = core.PointGrid()  # takes the out-of-range inserts (the twin has no clamp to agree on)
    names: list[str] = []
    for _ in range(d.below(24)):
        if not d.left():
            break
        op = d.below(4)
        raw = [d.double() if d.below(2) else d.pick((*LATS, *LONS)) for _ in range(8)]
        in_range = all(math.isfinite(v) and abs(v) <= 180 for v in raw) and \
            all(abs(v) <= 90 for v in raw[::2])
        if op == 0:
            oid = d.pick(IDS[:10]).decode("utf-8", "surrogateescape")
            grid = c if in_range else scratch
            try:
                grid.insert(oid, raw[0], raw[1])
            except ValueError:
                assert not (math.isfinite(raw[0]) and math.isfinite(raw[1])), raw[:2]
                continue
            if in_range:
                p.insert(oid, raw[0], raw[1])
                names.append(oid)
        elif op == 1 and names:
            oid = d.pick(names)
            c.remove(oid)
            p.remove(oid)
        elif op == 2:
            a, b, e, f = raw[0], raw[1], raw[2], raw[3]
            try:
                got = c.slots_in_box(min(a, e), min(b, f), max(a, e), max(b, f))
                c.ring(raw[4], raw[5], min(a, e), min(b, f), max(a, e), max(b, f), raw[6], raw[7])
            except ValueError:
                assert not all(math.isfinite(v) for v in (a, b, e, f)), raw
                continue
            if in_range:
                assert got.tolist() == p.slots_in_box(min(a, e), min(b, f), max(a, e), max(b, f)).tolist()
        else:
            n = 1 + d.below(4)
            slots = np.frombuffer(d.take(8 * n).ljust(8 * n, b"\0"), dtype=np.int64)
            try:
                c.ids_of(slots)
                c.coords(slots)
            except IndexError:
                assert any(s < 0 or s >= c.capacity() for s in slots.tolist()), slots
    assert c.names() == p.names() and len(c) == len(p) and c.bounds() == p.bounds()


def one_input(data: bytes) -> None:
    d = fuzzkit.Data(data)
    if d.below(8) == 0:
        core_part(d)
        return
    _server.db = Database()
    model: Model = {}
    while d.left():
        step(d, model)
    check_state(model)


if __name__ == "__main__":
    fuzzkit.main(one_input, "store")
