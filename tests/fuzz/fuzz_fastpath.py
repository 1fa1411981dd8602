"""Fuzz target: request bytes -> the compiled whole-command fast path (geoserver.fastpath, C++
`geoserver._core.execute_batch`) against the Python path (RequestReader -> dispatch.execute).

Two in-process servers, each with an AOF buffer: one runs every batch as server.Client._process
does (fastpath.run first, then the reader and the command table for what the core declines), the
other only through the command table. Both get the same byte stream in the same pieces. The
stream is either the input's own bytes (first byte 0 mod 4) or a program read from the input:
the hot forms (`SET key id POINT lat lon`, `GET key id [POINT]`, `PING`, `NEARBY key [LIMIT n]
IDS|COUNT POINT lat lon meters`, `FSET key id [XX] name value ...`) and their near misses (other
casings, options, FIELD / EX, RETURN, STRING, other NEARBY outputs and options, non-canonical
RESP, inline lines, numbers Python refuses or prints differently, binary and 64 KB ids, new
keys), under the default or tiny limits and with a reply budget per fastpath.run call from none
to unbounded.
Invariants: the core never crashes, and after every piece the replies so far, the AOF records
and at the end the datasets are byte-identical; so a request over a limit is refused by both.

Skipped (nothing to fuzz) while geoserver.fastpath is absent or off (GEOSERVER_FASTPATH=0, no
compiled core).

    python tests/fuzz/fuzz_fastpath.py -atheris_runs=20000
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzkit
from geoserver import dispatch
from geoserver.aof.log import AofLog
from geoserver.errors import ProtocolError
from geoserver.protocol.framing import FrameLimits
from geoserver.protocol.output import render_error
from geoserver.store.collection import PLAIN
from geoserver.store.database import Database

try:
    from geoserver import fastpath
except Exception as exc:  # not landed, or its module and the built core disagree (mid-rebuild)
    fastpath = None  # type: ignore[assignment]
    UNAVAILABLE = f"geoserver.fastpath cannot be imported: {exc!r}"
else:
    UNAVAILABLE = "" if fastpath.ENABLED else "geoserver.fastpath is off (GEOSERVER_FASTPATH=0 or no core)"

ENABLED = not UNAVAILABLE

DEFAULT = FrameLimits(1024 * 1024, 64 << 20, 64 << 10, 64 << 20)
TINY = FrameLimits(6, 40, 80, 120)
KEYS = (b"fleet", b"other", b"\xff\xfekey", b"new", b"")
IDS = (b"a", b"b", b"truck1", b"x" * 30, b"\xff", "é".encode(), b"", b"id 1", b"\r\n", b"h" * (64 << 10))
NUMS = (b"33", b"33.5", b"-115.25", b"0", b"-0", b"0.0001", b"1e-5", b"0.00001234", b"12.345678901234567",
        b"1e1", b"+33", b".5", b"5.", b"1_0", b" 33", b"33 ", b"inf", b"nan", b"-nan", b"1e400", b"91",
        b"-181", b"180", b"-180", b"90", b"-90", b"0x10", b"33.0", b"1E2", b"abc", b"", b"5e-324",
        b"1e-300", b"89.99999999999999", b"179.99999999999997", b"00033", b"-0.0", b"1" * 400)


FIELD_NAMES = (b"speed", b"speed", b"heading", b"z", b"LAT", b"Lon", b"", b"\xc3\xa9", b"POINT", b"x" * 300)
METERS = (b"0", b"1", b"100", b"1000", b"50000", b"2e7", b"1e300", b"-1", b"nan", b"0.5", b"1e-5")


def resp(args: list[bytes], leading_zero: bool = False) -> bytes:
    fmt = b"$0%d\r\n%s\r\n" if leading_zero else b"$%d\r\n%s\r\n"
    return b"*%d\r\n" % len(args) + b"".join(fmt % (len(a), a) for a in args)


def number(d: fuzzkit.Data) -> bytes:
    return repr(d.double()).encode() if d.below(6) == 0 else d.pick(NUMS)


def request(d: fuzzkit.Data) -> bytes:
    key, oid = d.pick(KEYS), d.pick(IDS)
    set_ = d.pick((b"SET", b"set", b"Set", b"SeT"))
    point = d.pick((b"POINT", b"point", b"Point"))
    r = d.below(25)
    if r < 8:
        args = [set_, key, oid, point, number(d), number(d)]
    elif r < 11:
        args = [d.pick((b"GET", b"get")), key, oid, *([point] if d.below(2) else [])]
    elif r == 11:
        args = [b"PING", *([d.take(d.below(8))] if d.below(2) else [])]
    elif r == 12:
        args = [set_, key, oid, point, number(d), number(d), d.pick((b"1", b"EX", b"NX", b"XX")), b"100"]
    elif r == 13:  # FIELD pairs (the core takes up to 8 non-zero numbers) before the point
        pairs = [[d.pick((b"FIELD", b"field", b"FIELDS")), d.pick(FIELD_NAMES), number(d)]
                 for _ in range(1 + d.below(10))]
        args = [set_, key, oid, *(a for pair in pairs for a in pair), point, number(d), number(d)]
    elif r == 14:
        args = [set_, key, oid, b"STRING", d.take(d.below(8))]
    elif r == 15:
        args = [b"DEL", key, oid]
    elif r == 16:
        args = [b"GET", key, oid, d.pick((b"WITHFIELDS", b"OBJECT", b"HASH", b"BOUNDS"))]
    elif r == 17:  # an inline line of a hot form
        return b"SET %s %s POINT %s %s\r\n" % (key or b"k", oid or b"i", number(d), number(d))
    elif r == 18:  # non-canonical RESP of a hot form
        return resp([b"SET", key, oid, b"POINT", number(d), number(d)], leading_zero=True)
    elif r < 23:  # NEARBY key [LIMIT n] IDS|COUNT POINT lat lon meters, and near misses
        limit = [b"LIMIT", d.pick((b"1", b"3", b"100", b"0", b"-1", b"x", b"99999999999999999999"))]
        args = [d.pick((b"NEARBY", b"nearby")), key, *(limit if d.below(2) else []),
                d.pick((b"IDS", b"COUNT", b"ids", b"POINTS", b"OBJECTS")), point, number(d), number(d),
                d.pick(METERS) if d.below(3) else number(d)]
        if r == 22:
            args.insert(2, d.pick((b"CURSOR", b"MATCH", b"DISTANCE", b"SPARSE")))
    elif r == 23:  # FSET [XX] name value ... (the core takes up to 8 non-zero numbers), RETURN
        pairs = [[d.pick((*FIELD_NAMES, b"XX", b"RETURN")), number(d)] for _ in range(1 + d.below(10))]
        args = [d.pick((b"FSET", b"fset")), key, oid, *([b"XX"] if d.below(4) == 0 else []),
                *(a for pair in pairs for a in pair), *([b"RETURN", point] if d.below(8) == 0 else [])]
    else:  # a few raw bytes: broken framing in the middle of a batch
        return d.take(d.below(12))
    return resp(args)


class Side:
    """One server, one connection, its replies and AOF records."""

    def __init__(self, fast: bool) -> None:
        self.server, self.client, _ = fuzzkit.inproc_server()
        self.fast = fast
        self.server.aof = AofLog(fuzzkit.scratch_dir() / "appendonly.aof", "no")

    def reset(self, limits: FrameLimits, budget: int) -> None:
        from geoserver.protocol.framing import RequestReader

        self.server.db = Database()
        self.server.aof._buffer = bytearray()  # records since the last reset (never flushed here)
        self.client.reader = RequestReader(limits)
        self.out = bytearray()
        self.closed = False
        self.budget = budget  # reply bytes one fastpath.run may produce (the server's HIGH_WATER room)

    def feed(self, chunk: bytes) -> None:
        """Server.Client._process on one piece: fast path first, then the command table."""
        if self.closed:
            return
        reader = self.client.reader
        reader.feed(chunk)
        while True:
            if self.fast:
                self.out += fastpath.run(self.client, self.budget)
            try:
                argv = reader.next()
            except ProtocolError as exc:
                self.out += render_error(exc, False, 0, True)
                self.closed = True  # the connection is closed after this reply
                return
            if argv is None:
                return
            reply = dispatch.execute(self.server, self.client, argv, False)
            assert isinstance(reply, bytes), argv[:2]
            self.out += reply

    def dataset(self) -> list[tuple[str, list[tuple[object, ...]]]]:
        """Every object, how it is stored (PLAIN or an Item) and its index entry (whether it
        expires, not when: both sides read the clock at their own moment)."""
        rows = []
        for key, col in self.server.db.collections.items():
            items = []
            for oid in col.items:
                item, o = col.get(oid), col.get(oid).obj
                items.append((oid, col.items.raw(oid) is PLAIN, o.kind, o.lat, o.lon, o.z, o.bbox, o.text,
                              item.fields, item.expires_at is not None, col.points.point(oid)))
            rows.append((key, items))
        return rows


_fast = _slow = None


def one_input(data: bytes) -> None:
    global _fast, _slow
    if not ENABLED:
        return
    if _fast is None:
        _fast, _slow = Side(True), Side(False)
    d = fuzzkit.Data(data)
    head = d.byte()
    limits = TINY if head & 4 else DEFAULT
    budget = (1 << 40, 0, 64, 4096)[head >> 3 & 3]
    stream = data[1:] if head % 4 == 0 else b"".join(request(d) for _ in range(1 + d.below(48)))
    for side in (_fast, _slow):
        side.reset(limits, budget)
    rnd = zlib.crc32(data)
    pos = 0
    while pos < len(stream):
        rnd = (rnd * 1103515245 + 12345) & 0x7FFFFFFF
        size = (1, 3, 17, 64, 500, 1 << 20)[rnd % 6]
        chunk = stream[pos:pos + size]
        pos += len(chunk)
        _fast.feed(chunk)
        _slow.feed(chunk)
        assert bytes(_fast.out) == bytes(_slow.out), f"replies differ after {pos} bytes:\n" \
            f"fast {bytes(_fast.out)[-300:]!r}\nslow {bytes(_slow.out)[-300:]!r}"
        assert bytes(_fast.server.aof._buffer) == bytes(_slow.server.aof._buffer), \
            f"AOF records differ after {pos} bytes"
    assert _fast.dataset() == _slow.dataset(), "datasets differ"


if __name__ == "__main__":
    if not ENABLED:
        sys.exit(f"fuzz_fastpath: nothing to fuzz: {UNAVAILABLE}")
    fuzzkit.main(one_input, "fastpath")
