"""Write the seed corpus of tests/fuzz/corpus/ (checked in; run again after changing a target's
input format): the hardening attacks and ordinary pipelines for `request`, and programs in
fuzz_store's byte format for `store`. Files the fuzzers found (found-*, bug-*) are kept as they are.

    python tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import random
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzkit
from fuzz_store import IDS, KEYS, METERS, NOT_NUMBERS

CRLF = b"\r\n"


def resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


REQUEST = {
    # headers that would make a parser reserve memory before the bytes exist
    "attack-array-3e9": b"*3000000000\r\n",
    "attack-array-2p32": b"*4294967295\r\n",
    "attack-many-args": b"*2000000\r\n" + b"$1\r\na\r\n" * 1000,
    "attack-bulk-2p63": b"*2\r\n$3\r\nGET\r\n$9223372036854775807\r\n",
    "attack-header-no-crlf": b"*" + b"9" * 40,
    # nesting, other RESP types inside a request, non-canonical forms
    "attack-deep-nesting": b"*1\r\n" * 5000,
    "attack-integer-element": b"*2\r\n:1\r\n$1\r\na\r\n",
    "attack-null-bulk": b"*2\r\n$-1\r\n$1\r\na\r\n",
    "attack-plus-ok": b"*2\r\n+OK\r\n$1\r\na\r\n",
    "attack-leading-zero": b"*1\r\n$04\r\nPING\r\n",
    "attack-bulk-longer-than-declared": b"*2\r\n$1\r\nabc\r\n$1\r\na\r\n",
    # containers nested in a request: hiredis would reserve 22 GiB at the header (and free it in
    # seconds) or raise TypeError (a map with an array key); RESP3 scalars, one per type byte
    "attack-nested-array-3e9": b"*2\r\n$3\r\nGET\r\n*3000000000\r\n",
    "attack-nested-set-3e9": b"*2\r\n$3\r\nGET\r\n~3000000000\r\n",
    "attack-resp3-push": b"*2\r\n$3\r\nGET\r\n>1\r\n$1\r\na\r\n",
    "attack-resp3-attribute": b"*2\r\n$3\r\nGET\r\n|1\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n",
    "attack-resp3-map-of-sets": b"*2\r\n$3\r\nGET\r\n%1\r\n~1\r\n$1\r\na\r\n$1\r\nb\r\n",
    "attack-resp3-scalars": b"".join(b"*2\r\n$3\r\nGET\r\n" + e + b"\r\n" for e in (
        b"=5\r\ntxt:a", b"(12345678901234567890", b",1.5", b"#t", b"_", b"!3\r\nabc", b"-ERR x")),
    # big tokens: 1 MB through RESP and inline, an inline line that never ends
    "attack-token-1mb-resp": resp(b"SET", b"k", b"y" * (1 << 20)),
    "attack-token-1mb-inline": b"SET k " + b"x" * (1 << 20) + CRLF,
    "attack-inline-70k-no-newline": b"x" * 70000,
    "attack-unbalanced-quote": b'SET k "abc\r\n',
    # what clients send
    "ok-pipeline": b"".join(resp(b"SET", b"fleet", b"truck%d" % i, b"POINT", b"33", b"-115")
                            for i in range(50)),
    "ok-mixed": b"PING\r\n" + resp(b"GET", b"k"),
    "ok-inline-quotes": b'SET fleet "tr uck" POINT 33 -115\r\nSET fleet \'a\\b\' FIELD x 1 POINT 1 2\n'
                        b'JSET k id {"a": [1, 2]}\r\n\r\n\r\n',
    "ok-empty-arrays": b"*0\r\n*-1\r\n" + resp(b"PING"),
    "ok-binary": resp(b"GET", b"\xff\x00", CRLF),
    "ok-binary-headers-inside": resp(b"SET", b"k", b"s", b"STRING", b"\r\n*3000000000\r\n%1\r\n*1\r\n")
    + resp(b"GET", b"\n~9999999", b"\n>12") + resp(b"SET", b"k", b"\r\n|1\r\n", b"STRING", b"\n*"),
}


class Program:
    """Builds fuzz_store input: each method emits the bytes fuzzkit.Data turns into that choice."""

    def __init__(self) -> None:
        self.out = bytearray([1])  # not 0 mod 8: a command program, not the direct core part

    def op(self, n: int) -> Program:
        self.out.append(n)
        return self

    def key(self, key: bytes) -> None:
        self.out.append(KEYS.index(key))

    def oid(self, oid: bytes) -> None:
        self.out += bytes([1, IDS.index(oid)])  # below(5) != 0: from the pool

    def coord(self, value: float | bytes) -> None:
        if isinstance(value, bytes):
            self.out += bytes([7, NOT_NUMBERS.index(value)])
        else:
            self.out += bytes([5]) + struct.pack("<d", value)  # a raw double, exactly this one

    def set(self, key: bytes, oid: bytes, lat: float | bytes, lon: float | bytes) -> Program:
        self.op(0).key(key)
        self.oid(oid)
        self.coord(lat)
        self.coord(lon)
        return self

    def string(self, key: bytes, oid: bytes, value: bytes) -> Program:
        self.op(3).key(key)
        self.oid(oid)
        self.out += bytes([len(value)]) + value
        return self

    def simple(self, n: int, key: bytes, oid: bytes) -> Program:  # 4 DEL, 5 GET
        self.op(n).key(key)
        self.oid(oid)
        return self

    def nearby(self, key: bytes, lat: float | bytes, lon: float | bytes, meters: float) -> Program:
        self.op(6).key(key)
        self.coord(lat)
        self.coord(lon)
        self.out += bytes([1, METERS.index(meters)])
        return self

    def within(self, key: bytes, a: float, b: float, c: float, d: float) -> Program:
        self.op(7).key(key)
        for v in (a, b, c, d):
            self.coord(v)
        return self

    def scan(self, key: bytes, count: bool = False) -> Program:
        self.op(8).key(key)
        self.out.append(1 if count else 0)
        return self

    def drop(self, key: bytes) -> Program:
        self.op(9).key(key)
        return self


F, X = KEYS
STORE = {
    "seed-antimeridian": Program().set(F, b"a", 0.0, 179.99999999).set(F, b"b", 0.0, -179.99999999)
    .set(F, b"c", 0.0, 180.0).nearby(F, 0.0, -180.0, 1000.0).nearby(F, 0.0, 180.0, 1.0)
    .within(F, -1.0, 179.0, 1.0, 180.0).scan(F),
    "seed-poles": Program().set(F, b"a", 90.0, 0.0).set(F, b"b", 89.99999999, 180.0)
    .set(F, b"c", -90.0, -180.0).nearby(F, 90.0, -180.0, 100.0).nearby(F, -89.99999999, 0.0, 1e6)
    .within(F, -90.0, -180.0, 90.0, 180.0).nearby(F, 45.0, 90.0, 2.1e7),
    "seed-nonfinite-refused": Program().set(F, b"a", 33.0, -115.0).set(F, b"a", float("nan"), -115.0)
    .set(F, b"a", b"inf", 0.0).set(F, b"b", 33.0, float("-inf")).set(F, b"b", b"1e999", 0.0)
    .set(F, b"b", 90.0000001, 0.0).set(F, b"b", 0.0, -180.0000001).nearby(F, b"nan", 0.0, 100.0)
    .simple(5, F, b"a").simple(5, F, b"b").scan(F, count=True),
    "seed-huge-ids": Program().set(F, b"H" * (1 << 20), 33.0, -115.0)
    .set(F, b"h" * (64 << 10), 33.005, -115.005)
    .simple(5, F, b"H" * (1 << 20)).nearby(F, 33.0, -115.0, 1000.0).simple(4, F, b"H" * (1 << 20))
    .scan(F, count=True).scan(F),
    "seed-empty-binary-ids": Program().set(X, b"", 5e-324, -0.0).set(X, b"\r\n", 1e-300, 5e-324)
    .set(X, b"*1\r\n", -0.0, 0.0).string(X, b"id\x00\x80", b"\x00\xff").simple(5, X, b"")
    .simple(5, X, b"id\x00\x80").nearby(X, 0.0, 0.0, 0.0).within(X, -0.0, -0.0, 0.0, 0.0)
    .set(X, b"id\x00\x80", 1e-300, 1e-300).simple(4, X, b"\r\n").drop(X).scan(X),
    "seed-string-then-point": Program().string(F, b"a", b"v").set(F, b"a", 33.0, -115.0).string(F, b"a", b"w")
    .nearby(F, 33.0, -115.0, 100.0).simple(5, F, b"a").set(F, b"a", 33.005, -115.005).simple(5, F, b"a"),
    # found: SCAN ordered an id that is not UTF-8 by its surrogateescape text, not by bytes
    "found-scan-order-nonutf8": Program().set(F, b"\xff\xfe", 1.0, 1.0)
    .set(F, "\U0001f69a".encode(), 1.0, 1.0).scan(F),
}


def main() -> None:
    for target, seeds in (("request", REQUEST), ("store", STORE)):
        folder = fuzzkit.CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data if isinstance(data, bytes) else bytes(data.out))
    rnd = random.Random(15)
    for i in range(8):  # plain random programs: every byte string is one
        (fuzzkit.CORPUS / "store" / f"seed-random-{i}").write_bytes(rnd.randbytes(rnd.choice((40, 200, 600))))
    fast = fuzzkit.CORPUS / "fastpath"
    fast.mkdir(exist_ok=True)
    hot = b"".join(resp(b"SET", b"fleet", b"t%d" % i, b"POINT", b"33.%d" % i, b"-115") for i in range(20))
    streams = {  # first byte 0 mod 4: the bytes as they are (4: under tiny limits)
        "seed-hot-forms": b"\0" + resp(b"SET", b"fleet", b"a", b"POINT", b"1", b"1") + hot
        + b"".join(resp(b"GET", b"fleet", b"t%d" % i, b"POINT") for i in range(20)) + resp(b"PING"),
        "seed-hot-then-miss": b"\0" + hot + resp(b"SET", b"fleet", b"t1", b"POINT", b"nan", b"0") + hot
        + b"SET fleet t2 POINT 1 2\r\n" + resp(b"GET", b"fleet", b"t2"),
        "seed-over-limits": b"\4" + hot + resp(b"SET", b"fleet", b"x" * 50, b"POINT", b"1", b"1") + hot,
        "seed-huge-header": b"\0" + hot + b"*3000000000\r\n" + hot,
        "seed-nearby": b"\0" + resp(b"SET", b"fleet", b"a", b"POINT", b"33", b"-115") + hot
        + resp(b"NEARBY", b"fleet", b"LIMIT", b"5", b"IDS", b"POINT", b"33.1", b"-115", b"50000")
        + resp(b"NEARBY", b"fleet", b"COUNT", b"POINT", b"33", b"-115", b"1e300")
        + resp(b"NEARBY", b"fleet", b"IDS", b"POINT", b"90", b"180", b"0")
        + resp(b"NEARBY", b"fleet", b"POINTS", b"POINT", b"33", b"-115", b"1000") + hot,
    }
    for name, data in streams.items():
        (fast / name).write_bytes(data)
    for i in range(6):  # programs: hot forms and near misses
        (fast / f"seed-program-{i}").write_bytes(bytes([1 + i]) + rnd.randbytes(rnd.choice((60, 300))))
    core = bytearray([0])  # first byte 0 mod 8: the direct core part
    for v in (float("nan"), float("inf"), 1e308, -1e308, 5e-324, 90.0, 180.0, -0.0):
        core += bytes([0, 1]) + struct.pack("<d", v)
    (fuzzkit.CORPUS / "store" / "seed-core-raw-doubles").write_bytes(bytes(core) * 4)


if __name__ == "__main__":
    main()
