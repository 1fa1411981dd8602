"""Object and collection commands: SET GET DEL PDEL DROP RENAME KEYS TYPE EXISTS FSET FGET
FEXISTS EXPIRE PERSIST TTL STATS BOUNDS FLUSHDB. Syntax follows Tile38 1.30 (see docs/commands.md)."""

from __future__ import annotations

import math
from typing import Any

from geoserver.binary import text
from geoserver.commands import slices
from geoserver.commands.base import Args, Ctx, Flag, command, geojson_limits, pattern_arg
from geoserver.commands.replies import (
    bounds_json,
    bounds_resp,
    field_out,
    fields_json,
    fields_resp,
    object_json,
    point_json,
    point_resp,
)
from geoserver.errors import (
    ID_ALREADY_EXISTS,
    ID_NOT_FOUND,
    KEY_NOT_FOUND,
    ArityError,
    CommandError,
    invalid_argument,
)
from geoserver.fence.model import Change
from geoserver.protocol.resp import OK, Simple
from geoserver.store.collection import Collection, Item, literal_prefix
from geoserver.store.fields import check_field_name, field_text, parse_field_value
from geoserver.store.geometry import (
    GeoLimits,
    GeoObject,
    box_geojson,
    encode_geohash,
    make_bounds,
    make_hash_point,
    make_point,
    make_string,
    parse_float,
    parse_geojson,
)
from geoserver.store.glob import matcher

W = Flag.WRITE
R = Flag.READ


def _collection(ctx: Ctx, key: bytes) -> Collection:
    col = ctx.db.get(text(key))
    if col is None:
        raise CommandError(KEY_NOT_FOUND)
    return col


def _live_item(ctx: Ctx, col: Collection, oid: str) -> Item | None:
    item = col.get(oid)
    if item is not None and item.expired(ctx.now):
        return None  # expired, not yet swept
    return item


def _lookup(ctx: Ctx, argv: list[bytes]) -> Item | None:
    """The live object named by argv[1:3], or None. In JSON mode a missing object is an
    error (`key not found` / `id not found`); RESP callers return their own "missing" value."""
    col = ctx.db.get(text(argv[1]))
    item = _live_item(ctx, col, text(argv[2])) if col is not None else None
    if item is None and ctx.json:
        raise CommandError(KEY_NOT_FOUND if col is None else ID_NOT_FOUND)
    return item


def _item(ctx: Ctx, key: bytes, oid: bytes) -> Item:
    item = _live_item(ctx, _collection(ctx, key), text(oid))
    if item is None:
        raise CommandError(ID_NOT_FOUND)
    return item


def parse_object(args: Args, limits: GeoLimits | None = None) -> GeoObject:
    """The value part of SET: OBJECT | POINT | BOUNDS | HASH | STRING."""
    kind = args.peek_upper()
    args.next()
    if kind == "POINT":
        lat, lon = args.next_float(), args.next_float()
        z = _optional_z(args)
        return make_point(lat, lon, z)
    if kind == "BOUNDS":
        return make_bounds(args.next_float(), args.next_float(), args.next_float(), args.next_float())
    if kind == "OBJECT":
        return parse_geojson(args.next(), limits)
    if kind == "HASH":
        return make_hash_point(args.next_str())
    if kind == "STRING":
        return make_string(args.next_str())
    raise invalid_argument(args.argv[args.pos - 1])


def _optional_z(args: Args) -> float | None:
    """POINT's optional z: taken only when the next token is a number, so options may follow
    the geometry (`SET k id POINT 33 -115 EX 10`), as in Tile38."""
    if not args.more():
        return None
    try:
        z = float(args.argv[args.pos])
    except ValueError:
        return None
    if not math.isfinite(z):
        return None
    args.pos += 1
    return z


Return = tuple[str, int, bool]  # output kind, geohash precision, WITHFIELDS


