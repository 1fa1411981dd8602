"""Binary-safe text: keys, ids, field names, STRING values and glob patterns are bytes on the
wire, in the AOF and on followers, and str inside the server.

Invariant: `raw(text(b)) == b` for every byte string. Bytes that are not UTF-8 decode to lone
surrogates (Python's `surrogateescape`), so `\\xff` and `\\xfe` stay two different keys and
every place that turns a key back into bytes (RESP replies, AOF records, AOFSHRINK) writes
the exact bytes the client sent. JSON cannot carry lone surrogates: `printable` renders those
bytes as U+FFFD there (and in error texts), as Tile38's JSON output does.
"""

from __future__ import annotations

_ERRORS = "surrogateescape"


def text(data: bytes) -> str:
    """Bytes from the wire as the server's str; undecodable bytes survive as surrogates."""
    return data.decode("utf-8", _ERRORS)


def raw(value: str) -> bytes:
    """The exact bytes a `text()` str came from."""
    return value.encode("utf-8", _ERRORS)


def printable(value: str) -> str:
    """The str with undecodable bytes as U+FFFD: valid UTF-8 for JSON and error texts."""
    if value.isascii():
        return value
    return value.encode("utf-8", _ERRORS).decode("utf-8", "replace")
