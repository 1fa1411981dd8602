"""Fuzz finding in id order, against a real geoserver: ids and keys that are not valid UTF-8 are
listed in byte order, as Tile38 lists them (Go compares strings bytewise). They used to follow
the order of their surrogateescape text: `\\xff\\xfe` before the UTF-8 of U+1F69A, `\\x80` after
U+0100. SCAN (compiled fast path and Python), SCAN MATCH with such a prefix, CURSOR paging,
KEYS, and field order, live and after a restart from the AOF."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from helpers import GeoServer

# escaped bytes from 0x80 to 0xff, beside UTF-8 of every length and ASCII
IDS = [b"\xff\xfe", "\U0001f69a".encode(), b"\xc4\x80", "\u07ff".encode(), b"\x80", b"a", b"a\xff",
       b"a\xff\x00", "a\U0010ffff".encode(), b"a\xf4\x8f\xbf\xbf\xff", b"b", b"\xed\xa0\x80",
       "\ue000".encode(), "\ud7ff".encode(), b"\xc3", "\u00ff".encode(), b"\xef\xbf\xbf", b"\xf0", b"\xf5",
       b"", b"\x7f"]
assert len(set(IDS)) == len(IDS)


def scan_ids(c, key: bytes, *options: object) -> list[bytes]:  # type: ignore[no-untyped-def]
    cursor, ids = c.execute_command("SCAN", key, *options, "LIMIT", 1000, "IDS")
    assert cursor == 0
    return list(ids)


def page(c, key: bytes, limit: int, *options: object) -> list[bytes]:  # type: ignore[no-untyped-def]
    out: list[bytes] = []
    cursor = 0
    while True:
        cursor, ids = c.execute_command("SCAN", key, "CURSOR", cursor, "LIMIT", limit, *options, "IDS")
        out += ids
        if cursor == 0:
            return out


@pytest.mark.parametrize("fastpath", ["1", "0"])
def test_ids_and_keys_are_in_byte_order(make_server: Callable[..., GeoServer], fastpath: str) -> None:
    srv = make_server("s", start=False)
    srv.env["GEOSERVER_FASTPATH"] = fastpath  # "1": SCAN and SET of points run in C++
    srv.start()
    c = srv.client()
    assert c.execute_command("SET", b"fleet", b"seed", "POINT", 1, 1) is True  # an existing key
    for i, oid in enumerate(IDS):
        assert c.execute_command("SET", b"fleet", oid, "POINT", 33 + i / 100, -115) is True
        assert c.execute_command("SET", b"k" + oid, b"x", "STRING", b"v") is True
    assert c.execute_command("DEL", b"fleet", b"seed") == 1
    expected = sorted(IDS)
    for _ in range(2):  # live, then after a restart from the AOF
        assert scan_ids(c, b"fleet") == expected
        assert scan_ids(c, b"fleet", "DESC") == expected[::-1]
        assert page(c, b"fleet", 3) == expected
        for prefix in (b"a", b"a\xff", b"\xff", b"\xed\xa0", "\U0001f69a".encode(), b"\x80"):
            want = [i for i in expected if i.startswith(prefix)]
            assert scan_ids(c, b"fleet", "MATCH", prefix + b"*") == want
        assert c.execute_command("KEYS", b"k*") == sorted(b"k" + oid for oid in IDS)
        assert c.execute_command("KEYS", b"k\xff*") == [b"k\xff\xfe"]
        srv.kill9()
        srv.start()
        c = srv.client()


def test_fields_are_in_byte_order(make_server: Callable[..., GeoServer]) -> None:
    c = make_server().client()
    names = [b"\xff", "\U0001f69a".encode(), b"\x80", "\u0100".encode(), b"a"]
    args: list[object] = []
    for i, name in enumerate(names):
        args += ["FIELD", name, i + 1]
    assert c.execute_command("SET", b"fleet", b"t", *args, "POINT", 33, -115) is True
    _cursor, rows = c.execute_command("SCAN", b"fleet")
    assert rows[0][0] == b"t"
    fields = rows[0][2]
    assert fields[::2] == sorted(names)
