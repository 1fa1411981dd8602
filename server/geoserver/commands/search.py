"""Search commands: SCAN NEARBY WITHIN INTERSECTS. Syntax follows Tile38 1.30:

    CMD key [CURSOR n] [LIMIT n] [MATCH glob ...] [WHERE field min max ...]
            [WHEREIN field n v1 .. vn ...] [WHEREEVAL script n arg ... | WHEREEVALSHA sha1 n arg ...]
            [NOFIELDS] [DISTANCE] [ASC|DESC]
            [COUNT | IDS | OBJECTS | POINTS | BOUNDS | HASHES precision] <area>

Candidates come from store/query.py as ordered batches; `_collect` walks them applying
CURSOR, expiry, MATCH/WHERE/WHEREIN/WHEREEVAL (commands/whereeval.py) and LIMIT. The returned
cursor is CURSOR plus the number of candidates iterated when LIMIT was reached, else 0
(Tile38's scanWriter).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import mercantile
import shapely

from geoserver.binary import raw, text
from geoserver.commands import slices, whereeval
from geoserver.commands.base import Args, Ctx, Flag, command, geojson_limits, pattern_arg
from geoserver.commands.replies import (
    bounds_json,
    bounds_resp,
    field_out,
    fields_resp,
    object_json,
    point_json,
    point_resp,
)
from geoserver.errors import ID_NOT_FOUND, KEY_NOT_FOUND, ArityError, CommandError, invalid_argument
from geoserver.protocol.resp import Raw
from geoserver.store import query
from geoserver.store.collection import Collection, Item, id_sorted, literal_prefix
from geoserver.store.expression import Predicate, compile_where
from geoserver.store.fields import (
    MISSING,
    FieldValue,
    equals,
    field_path,
    json_field_value,
    less,
    parse_field_value,
    path_get,
    value_of,
)
from geoserver.store.geometry import (
    circle_bbox,
    encode_geohash,
    geohash_bounds,
    num,
    parse_float,
    parse_geojson,
    sector_polygon,
    shape_json,
    tile38_point_distance,
)
from geoserver.store.glob import matcher

OUTPUTS = ("COUNT", "IDS", "OBJECTS", "POINTS", "BOUNDS", "HASHES")
JSON_KEYS = {"OBJECTS": "objects", "POINTS": "points", "BOUNDS": "bounds", "HASHES": "hashes"}
CHUNK = 256


@dataclass(slots=True)
class Where:
    """`WHERE name min max` (a range, `(` for exclusive) or `WHERE name op value`, on field
    values with Tile38's order (store/fields.py: kinds, then numbers, strings without case).
    Numbers against numbers, the common case, compare as floats."""

    name: str
    low: FieldValue
    high: FieldValue
    low_open: bool = False
    high_open: bool = False
    op: str = ""  # "<" "<=" ">" ">=" "==" "!=" for the `name op value` form
    match: Callable[[str, Item], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.match = self._compile()

    def _compile(self) -> Callable[[str, Item], bool]:
        """`match(oid, item)`, specialised once per query: a float range over a float field
        (the common case) is two comparisons, no method calls."""
        name, test = self.name, self.test
        low, high = self.low, self.high
        if self.op or low.__class__ is not float or high.__class__ is not float:
            def general(oid: str, item: Item) -> bool:
                fields = item.fields
                value = fields.get(name) if fields else None
                return test(value if value is not None else where_value(oid, item, name))
            return general
        lo, hi = float(low), float(high)  # type: ignore[arg-type]
        lo_open, hi_open = self.low_open, self.high_open

        def numeric(oid: str, item: Item) -> bool:
            fields = item.fields
            value = fields.get(name) if fields else None
            if value is None:
                value = where_value(oid, item, name)
            if value.__class__ is not float:
                return test(value)
            if value < lo or (lo_open and value == lo):  # type: ignore[operator]
                return False  # (NaN passes, as Tile38's Less says neither is smaller)
            return not (value > hi or (hi_open and value == hi))  # type: ignore[operator]

        return numeric

    def test(self, value: FieldValue) -> bool:
        low, high = self.low, self.high
        if self.op:
            if self.op == "==":
                return equals(value, high)
            if self.op == "!=":
                return not equals(value, high)
            if self.op == "<":
                return less(value, high)
            if self.op == "<=":
                return not less(high, value)
            if self.op == ">":
                return less(high, value)
            return not less(value, high)
        if less(value, low) or (self.low_open and not less(low, value)):
            return False
        return not (less(high, value) or (self.high_open and not less(value, high)))



@dataclass(slots=True)
class WhereExpr:
    """`WHERE "expression"`, compiled once (store/expression.py); kept in `Search.wheres`."""

    text: str
    match: Predicate


def where_value(oid: str, item: Item, name: str) -> FieldValue:
    """The value a WHERE / WHEREIN names (Tile38's getFieldValue): `properties.*` in GeoJSON,
    `z`, a field, or a path into a JSON field."""
    if name == "z":
        return item.obj.z or 0.0
    if name.startswith("properties") and (len(name) == 10 or name[10] == "."):
        doc = item.obj.geojson if item.obj.kind == "geojson" else None
        if isinstance(doc, dict) and "properties" in doc:
            node = doc["properties"] if len(name) == 10 else path_get(doc["properties"], name[11:])
            if node is not MISSING:
                return json_field_value(node)
    return field_path(item.fields, name)


@dataclass(slots=True)
class Search:
    """The parsed options of one search command."""

    cmd: str
    cursor: int = 0
    limit: int | None = None
    matches: list[Callable[[str], Any]] = field(default_factory=list)
    wheres: list[Where | WhereExpr] = field(default_factory=list)
    whereins: list[tuple[str, list[FieldValue]]] = field(default_factory=list)
    nofields: bool = False
    distance: bool = False
    desc: bool = False
    output: str = "OBJECTS"
    precision: int = 0
    id_prefix: str = ""  # every id a MATCH admits starts with it (SCAN reads only that range)
    match_values: bool = False  # SEARCH: MATCH applies to the string value, not the id
    buffer: float = 0.0  # BUFFER meters: the area grown by that much
    clip: bool = False  # CLIP (INTERSECTS): objects shown clipped to the rectangle area
    sparse: int = 0  # SPARSE n: one object per quad of 4**n (no LIMIT, no CURSOR)

    @property
    def filtered(self) -> bool:
        return bool(self.matches or self.wheres or self.whereins)

    def accept(self, oid: str, item: Item) -> bool:
        if self.matches:
            subject = (item.obj.text or "") if self.match_values else oid
            if not any(m(subject) for m in self.matches):
                return False
        for w in self.wheres:
            if not w.match(oid, item):
                return False
        for name, values in self.whereins:
            value = where_value(oid, item, name)
            if not any(equals(value, v) for v in values):
                return False
        return True


# ---- parsing -----------------------------------------------------------------------------


def _bound(token: bytes) -> tuple[FieldValue, bool]:
    """A WHERE bound as Tile38 reads it: lowered, optionally `(`-prefixed for exclusive,
    then a field value (`-inf`/`+inf` are numbers, other text compares as a string)."""
    body = text(token).lower()
    exclusive = body.startswith("(")
    if exclusive:
        body = body[1:]
    return value_of(body), exclusive


def _is_expression(args: Args) -> bool:
    """Tile38's detectExprToken: `WHERE "expr"` when what follows the next token starts with
    a letter (an option, an output or an area: not a bound), or nothing follows."""
    rest = args.argv[args.pos:]
    if len(rest) == 1 or (len(rest) == 2 and not rest[1]):
        return True
    if len(rest) < 2:
        return False
    nxt = rest[1]
    return nxt[:1].isalpha() and nxt.lower() != b"inf"


def _where(args: Args, s: Search) -> None:
    if _is_expression(args):
        expr = args.next_str()
        s.wheres.append(WhereExpr(expr, compile_where(expr)))  # compiled once per query (and cached)
        return
    name = args.next_str()
    op_token = args.next()
    high_token = args.next()
    op = text(op_token)
    if op in ("<", "<=", ">", ">=", "==", "!="):
        s.wheres.append(Where(name, 0.0, _bound(high_token)[0], op=op))
        return
    low, low_open = _bound(op_token)
    high, high_open = _bound(high_token)
    s.wheres.append(Where(name, low, high, low_open, high_open))


def _glob(pattern: str) -> Callable[[str], Any]:
    return matcher(pattern)


def parse_options(args: Args, cmd: str, ctx: Ctx | None = None) -> Search:
    """Options and output, up to the area (or the end, for SCAN)."""
    s = Search(cmd)
    match_all = False
    patterns: list[str] = []
    while args.more():
        word = args.peek_upper()
        if word == "CURSOR":
            args.once(word)
            args.next()
            s.cursor = args.next_int(0)
        elif word == "LIMIT":
            args.once(word)
            args.next()
            s.limit = args.next_int(1)
        elif word == "MATCH":
            args.next()
            pattern = pattern_arg(ctx, args.next()) if ctx is not None else args.next_str()
            match_all = match_all or pattern == "*"
            s.matches.append(_glob(pattern))
            patterns.append(pattern)
        elif word == "WHERE":
            args.next()
            _where(args, s)
        elif word == "WHEREIN":
            args.next()
            name = args.next_str()
            n = args.next_int(0)
            s.whereins.append((name, [parse_field_value(args.next()) for _ in range(n)]))
        elif word in ("WHEREEVAL", "WHEREEVALSHA"):
            args.next()
            s.wheres.append(whereeval.parse(ctx, args, word == "WHEREEVALSHA"))  # type: ignore[arg-type]
        elif word == "BUFFER":
            args.once(word)
            args.next()
            token = args.next()
            s.buffer = parse_float(token, 0.0)
        elif word == "SPARSE":
            args.once(word)
            args.next()
            s.sparse = args.next_int(1, 16)
        elif word == "CLIP":
            args.once(word)
            args.next()
            s.clip = True
        elif word in ("NOFIELDS", "DISTANCE"):
            args.once(word)
            args.next()
            if word == "NOFIELDS":
                s.nofields = True
            else:
                s.distance = True
        elif word in ("ASC", "DESC"):
            if cmd not in ("SCAN", "SEARCH"):
                raise CommandError(f"{word} is not allowed for {cmd}")
            args.once("ASC/DESC")
            args.next()
            s.desc = word == "DESC"
        elif word in OUTPUTS and not (word == "BOUNDS" and cmd != "SCAN" and _numeric_next(args)):
            args.next()
            s.output = word
            if word == "HASHES":
                s.precision = args.next_int(1, 12)
            break
        else:
            break
    if s.sparse:
        if cmd in ("SCAN", "SEARCH"):
            raise CommandError(f"SPARSE is not allowed for {cmd}")
        if "LIMIT" in args.seen:
            raise CommandError("LIMIT is not allowed when SPARSE is specified")
        if "CURSOR" in args.seen:
            raise CommandError("CURSOR is not allowed when SPARSE is specified")
        s.limit = 1 << 62
    if match_all:  # MATCH patterns are OR-ed: one `*` admits every id
        s.matches.clear()
    else:
        s.id_prefix = literal_prefix(*patterns)
    if s.limit is None:
        s.limit = (1 << 62) if s.output == "COUNT" else 100
    return s


def _numeric_next(args: Args) -> bool:
    """`WITHIN key BOUNDS 33 ...` is the BOUNDS area; `WITHIN key BOUNDS CIRCLE ...` the output."""
    nxt = args.pos + 1
    if nxt >= len(args.argv):
        return False
    try:
        float(args.argv[nxt])
    except ValueError:
        return False
    return True


def _number(args: Args, low: float, high: float) -> float:
    """One coordinate or distance token within [low, high], else `invalid argument '<token>'`."""
    return parse_float(args.next(), low, high)


def _lat(args: Args) -> float:
    return _number(args, -90.0, 90.0)


def _lon(args: Args) -> float:
    return _number(args, -180.0, 180.0)


def _meters(args: Args) -> float:
    return _number(args, 0.0, math.inf)


def parse_area(ctx: Ctx, args: Args) -> query.Area:
    """The area of WITHIN / INTERSECTS."""
    if not args.more():
        raise CommandError("invalid number of arguments")
    word = args.peek_upper()
    token = args.next()
    if word == "BOUNDS":
        minlat, minlon, maxlat, maxlon = _lat(args), _lon(args), _lat(args), _lon(args)
        if minlat > maxlat or minlon > maxlon:
            raise invalid_argument(args.argv[args.pos - 1])
        return query.box_area(minlat, minlon, maxlat, maxlon)
    if word == "CIRCLE":
        return query.circle_area(_lat(args), _lon(args), _meters(args))
    if word == "SECTOR":
        return _sector(args)
    if word == "POINT":
        return query.point_area(_lat(args), _lon(args))
    if word == "OBJECT":
        return query.object_area(parse_geojson(args.next(), geojson_limits(ctx)))
    if word == "GET":
        key, oid = args.next_str(), args.next_str()
        col = ctx.db.get(key)
        if col is None:
            raise CommandError(KEY_NOT_FOUND)
        item = col.get(oid)
        if item is None or item.expired(ctx.now):
            raise CommandError(ID_NOT_FOUND)
        if not item.obj.is_spatial:
            raise CommandError("object is not spatial")
        return query.object_area(item.obj)
    if word == "HASH":
        return query.box_area(*geohash_bounds(args.next_str()))
    if word == "TILE":
        x, y, z = args.next_int(0), args.next_int(0), args.next_int(0, 30)
        if x >= 1 << z or y >= 1 << z:
            raise invalid_argument(args.argv[args.pos - 3 if x >= 1 << z else args.pos - 2])
        b = mercantile.bounds(x, y, z)
        return query.box_area(b.south, b.west, b.north, b.east)
    if word == "QUADKEY":
        qk = args.next()
        try:
            tile = mercantile.quadkey_to_tile(qk.decode("ascii"))
        except (mercantile.QuadKeyError, UnicodeDecodeError):
            raise invalid_argument(qk) from None
        b = mercantile.bounds(tile)
        return query.box_area(b.south, b.west, b.north, b.east)
    raise invalid_argument(token)


def _sector(args: Args) -> query.Area:
    """SECTOR lat lon meters bearing1 bearing2 (Tile38 1.30): a pie slice as a polygon area."""
    lat, lon, meters = _lat(args), _lon(args), _meters(args)
    tokens = [args.next(), args.next()]
    b1, b2 = (parse_float(t) for t in tokens)
    if b1 == b2:
        raise CommandError(f"equal bearings ({text(tokens[0])} == {text(tokens[1])}), use CIRCLE instead")
    area = query.shape_area(sector_polygon(lat, lon, meters, b1, b2))
    return area if area is not None else query.point_area(lat, lon)  # a zero radius


# ---- collecting ---------------------------------------------------------------------------

Row = tuple[str, Item | None, float | None]


def _collect(ctx: Ctx, col: Collection, batches: Iterable[Any], s: Search) -> tuple[list[Row], int, int]:
    """Walk ordered candidates: (rows, count, next cursor)."""
    return slices.run(_collect_steps(ctx, col, batches, s, False))


def _collect_steps(ctx: Ctx, col: Collection, batches: Iterable[Any], s: Search,
                   live: bool) -> slices.Steps:
    """`_collect` as steps of CHUNK candidates. `live`: other clients may write between steps,
    so every candidate is looked up again (it may be gone) and checked."""
    skip = pos = s.cursor
    limit = s.limit or 100
    counting = s.output == "COUNT"
    need_item = s.output != "IDS"
    check = live or s.filtered or ctx.db.may_have_expired(ctx.now)
    items = col.items
    now = ctx.now
    rows: list[Row] = []
    count = 0
    for batch in batches:
        n = len(batch)
        if skip >= n:
            skip -= n
            continue
        a, skip = skip, 0
        if not check:  # fast path: every candidate is a hit
            take = min(n - a, limit - count)
            pos += take
            count += take
            if not counting:
                ids = batch.ids(a, a + take)
                dists = batch.dists(a, a + take) if s.distance else None
                got = [items[i] for i in ids] if need_item else None
                rows.extend(zip(ids, got or repeat(None), dists or repeat(None), strict=False))
            if count >= limit:
                return rows, count, (0 if counting else pos)
            continue
        while a < n:
            b = min(n, a + CHUNK)
            ids = batch.ids(a, b)
            if not ids:  # a batch whose length was an upper bound ran out
                break
            dists = batch.dists(a, b) if s.distance else None
            for k, oid in enumerate(ids):
                pos += 1
                item = items.get(oid)
                if item is None or item.expired(now):
                    continue
                if not s.accept(oid, item):
                    continue
                count += 1
                if not counting:
                    rows.append((oid, item, dists[k] if dists is not None else None))
                if count >= limit:
                    return rows, count, (0 if counting else pos)
            a = b
            yield
    return rows, count, 0


# ---- replies ------------------------------------------------------------------------------


def _reply(ctx: Ctx, s: Search, rows: list[Row], count: int, cursor: int) -> Any:
    out, dist = s.output, s.distance and s.cmd == "NEARBY"
    if out == "COUNT":
        return {"count": count, "cursor": cursor} if ctx.json else count
    if ctx.json:
        return _reply_json(s, out, dist, rows, cursor)
    if out == "IDS" and not dist:
        return _resp_ids(cursor, [oid for oid, _i, _d in rows])
    row = _resp_row(s, dist)
    return [cursor, [row(r) for r in rows]]


def _resp_row(s: Search, dist: bool) -> Callable[[Row], Any]:
    """The RESP value of one row."""
    out, with_fields = s.output, not s.nofields
    if out == "IDS":
        if not dist:
            return lambda r: r[0]
        return lambda r: [r[0], float(r[2] or 0.0)]

    def row(r: Row) -> Any:
        oid, item, d = r
        assert item is not None
        obj = item.obj
        if out == "OBJECTS":
            entry: list[Any] = [oid, obj.json_text()]
        elif out == "POINTS":
            entry = [oid, point_resp(obj)]
        elif out == "BOUNDS":
            entry = [oid, bounds_resp(obj)]
        else:
            entry = [oid, encode_geohash(*obj.center(), s.precision)]
        if with_fields and item.fields:
            entry.append(fields_resp(item))
        if dist:
            entry.append(float(d or 0.0))
        return entry

    return row


def _resp_ids(cursor: int, ids: list[str]) -> Raw:
    """`[cursor, [id ...]]` encoded here in one pass: the hot path of NEARBY ... IDS."""
    head = b"*2\r\n:%d\r\n*%d\r\n" % (cursor, len(ids))
    text = "".join([f"${len(oid)}\r\n{oid}\r\n" for oid in ids])
    if text.isascii():  # then len(str) is the byte length
        return Raw(head + text.encode())
    return Raw(head + b"".join([b"$%d\r\n%s\r\n" % (len(e), e) for e in [raw(oid) for oid in ids]]))


def _reply_json(s: Search, out: str, dist: bool, rows: list[Row], cursor: int) -> dict[str, Any]:
    if out == "IDS" and not dist:
        return {"ids": [oid for oid, _i, _d in rows], "count": len(rows), "cursor": cursor}
    names = _field_names(s, rows)
    row = _json_row(s, dist, names)
    body: dict[str, Any] = {"fields": names} if names else {}
    body["ids" if out == "IDS" else JSON_KEYS[out]] = [row(r) for r in rows]
    body["count"] = len(rows)
    body["cursor"] = cursor
    return body


def _field_names(s: Search, rows: list[Row]) -> list[str]:
    """The field names of a JSON reply: every name some row has (none for IDS/NOFIELDS)."""
    if s.output == "IDS" or s.nofields:
        return []
    return sorted({name for _o, item, _d in rows if item and item.fields for name in item.fields})


def _field_names_steps(s: Search, rows: list[Row]) -> slices.Steps:
    """_field_names over a big result, slices.STEP rows a step (400k rows: ~30 ms in one go)."""
    if s.output == "IDS" or s.nofields:
        return []
    names: set[str] = set()
    for a in range(0, len(rows), slices.STEP):
        names.update(name for _o, item, _d in rows[a : a + slices.STEP] if item and item.fields
                     for name in item.fields)
        yield
    return sorted(names)


def _json_row(s: Search, dist: bool, names: list[str]) -> Callable[[Row], Any]:
    """The JSON value of one row."""
    out = s.output
    if out == "IDS":
        if not dist:
            return lambda r: r[0]
        return lambda r: {"id": r[0], "distance": num(r[2] or 0.0)}

    def row(r: Row) -> Any:
        oid, item, d = r
        assert item is not None
        obj = item.obj
        entry: dict[str, Any] = {"id": oid}
        if out == "OBJECTS":
            entry["object"] = object_json(obj)
        elif out == "POINTS":
            entry["point"] = point_json(obj)
        elif out == "BOUNDS":
            entry["bounds"] = bounds_json(obj)
        else:
            entry["hash"] = encode_geohash(*obj.center(), s.precision)
        if names:
            fields = item.fields or {}
            entry["fields"] = [field_out(fields.get(name, 0.0)) for name in names]
        if dist:
            entry["distance"] = num(d or 0.0)
        return entry

    return row


async def _sliced(ctx: Ctx, col: Collection, batches: Iterable[Any], s: Search,
                  center: tuple[float, float] | None = None) -> Any:
    """Collect and encode a big result in slices; other clients run between them. `center`:
    NEARBY's point, whose shown distances are Tile38's (as `_tile38_distances`), row by row."""
    rows, count, cursor = await slices.run_sliced(_collect_steps(ctx, col, batches, s, True))
    if s.output == "COUNT":
        return _reply(ctx, s, rows, count, cursor)
    dist = s.distance and s.cmd == "NEARBY"
    if not ctx.json:
        steps = slices.reply(ctx, rows, "", resp_head=(cursor,),
                             resp_value=_shown(_resp_row(s, dist), col, center if dist else None))
        return await slices.run_sliced(steps)
    names = await slices.run_sliced(_field_names_steps(s, rows))
    key = "ids" if s.output == "IDS" else JSON_KEYS[s.output]
    steps = slices.reply(ctx, rows, key, json_head={"fields": names} if names else None,
                         json_tail={"count": len(rows), "cursor": cursor},
                         json_value=_shown(_json_row(s, dist, names), col, center if dist else None))
    return await slices.run_sliced(steps)


def _shown(row: Callable[[Row], Any], col: Collection,
           center: tuple[float, float] | None) -> Callable[[Row], Any]:
    """`row`, with a point's distance recomputed as Tile38 prints it when `center` is given."""
    if center is None:
        return row
    lat, lon = center

    def shown(r: Row) -> Any:
        oid, item, d = r
        obj = (item or col.items[oid]).obj
        if obj.kind == "point":
            d = tile38_point_distance(lat, lon, obj.lat, obj.lon)
        return row((oid, item, d))

    return shown


def _big(ctx: Ctx, s: Search, candidates: int) -> bool:
    """Whether a search runs sliced: many candidates, and each must be looked at (a filter,
    expiry, many rows); a plain COUNT is a length and stays one go. CLIP runs in one go."""
    if s.clip:
        return False
    if not slices.sliced(ctx, candidates):
        return False
    if s.filtered or ctx.db.may_have_expired(ctx.now):
        return True
    return s.output != "COUNT" and slices.sliced(ctx, s.cursor + (s.limit or 100))


def _empty(ctx: Ctx, s: Search) -> Any:
    return _reply(ctx, s, [], 0, 0)


# ---- commands -----------------------------------------------------------------------------


@command("scan", min_args=2, flags=Flag.READ)
def cmd_scan(ctx: Ctx, argv: list[bytes]) -> Any:
    """SCAN key [CURSOR n] [LIMIT n] [MATCH glob] [WHERE ...] [WHEREIN ...] [WHEREEVAL[SHA] ...]
    [NOFIELDS] [ASC|DESC] [COUNT|IDS|OBJECTS|POINTS|BOUNDS|HASHES precision]"""
    args = Args(argv, 2)
    s = parse_options(args, "SCAN", ctx)
    args.done()
    col = ctx.db.get(text(argv[1]))
    if col is None:
        return _empty(ctx, s)
    lo, hi = col.prefix_bounds(s.id_prefix)
    if _big(ctx, s, hi - lo):
        return _sliced(ctx, col, [query.KeyWalk(col.items, s.desc, s.id_prefix, lo, hi)], s)
    rows, count, cursor = _collect(ctx, col, [query.KeysBatch(col.items, s.desc, lo, hi)], s)
    return _reply(ctx, s, rows, count, cursor)


@command("nearby", min_args=5, flags=Flag.READ)
def cmd_nearby(ctx: Ctx, argv: list[bytes]) -> Any:
    """NEARBY key [CURSOR n] [LIMIT n] [MATCH glob] [WHERE ...] [WHEREIN ...] [WHEREEVAL[SHA] ...]
    [NOFIELDS] [DISTANCE] [COUNT|IDS|OBJECTS|POINTS|BOUNDS|HASHES precision] POINT lat lon [meters]"""
    args = Args(argv, 2)
    s = parse_options(args, "NEARBY", ctx)
    if not args.more():
        raise CommandError("invalid number of arguments")
    if args.peek_upper() != "POINT":
        raise invalid_argument(args.argv[args.pos])
    args.next()
    lat, lon = _lat(args), _lon(args)
    meters = _meters(args) if args.more() else None
    args.done()
    if meters is not None and s.buffer:
        meters += s.buffer  # BUFFER grows the circle
    if s.sparse and meters is None:
        raise CommandError("cannot use SPARSE without a point distance")
    col = ctx.db.get(text(argv[1]))
    if col is None:
        return _empty(ctx, s)
    if s.sparse and meters is not None:
        ring = query.nearby(col.points, col.shapes, lat, lon, meters)
        minlat, minlon, maxlat, maxlon = circle_bbox(lat, lon, meters)
        return _sparse(ctx, col, s, ring.ids(0, len(ring)), (minlon, minlat, maxlon, maxlat), (lat, lon))
    if _big(ctx, s, len(col)):  # one ring, located and ordered in slices, then collected
        steps = query.nearby_steps(col.points, col.shapes, lat, lon,
                                   query.HALF_EARTH_M * 1.01 if meters is None else meters)
        return _nearby_sliced(ctx, col, s, steps, (lat, lon))
    want = len(col) if s.output == "COUNT" else s.cursor + (s.limit or 100)
    if meters is not None and want >= len(col):  # the whole circle anyway: one pass
        batches: Iterable[Any] = [query.nearby(col.points, col.shapes, lat, lon, meters)]
    else:
        batches = query.knn(col.points, col.shapes, lat, lon, want, meters)
    rows, count, cursor = _collect(ctx, col, batches, s)
    if s.distance:
        rows = _tile38_distances(col, rows, lat, lon)
    return _reply(ctx, s, rows, count, cursor)


async def _nearby_sliced(ctx: Ctx, col: Collection, s: Search, steps: slices.Steps,
                         center: tuple[float, float]) -> Any:
    """A big NEARBY: the ring in slices (query.nearby_steps: ordered by the distances the
    objects had when it began, ids copied then), then collected and encoded in slices."""
    ring = await slices.run_sliced(steps)
    return await _sliced(ctx, col, [ring], s, center)


def _tile38_distances(col: Collection, rows: list[Row], lat: float, lon: float) -> list[Row]:
    """The shown distances of point objects recomputed as Tile38 prints them (its formula and
    Go's trigonometry, store/geometry.py), so DISTANCE matches digit for digit; the index's
    vectorised distances only ordered the candidates."""
    out: list[Row] = []
    items = col.items
    for oid, item, d in rows:
        obj = (item or items[oid]).obj
        if obj.kind == "point":
            d = tile38_point_distance(lat, lon, obj.lat, obj.lon)
        out.append((oid, item, d))
    return out


RECTS = ("BOUNDS", "HASH", "TILE", "QUADKEY")


def _area_with_modifiers(ctx: Ctx, args: Args, s: Search) -> query.Area | None:
    """The area, then its CLIPBY rectangles and BUFFER (Tile38's order); None when nothing is
    left of it. CLIP needs a rectangle area."""
    word = args.peek_upper()
    if s.clip and word not in RECTS:
        raise invalid_argument(f"cannot clip with {word.lower()}")
    area: query.Area | None = parse_area(ctx, args)
    while args.more():
        if args.peek_upper() != "CLIPBY":
            raise ArityError(text(args.argv[0]))
        args.next()
        word = args.peek_upper()
        if word not in RECTS:
            raise invalid_argument(f"cannot clipby {word.lower()}")
        rect = parse_area(ctx, args)
        if area is not None:
            area = query.clipped_by(area, rect.minlat, rect.minlon, rect.maxlat, rect.maxlon)
    if area is not None and s.buffer:
        area = query.buffered(area, s.buffer)
    return area


def _sparse(ctx: Ctx, col: Collection, s: Search, ids: list[str],
            rect: tuple[float, float, float, float], center: tuple[float, float] | None) -> Any:
    """SPARSE: the hits that pass the filters, one per quad (store/query.py: sparse_pick);
    `center`: NEARBY's point, for DISTANCE."""
    items, now = col.items, ctx.now
    boxes = []
    for oid in id_sorted(ids):
        item = items.get(oid)
        if item is None or item.expired(now) or not s.accept(oid, item):
            continue
        obj = item.obj
        box = (obj.lon, obj.lat, obj.lon, obj.lat) if obj.kind == "point" else obj.bbox
        if box is not None:
            boxes.append((oid, box))
    rows: list[Row] = []
    for oid in query.sparse_pick(boxes, rect, s.sparse):
        item = items[oid]
        d = None
        if center is not None and s.distance:
            obj = item.obj
            lat, lon = obj.center() if obj.kind != "point" else (obj.lat, obj.lon)
            d = tile38_point_distance(center[0], center[1], lat, lon)
        rows.append((oid, item, d))
    count = len(rows)
    return _reply(ctx, s, [] if s.output == "COUNT" else rows, count, 0)


def _clip_rows(rows: list[Row], area: query.Area) -> list[Row]:
    """CLIP: each shown object cut to the rectangle area (points inside are unchanged)."""
    out: list[Row] = []
    for oid, item, d in rows:
        if item is not None and item.obj.kind == "geojson":
            shape = shapely.clip_by_rect(item.obj.shape(), area.minlon, area.minlat, area.maxlon, area.maxlat)
            if not shapely.covered_by(item.obj.shape(), area.geometry()):
                obj = parse_geojson(shape_json(shape))
                item = Item(obj, item.fields, item.expires_at)
        out.append((oid, item, d))
    return out


def _within_or_intersects(ctx: Ctx, argv: list[bytes], within: bool) -> Any:
    args = Args(argv, 2)
    s = parse_options(args, "WITHIN" if within else "INTERSECTS", ctx)
    if s.clip and within:
        raise invalid_argument("CLIP")
    area = _area_with_modifiers(ctx, args, s)
    col = ctx.db.get(text(argv[1]))
    if col is None or area is None:
        return _empty(ctx, s)
    if ctx.client is not None:  # a complex area, or many shapes, may take seconds
        done, located = slices.start(_locate_steps(col, area, within))
        if not done:  # the slots' ids copied now, before any other client runs
            return _located_later(ctx, s, col, area, within, located, col.points.names())
        points, shape_ids = located
    else:
        points = query.points_in(col.points, area)
        shape_ids = query.shapes_in(col.shapes, area, within, _obj_of(col))
    return _hits(ctx, s, col, area, within, points, shape_ids, None)


def _obj_of(col: Collection) -> Callable[[str], Any]:
    """An id's object as it is now (None when gone)."""
    items = col.items

    def obj_of(oid: str) -> Any:
        item = items.get(oid)
        return item.obj if item is not None else None

    return obj_of


def _locate_steps(col: Collection, area: query.Area, within: bool) -> slices.Steps:
    """(point slots, shape ids) of an area, in steps: points in a shape area ~2 ms of GEOS at a
    time (slices.points_in_steps; other areas in one vectorised pass), then the non-point
    objects ~2 ms of shapely at a time (query.shapes_in_steps)."""
    if area.kind == "shape":
        points = yield from slices.points_in_steps(col.points, area)
    else:
        points = query.points_in(col.points, area)
    shape_ids = yield from query.shapes_in_steps(col.shapes, area, within, _obj_of(col))
    return points, shape_ids


async def _located_later(ctx: Ctx, s: Search, col: Collection, area: query.Area, within: bool,
                         pending: Any, names: list[str | None]) -> Any:
    """The search of an area whose objects are being located in slices (others run between
    them): a point hit counts for the id its slot held when the search began, a shape for the
    object it held when its step tested it; either only if it still exists."""
    points, shape_ids = await pending
    result = _hits(ctx, s, col, area, within, points, shape_ids, names)
    return await result if asyncio.iscoroutine(result) else result


def _hits(ctx: Ctx, s: Search, col: Collection, area: query.Area, within: bool, points: Any,
          shape_ids: list[str], names: list[str | None] | None) -> Any:
    """WITHIN/INTERSECTS once its objects are located (`points`: slots, `shape_ids`). `names`:
    a copy of the slots' ids taken with them, when writes may have interleaved (then every row
    is checked)."""

    def point_ids() -> list[Any]:
        return [names[i] for i in points.tolist()] if names is not None else col.points.ids_of(points)

    if s.sparse:
        rect = (area.minlon, area.minlat, area.maxlon, area.maxlat)
        return _sparse(ctx, col, s, [i for i in point_ids() if i is not None] + shape_ids, rect, None)
    hits = len(points) + len(shape_ids)
    if _big(ctx, s, hits):  # walk the live ids in order; hits judged on a copy of the slots' ids
        walk = query.IdOrderHits(lambda: query.walk_ids(col.items, s.id_prefix), col.points, points,
                                 shape_ids, names if names is not None else col.points.names())
        return _sliced(ctx, col, [walk], s)
    ordered = s.output != "COUNT" or s.cursor or s.filtered  # CURSOR positions count in id order
    wanted = None if s.filtered else s.cursor + (s.limit or 100)
    lo, hi = col.prefix_bounds(s.id_prefix)  # only ids a MATCH can admit are candidates
    batches: list[Any]
    if not ordered and names is None:  # a plain COUNT: no names needed unless expiry must be checked
        batches = [query.Batch(col.points, points), query.Batch(shape_ids)]
    elif query.walk_is_cheaper(hits, hi - lo, wanted):
        batches = [query.IdOrderHits(lambda: col.ids_between(lo, hi), col.points, points, shape_ids,
                                     names)]
    else:
        ids = [i for i in point_ids() if i is not None] + shape_ids
        if s.id_prefix:
            ids = [oid for oid in ids if oid.startswith(s.id_prefix)]
        batches = [query.Batch(id_sorted(ids))]
    rows, count, cursor = slices.run(_collect_steps(ctx, col, batches, s, names is not None))
    if s.clip:
        rows = _clip_rows(rows, area)
    return _reply(ctx, s, rows, count, cursor)


@command("within", min_args=4, flags=Flag.READ)
def cmd_within(ctx: Ctx, argv: list[bytes]) -> Any:
    """WITHIN key [options] [output] (BOUNDS minlat minlon maxlat maxlon | CIRCLE lat lon meters
    | SECTOR lat lon meters bearing1 bearing2 | OBJECT geojson | GET key id | POINT lat lon
    | HASH geohash | TILE x y z | QUADKEY qk)"""
    return _within_or_intersects(ctx, argv, within=True)


@command("intersects", min_args=4, flags=Flag.READ)
def cmd_intersects(ctx: Ctx, argv: list[bytes]) -> Any:
    """INTERSECTS key [options] [output] (BOUNDS ... | CIRCLE ... | SECTOR ... | OBJECT ... | GET key id
    | POINT lat lon | HASH geohash | TILE x y z | QUADKEY qk)"""
    return _within_or_intersects(ctx, argv, within=False)


@command("search", min_args=2, flags=Flag.READ)
def cmd_search(ctx: Ctx, argv: list[bytes]) -> Any:
    """SEARCH key [CURSOR n] [LIMIT n] [MATCH glob] [WHERE ...] [WHEREIN ...] [WHEREEVAL[SHA] ...]
    [NOFIELDS] [ASC|DESC] [COUNT|IDS|OBJECTS] -- the STRING objects, ordered by value (then id);
    MATCH applies to the value."""
    args = Args(argv, 2)
    s = parse_options(args, "SEARCH", ctx)
    args.done()
    s.match_values = True
    col = ctx.db.get(text(argv[1]))
    if col is None or not col.num_strings:
        return _empty(ctx, s)
    strings = sorted((item.obj.text or "", oid) for oid, item in col.items.items()
                     if item.obj.kind == "string")
    ids = [oid for _value, oid in (reversed(strings) if s.desc else strings)]
    rows, count, cursor = _collect(ctx, col, [query.Batch(ids)], s)
    return _reply(ctx, s, rows, count, cursor)
