"""Reply encoders: command results and errors to JSON (Tile38's `{"ok":...,"elapsed":...}`)
or RESP bytes. Pure functions; the connection decides which one applies."""

from __future__ import annotations

from typing import Any

import orjson

from geoserver.errors import ArityError, GeoServerError
from geoserver.protocol.resp import Raw, encode_error, encode_value


def elapsed_text(ns: int) -> str:
    """Go's time.Duration.String() for short durations: `850ns`, `23.1µs`, `1.2ms`, `2.5s`."""
    if ns < 1_000:
        return f"{ns}ns"
    for unit, scale in (("µs", 1_000), ("ms", 1_000_000)):
        if ns < scale * 1_000:
            return f"{ns / scale:.3f}".rstrip("0").rstrip(".") + unit
    return f"{ns / 1e9:.6f}".rstrip("0").rstrip(".") + "s"


def json_ok(body: dict[str, Any] | None, elapsed_ns: int) -> bytes:
    doc: dict[str, Any] = {"ok": True}
    if body:
        doc.update(body)
    doc["elapsed"] = elapsed_text(elapsed_ns)
    return orjson.dumps(doc)


def json_error(message: str, elapsed_ns: int) -> bytes:
    return orjson.dumps({"ok": False, "err": message, "elapsed": elapsed_text(elapsed_ns)})


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def render(result: Any, json: bool, elapsed_ns: int, resp_conn: bool) -> bytes:
    """A successful result in the connection's mode. JSON over RESP travels as a bulk string."""
    if isinstance(result, Raw):
        return bytes(result)
    if json:
        data = json_ok(result, elapsed_ns)
        return bulk(data) if resp_conn else data
    return encode_value(result)


def render_error(exc: GeoServerError, json: bool, elapsed_ns: int, resp_conn: bool) -> bytes:
    if json:
        data = json_error(exc.message, elapsed_ns)
        return bulk(data) if resp_conn else data
    message = exc.resp_message() if isinstance(exc, ArityError) else exc.message
    return encode_error(message)