def _return_option(args: Args, given: Return | None) -> Return:
    """`RETURN [WITHFIELDS] [OBJECT|POINT|BOUNDS|HASH precision]` in SET/FSET (Tile38 after
    1.37, crud.go): the write answers with the stored object, as GET with those words would."""
    if given is not None:
        raise invalid_argument(args.argv[args.pos])
    args.next()
    kind, precision, withfields = "OBJECT", 0, False
    while (word := args.peek_upper()) in ("WITHFIELDS", "OBJECT", "POINT", "BOUNDS", "HASH"):
        args.next()
        if word == "WITHFIELDS":
            withfields = True
        else:
            kind = word
            if word == "HASH":
                precision = args.next_int(1, 12)
    return kind, precision, withfields


def _check_return(ret: Return | None, obj: GeoObject) -> None:
    """Refused before the write, not after it: GET's rule for non-spatial objects."""
    if ret is not None and ret[0] != "OBJECT" and not obj.is_spatial:
        raise CommandError("object is not spatial")


@command("set", min_args=4, flags=W | Flag.GROWS)
def cmd_set(ctx: Ctx, argv: list[bytes]) -> Any:
    """SET key id [FIELD name value ...] [EX seconds] [NX|XX] (OBJECT geojson | POINT lat lon [z]
    | BOUNDS minlat minlon maxlat maxlon | HASH geohash | STRING value)
    [RETURN [WITHFIELDS] [OBJECT|POINT|BOUNDS|HASH precision]]"""
    if len(argv) == 6 and argv[3].upper() == b"POINT":  # `SET key id POINT lat lon`: the hot path
        point = make_point(parse_float(argv[4]), parse_float(argv[5]))
        col = ctx.db.get_or_create(key := text(argv[1]))
        old = col.set(oid := text(argv[2]), point, None, None)
        ctx.dirty = True
        if ctx.changes is not None:  # fences watch (geoserver.fence)
            ctx.changes.append(Change("set", key, oid, col.items[oid], _alive(ctx, old)))
        return {} if ctx.json else OK
    args = Args(argv, 3)
    fields: dict[str, Any] | None = None
    expires_at: float | None = None
    cond = ""
    cond_at: list[int] = []
    obj: GeoObject | None = None
    ret: Return | None = None
    while args.more():
        word = args.peek_upper()
        if word == "RETURN":
            ret = _return_option(args, ret)
        elif word == "FIELD":
            args.next()
            name = check_field_name(args.next())
            if fields is None:
                fields = {}
            fields[name] = parse_field_value(args.next())
        elif word == "EX":
            args.next()
            seconds = args.next_float()
            expires_at = ctx.now + seconds
        elif word in ("NX", "XX"):
            args.next()
            if cond and cond != word:
                raise invalid_argument(argv[args.pos - 1])
            cond = word
            cond_at.append(args.pos - 1)
        elif word in ("POINT", "BOUNDS", "OBJECT", "HASH", "STRING"):
            obj = parse_object(args, geojson_limits(ctx))  # the last geometry wins; options may follow it
        else:
            raise invalid_argument(argv[args.pos])
    if obj is None:
        raise ArityError("set")
    _check_return(ret, obj)
    key, oid = text(argv[1]), text(argv[2])
    if cond:
        col = ctx.db.get(key)
        exists = col is not None and _live_item(ctx, col, oid) is not None
        if cond == "NX" and exists:
            if ctx.json:
                raise CommandError(ID_ALREADY_EXISTS)
            return None
        if cond == "XX" and not exists:
            if ctx.json:
                raise CommandError(ID_NOT_FOUND)
            return None
    col = ctx.db.get_or_create(key)
    old = col.set(oid, obj, fields, expires_at, ctx.now)
    if ctx.changes is not None:
        ctx.changes.append(Change("set", key, oid, col.items[oid], _alive(ctx, old)))
    if expires_at is not None:
        ctx.db.schedule_expiry(key, oid, expires_at)
    ctx.dirty = True
    if cond_at:  # logged as the write it was: a replay, where TTLs restart, must not re-judge it
        ctx.record = [a for i, a in enumerate(argv) if i not in cond_at]
    if ret is not None:
        return _object_reply(ctx, col.items[oid], *ret)
    return {} if ctx.json else OK


