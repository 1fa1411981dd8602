"""Fuzz target: the request path, bytes -> geoserver.protocol.framing.RequestReader -> argv.

Every input is framed under three sets of limits (the server's defaults, the pre-AUTH ones, and
tiny ones that make every limit reachable), once fed whole and several times fed in pieces
(pseudo-random splits derived from the input, and byte by byte when short). Invariants:

- only ProtocolError ever escapes the reader; anything else is a finding;
- every argv is a list of bytes within the limits: at most `max_args` arguments, each RESP
  argument at most `max_bulk` bytes, an inline line at most `max_inline`, a whole RESP request at
  most `max_request` plus the read that completed it (headers are walked as bytes arrive; the last
  read is checked by its bulk lengths), and what is buffered but not yet a request stays under the
  limits as well (nothing waits for, or keeps, more than a limit allows);
- argv round-trips: `encode_command(argv)` frames back to the same argv, and a RESP request's bytes
  in the stream are that canonical encoding (what the AOF records), but for the bytes after each
  bulk except the last (`assert_canonical`);
- splitting does not change the answer: the requests framed from pieces are those framed from the
  whole, up to an error, and an error that only the pieces see is "request too large" (checked
  earlier when a request arrives over several reads).

    python tests/fuzz/fuzz_request.py -atheris_runs=100000
"""

from __future__ import annotations

import random
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzkit
from geoserver.errors import ProtocolError
from geoserver.protocol.framing import FrameLimits, RequestReader
from geoserver.protocol.resp import encode_command

HEADER_SLACK = 26  # one `$`/`*` header not yet complete: `$`, up to 20 digits, CRLF (framing.py)

DEFAULT = FrameLimits(1024 * 1024, 64 << 20, 64 << 10, 64 << 20)  # ServerConfig's defaults
PREAUTH = FrameLimits(10, 16 << 10, 16 << 10, 16 << 10)  # before AUTH when requirepass is set
TINY = FrameLimits(8, 64, 80, 200)
LIMITS = (DEFAULT, PREAUTH, TINY)
ROUNDTRIP = FrameLimits(1 << 30, 1 << 30, 1 << 30, 1 << 40)
CHUNKS = (1, 2, 3, 5, 13, 64, 1000, 65536)

Framed = tuple[list[tuple[list[bytes], bool]], ProtocolError | None, int]


def frame(data: bytes, sizes: list[int], limits: FrameLimits) -> Framed:
    """Feed `data` in pieces of `sizes` (the last one repeats), taking every request after each
    feed as the server does: (requests with their inline flag, the error, bytes left buffered)."""
    reader = RequestReader(limits)
    requests: list[tuple[list[bytes], bool]] = []
    fed = 0
    i = 0
    while fed < len(data):
        size = sizes[min(i, len(sizes) - 1)]
        i += 1
        chunk = data[fed:fed + size]
        fed += len(chunk)
        reader.feed(chunk)
        while True:
            try:
                argv = reader.next()
            except ProtocolError as exc:
                return requests, exc, reader.buffered
            if argv is None:
                break
            end = fed - reader.buffered
            check_request(argv, reader.inline, limits, len(chunk), data, end)
            requests.append((argv, reader.inline))
        pending = reader.buffered
        assert pending <= max(limits.max_inline, limits.max_request) + HEADER_SLACK, \
            f"{pending} bytes buffered for an incomplete request under {limits}"
    return requests, None, reader.buffered


def check_request(argv: list[bytes], inline: bool, limits: FrameLimits, last_read: int,
                  data: bytes, end: int) -> None:
    assert argv.__class__ is list and argv, argv
    assert all(a.__class__ is bytes for a in argv), argv
    assert len(argv) <= limits.max_args, (len(argv), limits)
    encoded = encode_command(argv)
    if inline:
        assert max(map(len, argv)) <= limits.max_inline, (max(map(len, argv)), limits)
        again = RequestReader(ROUNDTRIP)
    else:
        assert max(map(len, argv)) <= limits.max_bulk, (max(map(len, argv)), limits)
        assert len(encoded) <= limits.max_request + last_read, (len(encoded), last_read, limits)
        assert_canonical(data, end - len(encoded), argv, end)
        again = RequestReader(limits)
    again.feed(encoded)
    assert again.next() == argv and again.buffered == 0, "argv does not round-trip"


def assert_canonical(data: bytes, pos: int, argv: list[bytes], end: int) -> None:
    """A RESP request is its canonical encoding, ending where the reader stopped: the same
    headers and bytes, except the two bytes after each bulk but the last, which hiredis skips
    without looking (as Redis's own processMultibulkBuffer does), so `$5\r\nfleet\r\x0e` frames
    as b"fleet"; the AOF records the canonical encoding, so nothing else sees them."""
    def expect(part: bytes, what: str) -> None:
        nonlocal pos
        assert data[pos:pos + len(part)] == part, f"{what} {part[:40]!r} not at {pos}: {data[pos:pos + 40]!r}"
        pos += len(part)

    expect(b"*%d\r\n" % len(argv), "array header")
    for arg in argv:
        expect(b"$%d\r\n" % len(arg), "bulk header")
        expect(arg, "bulk")
        pos += 2
    assert pos == end and data[end - 2:end] == b"\r\n", "the request does not end where the reader stopped"


def splits(data: bytes, salt: int) -> list[list[int]]:
    rnd = random.Random(zlib.crc32(data) ^ salt)
    floor = max(1, len(data) // 200)  # at most ~200 reads however large the input
    ways = [[max(floor, rnd.choice(CHUNKS)) for _ in range(8)] for _ in range(3)]
    if len(data) <= 512:
        ways.append([1])
    return ways


def one_input(data: bytes) -> None:
    for salt, limits in enumerate(LIMITS):
        whole, whole_err, whole_left = frame(data, [max(1, len(data))], limits)
        for sizes in splits(data, salt):
            got, err, left = frame(data, sizes, limits)
            assert got == whole[:len(got)], f"split {sizes[:4]} framed other requests under {limits}"
            if err is None:
                assert whole_err is None, f"split {sizes[:4]} accepted what whole refused: {whole_err}"
                assert got == whole and left == whole_left
            elif whole_err is None or len(got) < len(whole):
                assert "request too large" in str(err), f"split {sizes[:4]} only: {err}"


if __name__ == "__main__":
    fuzzkit.main(one_input, "request")
