"""JSON documents: JSET JGET JDEL (Tile38 1.30, internal/server/json.go).

The document is the object's value: a STRING holding JSON, or the GeoJSON of a spatial
object. Paths are the gjson/sjson subset Tile38 documents (store/fields.py: `a.b.0`, `-1`
to append, `\\.` escapes, `#` for a length). A JSET/JDEL on a spatial object stores the
edited GeoJSON as that object again (so `JDEL key id type` fails with `missing type`); on
a string it stores the edited JSON as the string. As in Tile38 the object keeps its fields
and loses its expiry. Numbers in an edited document are rewritten by the JSON encoder
(`1.0e10` is kept as 10000000000.0): see docs/commands.md, "Differences from Tile38".
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from geoserver.binary import text
from geoserver.commands.base import Ctx, Flag, command, geojson_limits
from geoserver.errors import ID_NOT_FOUND, KEY_NOT_FOUND, CommandError, invalid_argument
from geoserver.fence.model import Change
from geoserver.protocol.resp import OK
from geoserver.store.collection import Item
from geoserver.store.fields import MISSING, path_delete, path_get, path_set
from geoserver.store.geometry import make_string, parse_geojson

PATH_NOT_FOUND = "path not found"
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _document(item: Item | None) -> Any:
    """The object's value as parsed JSON (None: no object, or a string that is not JSON)."""
    if item is None:
        return None
    obj = item.obj
    if obj.kind != "string":
        doc = dict(obj.to_geojson())
        if doc.get("type") == "Feature" and "properties" not in doc:
            doc["properties"] = {}  # Tile38's Feature always prints its properties
        return doc
    try:
        return orjson.loads(obj.text or "")
    except orjson.JSONDecodeError:
        return None


def _doc_text(item: Item) -> str:
    obj = item.obj
    if obj.kind == "string":
        return obj.text or ""
    doc = _document(item)
    added = doc is not None and "properties" in doc and "properties" not in (obj.geojson or {})
    if added:
        return orjson.dumps(doc).decode()
    return obj.json_text()


def _gjson_string(node: Any) -> str:
    """gjson's Result.String(): a string's text, anything else as JSON."""
    return node if isinstance(node, str) else orjson.dumps(node).decode()


@command("jget", min_args=3, max_args=5, flags=Flag.READ)
def cmd_jget(ctx: Ctx, argv: list[bytes]) -> Any:
    """JGET key id [path [RAW]]"""
    raw = False
    if len(argv) == 5:
        if argv[4].upper() != b"RAW":
            raise invalid_argument(argv[4])
        raw = True
    col = ctx.db.get(text(argv[1]))
    item = col.get(text(argv[2])) if col is not None else None
    if item is not None and item.expired(ctx.now):
        item = None
    if item is None:
        if ctx.json:
            raise CommandError(KEY_NOT_FOUND if col is None else ID_NOT_FOUND)
        return None
    if len(argv) == 3:
        value: str | None = _doc_text(item)
    else:
        doc = _document(item)
        node = path_get(doc, text(argv[3])) if doc is not None else MISSING
        value = None if node is MISSING else (orjson.dumps(node).decode() if raw else _gjson_string(node))
    if ctx.json:
        return {} if value is None else {"value": value}
    return value


def _json_value(token: str, mode: str) -> Any:
    """A JSET value: RAW is JSON, STR a string; otherwise a JSON number or true/false/null
    is taken as JSON and anything else as a string (Tile38's choice)."""
    if mode == "STR":
        return token
    if mode == "RAW" or token in ("true", "false", "null") or _JSON_NUMBER.fullmatch(token):
        try:
            return orjson.loads(token)
        except orjson.JSONDecodeError:
            raise CommandError(f"invalid json: {token}") from None
    return token


def _store(ctx: Ctx, key: str, oid: str, item: Item | None, doc: Any) -> None:
    """Store an edited document: spatial objects as GeoJSON again, others as a string."""
    body = orjson.dumps(doc).decode()
    if item is not None and item.obj.kind != "string":
        obj = parse_geojson(body, geojson_limits(ctx))
    else:
        obj = make_string(body)
    fields = item.fields if item is not None else None
    col = ctx.db.get_or_create(key)
    if item is not None:  # fields kept, expiry dropped (Tile38 builds a new object)
        col.delete(oid)
    col.set(oid, obj, dict(fields) if fields else None, None)
    ctx.dirty = True
    if ctx.changes is not None and obj.is_spatial:  # fences see a spatial edit as the SET it is
        ctx.changes.append(Change("set", key, oid, col.items[oid], item))


@command("jset", min_args=5, max_args=6, flags=Flag.WRITE | Flag.GROWS)
def cmd_jset(ctx: Ctx, argv: list[bytes]) -> Any:
    """JSET key id path value [RAW|STR]"""
    mode = ""
    if len(argv) == 6:
        mode = argv[5].decode("utf-8", "replace").upper()
        if mode not in ("RAW", "STR"):
            raise invalid_argument(argv[5])
    key, oid, path = text(argv[1]), text(argv[2]), text(argv[3])
    value = _json_value(text(argv[4]), mode)
    col = ctx.db.get(key)
    item = col.get(oid) if col is not None else None
    if item is not None and item.expired(ctx.now):
        item = None
    doc = _document(item)
    try:
        doc = path_set(doc, path, value)
    except ValueError as err:
        raise CommandError(str(err)) from None
    _store(ctx, key, oid, item, doc)
    return {} if ctx.json else OK


@command("jdel", min_args=4, max_args=4, flags=Flag.WRITE)
def cmd_jdel(ctx: Ctx, argv: list[bytes]) -> Any:
    """JDEL key id path"""
    key, oid = text(argv[1]), text(argv[2])
    col = ctx.db.get(key)
    if col is None:
        if ctx.json:
            raise CommandError(KEY_NOT_FOUND)
        return 0
    item = col.get(oid)
    if item is not None and item.expired(ctx.now):
        item = None
    doc = _document(item)
    if doc is None or not path_delete(doc, text(argv[3])):
        if ctx.json:
            raise CommandError(PATH_NOT_FOUND)
        return 0
    _store(ctx, key, oid, item, doc)
    return {} if ctx.json else 1