@command("get", min_args=3, max_args=6, flags=R)
def cmd_get(ctx: Ctx, argv: list[bytes]) -> Any:
    """GET key id [WITHFIELDS] [OBJECT|POINT|BOUNDS|HASH precision]"""
    args = Args(argv, 3)
    withfields = args.flag("WITHFIELDS")
    kind = "OBJECT"
    precision = 0
    if args.more():
        kind = args.peek_upper()
        args.next()
        if kind == "HASH":
            precision = args.next_int(1, 12)
        elif kind not in ("OBJECT", "POINT", "BOUNDS"):
            raise ArityError("get")  # Tile38: an unknown output word is an arity error
    args.done()
    item = _lookup(ctx, argv)
    if item is None:
        return None
    if kind != "OBJECT" and not item.obj.is_spatial:
        raise CommandError("object is not spatial")
    return _object_reply(ctx, item, kind, precision, withfields)


def _object_reply(ctx: Ctx, item: Item, kind: str, precision: int, withfields: bool) -> Any:
    """An object as GET answers it; SET/FSET ... RETURN answer the same."""
    obj = item.obj
    if ctx.json:
        body: dict[str, Any]
        if kind == "OBJECT":
            body = {"object": object_json(obj)}
        elif kind == "POINT":
            body = {"point": point_json(obj)}
        elif kind == "BOUNDS":
            body = {"bounds": bounds_json(obj)}
        else:
            body = {"hash": encode_geohash(*obj.center(), precision)}
        if withfields and item.fields:
            body["fields"] = fields_json(item)
        return body
    if kind == "OBJECT":
        value: Any = obj.json_text()
    elif kind == "POINT":
        value = point_resp(obj)
    elif kind == "BOUNDS":
        value = bounds_resp(obj)
    else:
        value = encode_geohash(*obj.center(), precision)
    if withfields:
        return [value, fields_resp(item)] if item.fields else [value]
    return value


def _alive(ctx: Ctx, item: Item | None) -> Item | None:
    """The replaced object for the fences: an expired one was gone already."""
    return None if item is None or item.expired(ctx.now) else item


def delete_object(ctx: Ctx, key: str, oid: str) -> bool:
    """Delete one object, dropping its collection when it empties. Shared with expiry."""
    col = ctx.db.get(key)
    if col is None or (item := col.delete(oid)) is None:
        return False
    ctx.db.drop_if_empty(key)
    if ctx.changes is not None:
        ctx.changes.append(Change("del", key, oid, item))
    return True


@command("del", min_args=3, max_args=4, flags=W)
def cmd_del(ctx: Ctx, argv: list[bytes]) -> Any:
    """DEL key id [ERRON404]"""
    erron404 = len(argv) == 4
    if erron404 and argv[3].upper() != b"ERRON404":
        raise invalid_argument(argv[3])
    key, oid = text(argv[1]), text(argv[2])
    deleted = delete_object(ctx, key, oid)
    if not deleted and erron404:
        raise CommandError(KEY_NOT_FOUND if ctx.db.get(key) is None else ID_NOT_FOUND)
    ctx.dirty = deleted
    return {} if ctx.json else int(deleted)


@command("pdel", min_args=3, max_args=3, flags=W)
def cmd_pdel(ctx: Ctx, argv: list[bytes]) -> Any:
    """PDEL key pattern"""
    key, pattern = text(argv[1]), pattern_arg(ctx, argv[2])
    col = ctx.db.get(key)
    count = 0
    if col is not None:
        lo, hi = col.prefix_bounds(literal_prefix(pattern))  # as Tile38: only that id range
        if slices.sliced(ctx, hi - lo):
            return _pdel_sliced(ctx, argv)
        for oid in [i for i in col.ids_between(lo, hi) if matcher(pattern)(i)]:
            item = col.delete(oid)
            count += 1
            if ctx.changes is not None and item is not None:
                ctx.changes.append(Change("del", key, oid, item))  # Tile38: one del per object
        ctx.db.drop_if_empty(key)
    ctx.dirty = count > 0
    return {} if ctx.json else count


