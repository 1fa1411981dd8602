"""A raw RESP connection for tests that must see exact reply shapes: each call returns one
reply, parsed by hiredis (bulk strings decoded as text, errors as values, never raised), or
its exact bytes. `json()` switches the connection to `OUTPUT json` and parses the replies."""

from __future__ import annotations

import socket
from typing import Any

import hiredis
import orjson


def encode(*args: Any) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)


def frame_end(buf: bytes, i: int = 0) -> int | None:
    """Index just past the RESP reply starting at `i`, or None if it is incomplete."""
    nl = buf.find(b"\r\n", i)
    if nl < 0:
        return None
    kind = buf[i : i + 1]
    if kind in (b"+", b"-", b":", b"_", b",", b"#"):
        return nl + 2
    n = int(buf[i + 1 : nl])
    if kind in (b"$", b"=", b"!"):
        end = nl + 2 + n + 2 if n >= 0 else nl + 2
        return end if len(buf) >= end else None
    j: int | None = nl + 2
    count = max(n, 0) * (2 if kind == b"%" else 1)
    for _ in range(count):
        j = frame_end(buf, j)  # type: ignore[arg-type]
        if j is None:
            return None
    return j


def parse(frame: bytes) -> Any:
    reader = hiredis.Reader(encoding="utf-8", errors="replace")
    reader.feed(frame)
    return reader.gets()


class Wire:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.json_mode = False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self) -> bytes:
        while True:
            end = frame_end(self.buf) if self.buf else None
            if end is not None:
                frame, self.buf = self.buf[:end], self.buf[end:]
                return frame
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("connection closed by server")
            self.buf += data

    def raw(self, *args: Any) -> bytes:
        self.send(encode(*args))
        return self.read_frame()

    def call(self, *args: Any) -> Any:
        return parse(self.raw(*args))

    def json(self, *args: Any) -> dict[str, Any]:
        if not self.json_mode:
            assert parse(self.raw("OUTPUT", "json")) is not None
            self.json_mode = True
        reply = self.call(*args)
        assert isinstance(reply, str), reply
        return orjson.loads(reply)

    def closed_by_peer(self, timeout: float = 5.0) -> bool:
        """True once the server has closed this connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(1 << 16)
                if not data:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False
