"""Client request framing: the byte stream of one connection -> argument lists.

Each request is a RESP array of bulk strings (what every client library sends) or an inline
line (telnet, `nc`, the AOF of old Tile38 versions), decided per request by its first byte as
Tile38 does. Every length is checked against `FrameLimits` *before* anything is allocated:
a 13-byte `*3000000000` header is refused at once instead of making a parser reserve 22 GiB
(hiredis, which parses replies elsewhere, allocates an array's list at its header and exposes
no limit, so requests are framed here, like Redis's own processMultibulkBuffer). Scanning is
linear in the bytes received, however they are split into reads.

Sans-I/O: `feed(bytes)`, then `next()` until it returns None; a ProtocolError means the
connection must be closed after its reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import hiredis

from geoserver.errors import (
    ProtocolError,
    argument_too_large,
    inline_too_big,
    request_too_large,
    too_many_arguments,
)
from geoserver.protocol.resp import command_length, encode_command

_LONGEST_HEADER = 24  # `*` or `$`, up to 20 digits, CRLF
_NOT_CANONICAL = re.compile(rb"\r\n(?:\+|\$0\d)")


@dataclass(slots=True)
class FrameLimits:
    max_args: int  # elements of one array
    max_bulk: int  # bytes of one bulk string
    max_inline: int  # bytes of one inline line
    max_request: int  # bytes of one whole request


class RequestReader:
    """Frames one connection's requests. hiredis parses RESP arrays (fast, in C); this class
    checks every array header against the limits before hiredis may see it, checks the bulk
    headers of a request still arriving, and takes inline lines itself, so a connection may mix
    both (Tile38 decides per request). `_buf` mirrors the bytes fed to hiredis from the start of
    the current request, so headers are read at exact offsets: `_pos` is where the next request
    starts (hiredis's returned arrays give their exact encoded size, `command_length`)."""

    __slots__ = ("_buf", "_checked", "_pos", "_reader", "_scan_from", "_walked", "inline", "limits")

    def __init__(self, limits: FrameLimits) -> None:
        self.limits = limits  # may be swapped between requests (after AUTH)
        self._buf = bytearray()
        self._pos = 0
        self._scan_from = 0  # where the search for an inline line's end resumes
        self._checked = False  # the array header at `_pos` passed the limits
        self._walked = 0  # offset from `_pos` of the next bulk header `_check_partial` reads
        self._reader: hiredis.Reader | None = None  # fed from `_pos` on while RESP
        self.inline = False  # the last request returned was an inline line

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a request."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos:  # keep only the current request's bytes
            del self._buf[: self._pos]
            self._scan_from -= self._pos
            self._pos = 0
        self._buf += data
        if self._reader is not None:
            self._reader.feed(data)

    def next(self) -> list[bytes] | None:
        """The next complete request, or None until more bytes arrive."""
        while True:
            buf, pos = self._buf, self._pos
            if pos >= len(buf):
                return None
            if buf[pos] != 0x2A:  # not `*`: an inline command line
                self._reader = None
                argv = self._inline()
                if argv is None or argv:
                    self.inline = argv is not None
                    return argv
                continue  # an empty line
            if not self._checked:
                if len(buf) > pos + 3 and buf[pos + 2] == 13 and 48 < buf[pos + 1] <= 57 \
                        and buf[pos + 1] - 48 <= self.limits.max_args:
                    count = 1  # `*1` .. `*9` (most requests), within the limit: nothing to check
                else:
                    count = self._array_header()
                if count is None:
                    return None
                if count == 0:  # `*0` and `*-1` are nothing, as in Redis
                    self._pos = buf.find(b"\n", pos) + 1
                    self._reader = None  # it holds those bytes: start a new one at `_pos`
                    continue
                self._checked = True
            if self._reader is None:
                self._reader = hiredis.Reader()
                self._reader.feed(bytes(buf[pos:]))
            try:
                item = self._reader.gets()
            except hiredis.ProtocolError as exc:
                raise ProtocolError(f"Protocol error: {exc}") from None
            if item is False:
                self._check_partial()
                return None
            self._checked = False
            self._walked = 0
            if item.__class__ is not list:  # `*` was checked: hiredis returns an array
                raise ProtocolError("Protocol error: expected a RESP array of bulk strings")
            try:
                size = command_length(item, self.limits.max_bulk)
            except TypeError:  # an integer or nested array inside the request
                raise ProtocolError("Protocol error: expected '$'") from None
            # `_pos` must land where hiredis stopped, or the next header checked would not be
            # the one hiredis parses. hiredis consumes exactly the canonical size except for a
            # `+OK` element (returned as bytes like `$2\r\nOK\r\n`, but shorter) and a bulk
            # length with leading zeros; a request that may hold one (rare: the pattern also
            # matches binary payloads) is compared with its canonical encoding in full. A
            # last bulk longer than declared is caught by its missing CRLF.
            end = pos + size
            if (end > len(buf) or buf[end - 2:end] != b"\r\n"
                    or (_NOT_CANONICAL.search(buf, pos, end) and buf[pos:end] != encode_command(item))):
                raise ProtocolError("Protocol error: expected '$', got '+'")  # Tile38's text
            self._pos = end
            self.inline = False
            return item

    def _array_header(self) -> int | None:
        """The element count of the `*n` line at `_pos`, checked; None when incomplete."""
        buf, start = self._buf, self._pos
        end = buf.find(b"\r\n", start, start + _LONGEST_HEADER)
        if end < 0:
            if len(buf) - start >= _LONGEST_HEADER:
                raise ProtocolError("Protocol error: invalid multibulk length")
            return None
        digits = bytes(buf[start + 1:end])
        if digits == b"-1":
            return 0
        if not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
            raise ProtocolError("Protocol error: invalid multibulk length")
        count = int(digits)
        if count > self.limits.max_args:
            raise too_many_arguments(count, self.limits.max_args)
        return count

    def _check_partial(self) -> None:
        """Walk the bulk headers of the request still arriving: a declared length over the
        limits is refused now, before its bytes are waited for and buffered. The walk resumes
        where the previous read left it, so a request of a million small arguments arriving in
        many reads is walked once, not once per read."""
        buf, limits = self._buf, self.limits
        pos = self._pos + self._walked if self._walked else buf.find(b"\r\n", self._pos) + 2
        while pos < len(buf):
            if buf[pos] != 0x24:  # `$`
                got = chr(buf[pos]) if 32 < buf[pos] < 127 else f"\\x{buf[pos]:02x}"
                raise ProtocolError(f"Protocol error: expected '$', got '{got}'")
            end = buf.find(b"\r\n", pos, pos + _LONGEST_HEADER)
            if end < 0:
                if len(buf) - pos >= _LONGEST_HEADER:
                    raise ProtocolError("Protocol error: invalid bulk length")
                break
            digits = buf[pos + 1:end]
            if not digits.isdigit():
                raise ProtocolError("Protocol error: invalid bulk length")
            size = int(digits)
            if size > limits.max_bulk:
                raise argument_too_large(size, limits.max_bulk)
            pos = end + 2 + size + 2
            if pos - self._pos > limits.max_request:
                raise request_too_large(limits.max_request)
        self._walked = pos - self._pos

    def _inline(self) -> list[bytes] | None:
        buf, start = self._buf, self._pos
        end = buf.find(b"\n", max(start, self._scan_from))
        if end < 0 and len(buf) - start <= self.limits.max_inline:
            self._scan_from = len(buf)
            return None
        if end < 0 or end - start > self.limits.max_inline:
            raise inline_too_big(self.limits.max_inline)
        self._pos = self._scan_from = end + 1
        argv = split_command_line(bytes(buf[start:end]))
        if len(argv) > self.limits.max_args:
            raise too_many_arguments(len(argv), self.limits.max_args)
        return argv


# A double-quoted word (backslash escapes), a single-quoted word (literal), a bare word, or a
# quote that never closes. The alternatives are disjoint, so matching is linear in the line
# (shlex, used before, builds tokens by string concatenation: 40 s for one 1 MB token).
_TOKEN = re.compile(rb'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([^\s"\']+)|(["\'])', re.DOTALL)
_ESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t"}


def split_command_line(line: bytes) -> list[bytes]:
    """Split an inline/HTTP command line into arguments, keeping its exact bytes: quotes group
    words, and a `{` starts a final JSON argument that runs to the end of the line (as Tile38)."""
    line = line.rstrip(b"\r").strip()
    if not line:
        return []
    brace = line.find(b"{")
    head, tail = (line[:brace], line[brace:]) if brace >= 0 else (line, b"")
    words: list[bytes] = []
    for match in _TOKEN.finditer(head):
        double, single, bare, unbalanced = match.groups()
        if unbalanced is not None:
            raise ProtocolError("Protocol error: unbalanced quotes in request")
        if double is not None:
            words.append(_ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), double))
        else:
            words.append(single if single is not None else bare)
    if tail:
        words.append(tail.rstrip())
    return words
