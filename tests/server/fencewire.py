"""Reading fence event streams the way Tile38's tests do (tests/fence_test.go fenceReader):
each event is a RESP bulk string holding one JSON document."""

from __future__ import annotations

import socket
from typing import Any

import orjson
from helpers import GeoServer


def get(doc: Any, path: str) -> Any:
    """gjson-style dotted lookup: `object.coordinates`, `nearby.id`."""
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def matches(doc: dict[str, Any], expect: dict[str, Any]) -> bool:
    return all(get(doc, k) == v for k, v in expect.items())


class EventStream:
    """A connection that ran a FENCE command (or SUBSCRIBE in JSON mode)."""

    def __init__(self, server: GeoServer, *command: Any, json: bool = False, inline: bool = False) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=10)
        self.buf = b""
        if json:
            self.sock.sendall(b"*2\r\n$6\r\nOUTPUT\r\n$4\r\njson\r\n")
            line = self.read_line()  # the OUTPUT reply, JSON already: a bulk string
            if line.startswith(b"$"):
                self.read_exact(int(line[1:]) + 2)
        if inline:
            self.sock.sendall(" ".join(str(a) for a in command).encode() + b"\r\n")
        else:
            self.sock.sendall(encode(command))

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        data = self.sock.recv(1 << 16)
        if not data:
            raise ConnectionError("stream closed")
        self.buf += data

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def bulk(self) -> bytes:
        line = self.read_line()
        assert line.startswith(b"$"), line
        data = self.read_exact(int(line[1:]) + 2)
        assert data.endswith(b"\r\n")
        return data[:-2]

    def event(self) -> dict[str, Any]:
        return orjson.loads(self.bulk())

    def events(self, n: int) -> list[dict[str, Any]]:
        return [self.event() for _ in range(n)]


def encode(args: tuple[Any, ...] | list[Any]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)
