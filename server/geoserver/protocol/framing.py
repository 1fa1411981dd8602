"""Client request framing: the byte stream of one connection -> argument lists.

Each request is a RESP array of bulk strings (what every client library sends) or an inline
line (telnet, `nc`, the AOF of old Tile38 versions), decided per request by its first byte as
Tile38 does. Every length is checked against `FrameLimits` *before* anything is allocated:
a 13-byte `*3000000000` header is refused at once instead of making a parser reserve 22 GiB
(hiredis, which parses replies elsewhere, allocates an array's list at its header and exposes
no limit, so requests are framed here, like Redis's own processMultibulkBuffer). Scanning is
linear in the bytes received, however they are split into reads.

A request array may hold bulk strings only. hiredis builds a container at its header: a nested
`*3000000000` (or `~`, `>`) made it reserve 22 GiB, and freeing that list took 5 s of loop, so
hiredis is never fed a nested container header whose count has as many digits as `max_args`
(`FrameLimits.danger`): the bytes up to one are fed, and past it the bulk headers are walked
here first (`_check_partial`), so a nested container costs at most what a top-level array within
the limits does. Anything else hiredis makes of a non-bulk element (a map with an array key:
TypeError; an integer; a RESP3 scalar) is refused as Redis does: `Protocol error: expected '$',
got 'X'`.

Sans-I/O: `feed(bytes)`, then `next()` until it returns None; a ProtocolError means the
connection must be closed after its reply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NoReturn

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
_CONTAINERS = rb"*%~>|"  # array, RESP3 map, set, push, attribute


@dataclass(slots=True)
class FrameLimits:
    max_args: int  # elements of one array
    max_bulk: int  # bytes of one bulk string
    max_inline: int  # bytes of one inline line
    max_request: int  # bytes of one whole request
    # A container header with as many count digits as `max_args` (or one still arriving): what
    # hiredis is fed stops before it until `_check_partial` has walked past it (inside a bulk).
    danger: re.Pattern[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        digits = len(str(self.max_args))
        self.danger = re.compile(rb"\n[%s](?:[0-9]{%d}|[0-9]{0,%d}\Z)"
                                 % (re.escape(_CONTAINERS), digits, digits - 1))


class RequestReader:
    """Frames one connection's requests. hiredis parses RESP arrays (fast, in C); this class
    checks every array header against the limits before hiredis may see it, checks the bulk
    headers of a request still arriving, and takes inline lines itself, so a connection may mix
    both (Tile38 decides per request). `_buf` mirrors the bytes fed to hiredis from the start of
    the current request, so headers are read at exact offsets: `_pos` is where the next request
    starts (hiredis's returned arrays give their exact encoded size, `command_length`). hiredis
    is fed lazily, in `next`, up to `_fed`: never past a container header not walked (module
    docstring)."""

    __slots__ = ("_buf", "_checked", "_fed", "_left", "_pos", "_reader", "_scan_from", "_scanned",
                 "_walked", "inline", "limits")

    def __init__(self, limits: FrameLimits) -> None:
        self.limits = limits  # may be swapped between requests (after AUTH)
        self._buf = bytearray()
        self._pos = 0
        self._scan_from = 0  # where the search for an inline line's end resumes
        self._checked = False  # the array header at `_pos` passed the limits
        self._walked = 0  # offset from `_pos` of the next bulk header `_check_partial` reads
        self._left = 0  # elements not yet walked by `_check_partial` (with `_walked`)
        self._reader: hiredis.Reader | None = None  # fed from `_pos` on while RESP
        self._fed = 0  # offset in `_buf` up to which `_reader` was fed
        self._scanned = 0  # no element header before this offset in `_buf` is `limits.danger`
        self.inline = False  # the last request returned was an inline line

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as a request."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos:  # keep only the current request's bytes
            del self._buf[: self._pos]
            self._scan_from -= self._pos
            self._fed -= self._pos
            self._scanned -= self._pos
            self._pos = 0
        buf = self._buf
        start = len(buf)
        buf += data
        # hiredis holds every byte so far: it may have these too unless they hold a dangerous
        # header (then `next` feeds it up to there and walks past it)
        if self._fed == start and self._reader is not None \
                and self.limits.danger.search(buf, start - 1 if start else 0) is None:
            self._reader.feed(data)
            self._fed = self._scanned = len(buf)

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
                if len(buf) > pos + 3 and buf[pos + 2] == 13 and buf[pos + 3] == 10 \
                        and 48 < buf[pos + 1] <= 57 and buf[pos + 1] - 48 <= self.limits.max_args:
                    count = 1  # `*1` .. `*9` (most requests), within the limit: nothing to check
                else:
                    count = self._array_header()
                if count is None:
                    return None
                if count == 0:  # `*0` and `*-1` are nothing, as in Redis
                    self._pos = buf.find(b"\n", pos) + 1
                    self._reader = None  # start a new one at `_pos`
                    continue
                self._checked = True
            reader = self._reader
            if reader is None:
                reader = self._reader = hiredis.Reader()
                self._fed = pos
            n = len(buf)
            fed = self._fed
            if fed < n:  # feed hiredis up to the next dangerous header, if any
                first = buf.find(b"\r\n", pos) + 2  # the first element (the header was checked)
                stop = self._scanned
                if stop < n:
                    found = self.limits.danger.search(buf, (stop if stop > first else first) - 1)
                    stop = self._scanned = n if found is None else found.start() + 1
                if stop < first:
                    stop = first
                if stop > fed:
                    reader.feed(buf, fed, stop - fed)
                    self._fed = fed = stop
            try:
                item = reader.gets()
                if item is False:
                    verified = self._check_partial()  # the headers of what arrived, walked
                    if verified <= fed:
                        return None
                    reader.feed(buf, fed, verified - fed)
                    self._fed = verified
                    self._scanned = max(self._scanned, verified)
                    continue  # on to the next dangerous header past what was walked
            except ProtocolError:
                raise
            except Exception as exc:  # hiredis.ProtocolError, or anything else it raises
                self._refuse(f"Protocol error: {exc}")
            self._checked = False
            self._walked = 0
            if item.__class__ is not list:  # `*` was checked: hiredis returns an array
                self._refuse("Protocol error: expected a RESP array of bulk strings")
            try:
                size = command_length(item, self.limits.max_bulk)
            except TypeError:  # an integer, a null or a RESP3 scalar inside the request
                self._refuse("Protocol error: expected '$'")
            # `_pos` must land where hiredis stopped, or the next header checked would not be
            # the one hiredis parses. hiredis consumes exactly the canonical size except for a
            # `+OK` element (returned as bytes like `$2\r\nOK\r\n`, but shorter), other RESP3
            # scalars it returns as bytes (`=`, `(`) and a bulk length with leading zeros; a
            # request that may hold one (rare: the pattern also matches binary payloads) is
            # compared with its canonical encoding in full. A last bulk longer than declared is
            # caught by its missing CRLF.
            end = pos + size
            if (end > len(buf) or buf[end - 2:end] != b"\r\n"
                    or (_NOT_CANONICAL.search(buf, pos, end) and buf[pos:end] != encode_command(item))):
                self._refuse("Protocol error: expected '$', got '+'")  # Tile38's text
            self._pos = end
            self.inline = False
            return item

    def _refuse(self, message: str) -> NoReturn:
        """Refuse the request at `_pos`: with Redis's `expected '$', got 'X'` when one of its
        elements is not a bulk string (walked from its start), else with `message`."""
        self._walked = 0
        self._check_partial()
        raise ProtocolError(message)

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

    def _check_partial(self) -> int:
        """Walk the bulk headers of the request at `_pos` that have arrived: an element that is
        not a bulk string is refused, and a declared length over the limits is refused now,
        before its bytes are waited for and buffered. The walk resumes where the previous one
        left it, so a request of a million small arguments arriving in many reads is walked once,
        not once per read, and stops at the request's last element. Returns the offset in `_buf`
        up to which the request is walked (hiredis may be fed up to there)."""
        buf, limits, start = self._buf, self.limits, self._pos
        if self._walked:
            pos, left = start + self._walked, self._left
        else:  # from the array header (checked)
            pos = buf.find(b"\r\n", start) + 2
            left = int(buf[start + 1:pos - 2])
        n = len(buf)
        verified = n
        while left and pos < n:
            if buf[pos] != 0x24:  # `$`
                got = chr(buf[pos]) if 32 < buf[pos] < 127 else f"\\x{buf[pos]:02x}"
                raise ProtocolError(f"Protocol error: expected '$', got '{got}'")
            end = buf.find(b"\r\n", pos, pos + _LONGEST_HEADER)
            if end < 0:
                if n - pos >= _LONGEST_HEADER:
                    raise ProtocolError("Protocol error: invalid bulk length")
                break  # a `$`: hiredis waits for the rest of its header
            digits = buf[pos + 1:end]
            if not digits.isdigit():
                raise ProtocolError("Protocol error: invalid bulk length")
            size = int(digits)
            if size > limits.max_bulk:
                raise argument_too_large(size, limits.max_bulk)
            pos = end + 2 + size + 2
            left -= 1
            if pos - start > limits.max_request:
                raise request_too_large(limits.max_request)
        else:
            verified = min(pos, n)  # inside a bulk, or the request's end
        self._walked, self._left = pos - start, left
        return verified

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
