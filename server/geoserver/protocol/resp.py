"""RESP2 codec: the encoders for replies and for AOF records (requests are framed, with their
limits, in protocol/framing.py).

AOF records and the replication stream use the canonical encoding of `encode_command`, so a
follower that re-encodes what it applied writes byte-identical records to its own AOF.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from geoserver.errors import argument_too_large

_CRLF = b"\r\n"


class Simple(str):
    """A RESP simple string (`+OK`), as opposed to a bulk string."""


class Map(dict):
    """A RESP3 map (`%n`), sent only as the HELLO 3 reply; RESP2 gets a flat array."""


class Raw(bytes):
    """Bytes sent as they are, whatever the reply mode (the `+OK` that starts an AOF stream)."""


OK = Simple("OK")
PONG = Simple("PONG")


def encode_command(args: Iterable[bytes]) -> bytes:
    """Canonical RESP array of bulk strings: the exact bytes of one AOF record."""
    args = list(args)
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def format_float(value: float) -> str:
    """Shortest round-trip text of a float, integral values without `.0` (Go's 'f', -1)."""
    if value == int(value) and abs(value) < 1e16:
        return str(int(value))
    text = repr(value)
    if "e" in text:  # Go's 'f' format never uses an exponent: 1.266e-05 -> 0.00001266
        text = format(Decimal(text), "f")
    return text


def encode_value(value: Any) -> bytes:
    """Encode a reply value: Simple -> +, str/bytes -> bulk, int/bool -> :, float -> bulk,
    list/tuple -> array, None -> nil bulk."""
    if isinstance(value, Simple):
        return b"+" + value.encode() + _CRLF
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, str):
        data = value.encode()
        return b"$%d\r\n%s\r\n" % (len(data), data)
    if isinstance(value, bool):
        return b":1\r\n" if value else b":0\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, float):
        data = format_float(value).encode()
        return b"$%d\r\n%s\r\n" % (len(data), data)
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, Map):
        pairs = (encode_value(k) + encode_value(v) for k, v in value.items())
        return b"%%%d\r\n" % len(value) + b"".join(pairs)
    if isinstance(value, list | tuple):
        return b"*%d\r\n" % len(value) + b"".join(encode_value(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} as RESP")


def encode_error(message: str) -> bytes:
    """`-ERR msg`, unless the message starts with an all-caps code such as LOADING or OOM.
    CR/LF inside (a GEOS message quoted in an error) would end the line early: made spaces."""
    message = " ".join(message.splitlines())
    first = message.split(" ", 1)[0]
    if len(first) > 1 and first.isupper() and first.isalpha():
        return b"-" + message.encode() + _CRLF
    return b"-ERR " + message.encode() + _CRLF


def command_length(argv: list[bytes], max_bulk: int | None = None) -> int:
    """Bytes of `argv` as a canonical RESP array of bulk strings (what encode_command writes
    and every client library sends); ProtocolError for an argument over `max_bulk`."""
    n = 3 + len(str(len(argv)))
    for arg in argv:
        if arg.__class__ is not bytes:
            raise TypeError(f"{type(arg).__name__} is not a bulk string")
        k = len(arg)
        if max_bulk is not None and k > max_bulk:
            raise argument_too_large(k, max_bulk)
        n += k + 5 + (1 if k < 10 else 2 if k < 100 else len(str(k)))
    return n
