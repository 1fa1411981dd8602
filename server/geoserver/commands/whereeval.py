"""WHEREEVAL / WHEREEVALSHA, the Lua filter of the search commands (Tile38's token.go and
scanner.go `fieldMatch`):

    ... WHEREEVAL script numargs arg ... | WHEREEVALSHA sha1 numargs arg ...

The script is compiled once per query (and cached by sha1 with EVAL's scripts), ARGV is the
args, and each candidate object runs it with ID, FIELDS (its fields, plus `z` for a spatial
object) and PROPERTIES (a GeoJSON Feature's properties, else an empty table); the object matches
when the result is truthy as Tile38 reads it (not nil/false/0/"", a non-empty table). The Lua
side, its sandbox and its time limit are geoserver.scripting's; here only the argument parsing
and the object -> Lua values step. `tile38.call` in the filter runs read-only commands.
"""

from __future__ import annotations

from typing import Any

from geoserver.binary import text
from geoserver.commands import clients, scripts
from geoserver.commands.base import Args, Ctx
from geoserver.errors import ArityError, CommandError, invalid_argument
from geoserver.scripting import ScriptError, WherePredicate
from geoserver.store.collection import Item
from geoserver.store.fields import FALSE, NULL, TRUE, JSONValue


class WhereEval:
    """One WHEREEVAL of a query, kept in `Search.wheres` next to WHERE (`match(oid, item)`)."""

    __slots__ = ("predicate", "script")

    def __init__(self, script: bytes, predicate: WherePredicate) -> None:
        self.script = script
        self.predicate = predicate

    def match(self, oid: str, item: Item) -> bool:
        obj = item.obj
        props = None
        if obj.kind == "geojson" and isinstance(obj.geojson, dict):
            found = obj.geojson.get("properties")
            props = found if isinstance(found, dict) else None
        try:
            return self.predicate.match(oid, lua_fields(item), props)
        except ScriptError as exc:
            raise CommandError(exc.message) from None


def lua_fields(item: Item) -> list[Any]:
    """FIELDS as Tile38's luaSetField makes them, as name, value, name, value ...: numbers,
    booleans, other values as their text; null fields absent; `z` (0 without one) for every
    spatial object."""
    out: list[Any] = [b"z", item.obj.z or 0.0] if item.obj.kind != "string" else []
    for name, value in (item.fields or {}).items():
        if value.__class__ is float:
            out += (name.encode(), value)
        elif isinstance(value, JSONValue) and value.kind in (NULL, FALSE, TRUE):
            if value.kind != NULL:
                out += (name.encode(), value.kind == TRUE)
        else:
            out += (name.encode(), value.encode())
    return out


def parse(ctx: Ctx | None, args: Args, is_sha: bool) -> WhereEval:
    """The tokens after WHEREEVAL[SHA], as Tile38 reads them: a non-empty script, a count
    (an unsigned integer, else `invalid argument`), then that many non-empty args."""
    if ctx is None:
        raise CommandError("WHEREEVAL needs a server")
    name = text(args.argv[0])
    script = args.next()
    count = args.next()
    if not script or not count:
        raise ArityError(name)
    if not count.isdigit():
        raise invalid_argument(count)
    argv = [args.next() for _ in range(int(count))]
    if not all(argv):
        raise ArityError(name)
    server = ctx.server
    try:
        predicate = scripts.engine(server).where(
            script, is_sha, argv, lambda call: scripts.script_call(server, "ro", call),
            clients.DEADLINE.get())
    except ScriptError as exc:
        raise CommandError(exc.message) from None
    return WhereEval(script, predicate)
