"""RESP2 codec. Parsing is hiredis; this module adds inline (telnet) lines, a request-size
limit and the encoders for replies and for AOF records.

AOF records and the replication stream use the canonical encoding of `encode_command`, so a
follower that re-encodes what it applied writes byte-identical records to its own AOF.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import hiredis

from geoserver.errors import ProtocolError

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


class RequestReader:
    """Incremental parser of client requests: RESP arrays (via hiredis) or inline lines.

    The first byte of a connection picks the mode for its lifetime: `*` is RESP (every client
    library), anything else is inline text (telnet, `nc`). hiredis parses incrementally and
    cannot tell whether it stopped between or inside requests, so modes are not mixed.
    `feed()` then iterate `commands()`; a ProtocolError means the connection must be closed.
    `max_request` bounds the bytes buffered for one incomplete request.
    """

    def __init__(self, max_request: int) -> None:
        self.max_request = max_request
        self._reader = hiredis.Reader()
        self._pending = 0  # bytes fed to hiredis not yet accounted to a parsed command
        self._inline = bytearray()
        self._mode = ""  # "resp" | "inline", set by the first byte

    def feed(self, data: bytes) -> None:
        if not self._mode and data:
            self._mode = "resp" if data[:1] == b"*" else "inline"
        if self._mode == "inline":
            self._inline += data
        else:
            self._reader.feed(data)
            self._pending += len(data)

    def commands(self) -> Iterable[list[bytes]]:
        while True:
            if self._mode == "inline":
                cmd = self._next_inline()
                if cmd is None:
                    return
                if cmd:
                    yield cmd
                continue
            try:
                item = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(f"Protocol error: {exc}") from None
            if item is False:
                if self._pending > self.max_request:
                    raise ProtocolError("Protocol error: request too large")
                return
            if item.__class__ is not list or not item:
                raise ProtocolError("Protocol error: expected a RESP array of bulk strings")
            try:
                size = command_length(item)
            except TypeError:  # an integer or nested array inside the request
                raise ProtocolError("Protocol error: expected '$'") from None
            # hiredis returns `+OK` inside an array as bytes, like a bulk string, but it takes
            # fewer bytes than `$2\r\nOK\r\n`: more parsed than fed means an element was not a
            # bulk string (Tile38: "expected '$', got '+'"). Exact accounting also keeps
            # `_pending` at the bytes of the one incomplete request, which max_request bounds.
            self._pending -= size
            if self._pending < 0:
                raise ProtocolError("Protocol error: expected '$', got '+'")
            yield item

    def _next_inline(self) -> list[bytes] | None:
        end = self._inline.find(b"\n")
        if end < 0:
            if len(self._inline) > self.max_request:
                raise ProtocolError("Protocol error: too big inline request")
            return None
        line = bytes(self._inline[:end]).rstrip(b"\r")
        del self._inline[: end + 1]
        return split_command_line(line)


def command_length(argv: list[bytes]) -> int:
    """Bytes of `argv` as a canonical RESP array of bulk strings (what encode_command writes
    and every client library sends)."""
    n = 3 + len(str(len(argv)))
    for arg in argv:
        if arg.__class__ is not bytes:
            raise TypeError(f"{type(arg).__name__} is not a bulk string")
        k = len(arg)
        n += k + 5 + (1 if k < 10 else 2 if k < 100 else len(str(k)))
    return n


def split_command_line(line: bytes) -> list[bytes]:
    """Split an inline/HTTP command line into arguments; quotes group words and a `{`
    starts a final JSON argument that runs to the end of the line (as Tile38 does)."""
    text = line.decode("utf-8", "replace").strip()
    if not text:
        return []
    brace = text.find("{")
    head, tail = (text[:brace], text[brace:]) if brace >= 0 else (text, "")
    try:
        words = shlex.split(head, posix=True)
    except ValueError:
        raise ProtocolError("Protocol error: unbalanced quotes in request") from None
    if tail:
        words.append(tail)
    return [w.encode() for w in words]