async def _pdel_sliced(ctx: Ctx, argv: list[bytes]) -> Any:
    """PDEL over a big id range, STEP ids a step. Other writes to the key wait until it ends
    (slices.hold), so the ids it deletes are those that match when it starts, and its AOF
    record, appended when it ends, replays to the same dataset."""
    key, pattern = text(argv[1]), text(argv[2])  # checked by cmd_pdel
    async with slices.hold(ctx.db, argv[1]):
        col = ctx.db.get(key)  # looked up under the hold: a FLUSHDB may have run meanwhile
        count = 0
        if col is not None:
            count = await slices.run_sliced(_pdel_steps(col, pattern, ctx.changes, key))
            ctx.db.drop_if_empty(key)
        ctx.dirty = count > 0
    return {} if ctx.json else count


def _pdel_steps(col: Collection, pattern: str, changes: list[Change] | None = None,
                key: str = "") -> slices.Steps:
    """Delete the ids matching `pattern`, resuming after the last id seen."""
    match = matcher(pattern)
    count = 0
    for batch in slices.prefix_batches(col.items, literal_prefix(pattern)):
        for oid in batch:
            if match(oid) and (item := col.delete(oid)) is not None:
                count += 1
                if changes is not None:
                    changes.append(Change("del", key, oid, item))
        yield
    return count


@command("drop", min_args=2, max_args=2, flags=W)
def cmd_drop(ctx: Ctx, argv: list[bytes]) -> Any:
    """DROP key"""
    dropped = ctx.db.drop(text(argv[1]))
    ctx.dirty = dropped
    if dropped and ctx.changes is not None:
        ctx.changes.append(Change("drop", text(argv[1])))
    return {} if ctx.json else int(dropped)


def _rename(ctx: Ctx, argv: list[bytes], nx: bool) -> Any:
    src, dst = text(argv[1]), text(argv[2])
    col = ctx.db.get(src)
    if col is None:
        raise CommandError(KEY_NOT_FOUND)
    # a fence names its key: renaming either side would leave it watching nothing (Tile38)
    fenced = ctx.server.fences.registry(ctx.db).keys
    hooks = [h for k in (src, dst) if k in fenced for h in fenced[k].by_name.values()]
    if any(not h.channel for h in hooks):
        raise CommandError("key has hooks set")
    if hooks:
        raise CommandError("key has channels set")
    if nx and ctx.db.get(dst) is not None:
        return {} if ctx.json else 0
    del ctx.db.collections[src]
    ctx.db.collections[dst] = col
    for oid, item in col.items.items():
        if item.expires_at is not None:
            ctx.db.schedule_expiry(dst, oid, item.expires_at)
    ctx.dirty = True
    if ctx.json:
        return {}
    return 1 if nx else OK


@command("rename", min_args=3, max_args=3, flags=W)
def cmd_rename(ctx: Ctx, argv: list[bytes]) -> Any:
    """RENAME key newkey"""
    return _rename(ctx, argv, nx=False)


@command("renamenx", min_args=3, max_args=3, flags=W)
def cmd_renamenx(ctx: Ctx, argv: list[bytes]) -> Any:
    """RENAMENX key newkey"""
    return _rename(ctx, argv, nx=True)


@command("flushdb", min_args=1, max_args=1, flags=W | Flag.ADMIN)
def cmd_flushdb(ctx: Ctx, argv: list[bytes]) -> Any:
    """FLUSHDB"""
    ctx.db.flush()
    ctx.server.fences.flush(ctx.db)  # Tile38: FLUSHDB deletes the hooks and channels too
    ctx.dirty = True
    return {} if ctx.json else OK


