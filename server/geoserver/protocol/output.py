"""Reply encoders: command results and errors to JSON (Tile38's `{"ok":...,"elapsed":...}`)
or RESP bytes. Pure functions; the connection decides which one applies.

Binary keys and ids (geoserver.binary) reach here as str with surrogates: RESP sends their exact
bytes, JSON renders them with U+FFFD so the reply stays valid JSON. Replies without such
bytes (nearly all) take the plain encoder; only a failed attempt pays for the walk.
"""

from __future__ import annotations

from typing import Any

import orjson

from geoserver.binary import printable, raw
from geoserver.errors import ArityError, GeoServerError
from geoserver.protocol.resp import Map, Raw, Simple, encode_error, encode_value


def elapsed_text(ns: int) -> str:
    """Go's time.Duration.String() for short durations: `850ns`, `23.1µs`, `1.2ms`, `2.5s`."""
    if ns < 1_000:
        return f"{ns}ns"
    for unit, scale in (("µs", 1_000), ("ms", 1_000_000)):
        if ns < scale * 1_000:
            return f"{ns / scale:.3f}".rstrip("0").rstrip(".") + unit
    return f"{ns / 1e9:.6f}".rstrip("0").rstrip(".") + "s"


def dumps_json(value: Any) -> bytes:
    """orjson.dumps, with undecodable bytes in any str (a binary key, id, field) as U+FFFD."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: "str is not valid UTF-8: surrogates not allowed"
        return orjson.dumps(_printable(value))


def encode_resp(value: Any) -> bytes:
    """encode_value, with every str (a binary key, id, field, STRING value) as its exact bytes."""
    try:
        return encode_value(value)
    except UnicodeEncodeError:
        return encode_value(_exact(value))


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


def _exact(value: Any) -> Any:
    if isinstance(value, Simple):
        return Simple(printable(value))
    if isinstance(value, str):
        return raw(value)
    if isinstance(value, Map):
        return Map({_exact(k): _exact(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return [_exact(v) for v in value]
    return value


def json_ok(body: dict[str, Any] | None, elapsed_ns: int) -> bytes:
    doc: dict[str, Any] = {"ok": True}
    if body:
        doc.update(body)
    doc["elapsed"] = elapsed_text(elapsed_ns)
    return dumps_json(doc)


def json_error(message: str, elapsed_ns: int) -> bytes:
    return orjson.dumps({"ok": False, "err": printable(message), "elapsed": elapsed_text(elapsed_ns)})


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class Chunks(list[bytes]):
    """A big reply kept as the pieces it was encoded in (commands/slices.py), never joined:
    the connection hands them to the transport one by one, yielding to the loop between
    (slices.send). Their concatenation is the reply's bytes."""

    @property
    def nbytes(self) -> int:
        return sum(map(len, self))


def render(result: Any, json: bool, elapsed_ns: int, resp_conn: bool) -> bytes:
    """A successful result in the connection's mode. JSON over RESP travels as a bulk string.
    A Chunks reply passes as it is (typed as bytes: only Client and slices.send look inside)."""
    if isinstance(result, Chunks):
        return result  # type: ignore[return-value]
    if isinstance(result, Raw):
        return bytes(result)
    if json:
        data = json_ok(result, elapsed_ns)
        return bulk(data) if resp_conn else data
    return encode_resp(result)


def render_error(exc: GeoServerError, json: bool, elapsed_ns: int, resp_conn: bool) -> bytes:
    if json:
        data = json_error(exc.message, elapsed_ns)
        return bulk(data) if resp_conn else data
    message = exc.resp_message() if isinstance(exc, ArityError) else exc.message
    return encode_error(printable(message))