@command("keys", min_args=2, max_args=2, flags=R)
def cmd_keys(ctx: Ctx, argv: list[bytes]) -> Any:
    """KEYS pattern"""
    pattern = pattern_arg(ctx, argv[1])
    prefix = literal_prefix(pattern)
    cols = ctx.db.collections
    size = len(cols) if not prefix else cols.bisect_left(prefix + "\U0010ffff") - cols.bisect_left(prefix)
    if slices.sliced(ctx, size):
        return _keys_sliced(ctx, pattern, prefix)
    keys = [k for k in ctx.db.collections if matcher(pattern)(k)]
    return {"keys": keys} if ctx.json else keys


def _matching_keys(ctx: Ctx, pattern: str, prefix: str) -> slices.Steps:
    """Keys matching `pattern` in key order, STEP keys a step. Between steps the walk resumes
    after the last key seen, so a key that lives through the whole walk is listed once."""
    match = matcher(pattern)
    out: list[str] = []
    for batch in slices.prefix_batches(ctx.db.collections, prefix):
        out.extend(key for key in batch if match(key))
        yield
    return out


async def _keys_sliced(ctx: Ctx, pattern: str, prefix: str) -> Any:
    keys = await slices.run_sliced(_matching_keys(ctx, pattern, prefix))
    return await slices.run_sliced(slices.reply(ctx, keys, "keys"))


@command("type", min_args=2, max_args=2, flags=R)
def cmd_type(ctx: Ctx, argv: list[bytes]) -> Any:
    """TYPE key"""
    exists = ctx.db.get(text(argv[1])) is not None
    if ctx.json:
        if not exists:
            raise CommandError(KEY_NOT_FOUND)
        return {"type": "hash"}
    return Simple("hash" if exists else "none")


@command("exists", min_args=3, max_args=3, flags=R)
def cmd_exists(ctx: Ctx, argv: list[bytes]) -> Any:
    """EXISTS key id -- a missing key is an error (`key not found`) in both modes, as in Tile38."""
    col = _collection(ctx, argv[1])
    found = _live_item(ctx, col, text(argv[2])) is not None
    return {"exists": found} if ctx.json else int(found)


@command("fexists", min_args=4, max_args=4, flags=R)
def cmd_fexists(ctx: Ctx, argv: list[bytes]) -> Any:
    """FEXISTS key id field"""
    item = _item(ctx, argv[1], argv[2])
    found = bool(item.fields) and text(argv[3]) in item.fields  # type: ignore[operator]
    return {"exists": found} if ctx.json else int(found)


@command("fset", min_args=5, flags=W | Flag.GROWS)
def cmd_fset(ctx: Ctx, argv: list[bytes]) -> Any:
    """FSET key id [XX] field value [field value ...]
    [RETURN [WITHFIELDS] [OBJECT|POINT|BOUNDS|HASH precision]]"""
    args = Args(argv, 3)
    xx = args.flag("XX")
    pairs: list[bytes] = []
    ret: Return | None = None
    while args.more():  # RETURN may stand where a field name would
        if args.peek_upper() == "RETURN":
            ret = _return_option(args, ret)
        else:
            pairs += (args.next(), args.next())
    if not pairs and ret is None:
        raise ArityError("fset")
    col = _collection(ctx, argv[1])
    item = _live_item(ctx, col, text(argv[2]))
    if item is None:
        if xx:
            return {} if ctx.json else 0
        raise CommandError(ID_NOT_FOUND)
    # every pair is checked before any is applied: a bad one fails the whole command (nothing
    # half-applied and unlogged), as Tile38 does
    parsed = [(check_field_name(pairs[i]), parse_field_value(pairs[i + 1])) for i in range(0, len(pairs), 2)]
    _check_return(ret, item.obj)
    changed = sum(1 for name, value in parsed if col.set_field(item, name, value))
    ctx.dirty = changed > 0
    if changed and ctx.changes is not None:
        ctx.changes.append(Change("fset", text(argv[1]), text(argv[2]), item))
    if ret is not None:
        return _object_reply(ctx, item, *ret)
    return {} if ctx.json else changed


@command("fget", min_args=3, flags=R)
def cmd_fget(ctx: Ctx, argv: list[bytes]) -> Any:
    """FGET key id field -- the key and id are checked before the arity, as in Tile38."""
    item = _item(ctx, argv[1], argv[2])
    if len(argv) != 4:
        raise ArityError("fget")
    value = (item.fields or {}).get(text(argv[3]), 0.0)
    if ctx.json:
        return {"value": field_out(value)}
    return field_text(value)


@command("expire", min_args=4, max_args=4, flags=W)
def cmd_expire(ctx: Ctx, argv: list[bytes]) -> Any:
    """EXPIRE key id seconds"""
    seconds = Args(argv, 3).next_float()
    item = _lookup(ctx, argv)
    if item is None:
        return 0
    item.expires_at = ctx.now + seconds
    ctx.db.schedule_expiry(text(argv[1]), text(argv[2]),
                           item.expires_at)
    ctx.dirty = True
    if ctx.changes is not None:  # Tile38 reports it as a write of the object (no old one)
        ctx.changes.append(Change("expire", text(argv[1]), text(argv[2]), item))
    return {} if ctx.json else 1


@command("persist", min_args=3, max_args=3, flags=W)
def cmd_persist(ctx: Ctx, argv: list[bytes]) -> Any:
    """PERSIST key id"""
    item = _lookup(ctx, argv)
    if item is None:
        return 0
    cleared = item.expires_at is not None
    item.expires_at = None
    ctx.dirty = cleared
    if cleared and ctx.changes is not None:
        ctx.changes.append(Change("persist", text(argv[1]), text(argv[2]), item))
    return {} if ctx.json else int(cleared)


_MAX_TTL = float(2**63 - 1024)  # the largest float below 2**63: a signed 64-bit RESP integer


@command("ttl", min_args=3, max_args=3, flags=R)
def cmd_ttl(ctx: Ctx, argv: list[bytes]) -> Any:
    """TTL key id"""
    item = _lookup(ctx, argv)
    if item is None:
        return -2
    if item.expires_at is None:
        ttl: float = -1
    else:
        ttl = min(max(0.0, item.expires_at - ctx.now), _MAX_TTL)  # an EX of 1e20 fits a reply
    if ctx.json:
        return {"ttl": int(ttl)}  # whole seconds, truncated, in both modes (Tile38)
    return int(ttl)


@command("stats", min_args=2, flags=R)
def cmd_stats(ctx: Ctx, argv: list[bytes]) -> Any:
    """STATS key [key ...]"""
    if slices.sliced(ctx, len(argv) - 1):
        return _stats_sliced(ctx, argv)
    out = slices.run(_stats(ctx, argv))
    return {"stats": out} if ctx.json else out


def _stats(ctx: Ctx, argv: list[bytes]) -> slices.Steps:
    """Each key's stats (None when missing), STEP keys a step: each entry is exact at the
    moment its key was read."""
    out: list[Any] = []
    for a in range(1, len(argv), slices.STEP):
        for raw in argv[a : a + slices.STEP]:
            col = ctx.db.get(text(raw))
            if col is None:
                out.append(None)
                continue
            stats = {"in_memory_size": col.weight, "num_objects": len(col),
                     "num_points": col.num_points, "num_strings": col.num_strings}
            out.append(stats if ctx.json else [x for kv in stats.items() for x in kv])
        yield
    return out


async def _stats_sliced(ctx: Ctx, argv: list[bytes]) -> Any:
    out = await slices.run_sliced(_stats(ctx, argv))
    return await slices.run_sliced(slices.reply(ctx, out, "stats"))


@command("bounds", min_args=2, max_args=2, flags=R)
def cmd_bounds(ctx: Ctx, argv: list[bytes]) -> Any:
    """BOUNDS key"""
    col = ctx.db.get(text(argv[1]))
    if col is None:
        if ctx.json:
            raise CommandError(KEY_NOT_FOUND)
        return None
    minlon, minlat, maxlon, maxlat = col.bbox() or (0.0, 0.0, 0.0, 0.0)
    if ctx.json:
        return {"bounds": box_geojson(minlat, minlon, maxlat, maxlon)}
    return [[float(minlon), float(minlat)], [float(maxlon), float(maxlat)]]
