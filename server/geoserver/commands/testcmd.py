"""TEST: a spatial predicate between two areas without storing or searching anything
(Tile38 1.30, internal/server/test.go):

    TEST area1 (WITHIN | INTERSECTS [CLIP]) area2

Each side is an area expression: areas (POINT, CIRCLE, SECTOR, BOUNDS, HASH, QUADKEY, TILE,
OBJECT, GET key id) joined by AND / OR, negated by NOT, grouped with `(` `)`; AND binds tighter
than OR. The reply is 1 or 0 (JSON: `"result":true|false`); with CLIP (INTERSECTS only, a
single area on each side, the second a rectangle) a hit also returns area1 clipped to area2.
Geometry is shapely's: WITHIN is "covered by" (a point on the boundary is within), as for the
search commands.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import shapely

from geoserver.binary import text
from geoserver.commands.base import Args, Ctx, Flag, command
from geoserver.commands.search import parse_area
from geoserver.errors import ArityError, CommandError, invalid_argument
from geoserver.store.geometry import geojson_to_shape, shape_json

AREAS = {"POINT", "CIRCLE", "SECTOR", "BOUNDS", "HASH", "QUADKEY", "TILE", "OBJECT", "GET"}
CLIP_AREAS = {"BOUNDS", "HASH", "QUADKEY", "TILE", "POINT"}
Pred = Callable[[Any, Any], bool]


@dataclass(slots=True)
class AreaExpr:
    """An area (`geom`, with the GeoJSON text it was given as) or AND/OR of children."""

    negate: bool = False
    geom: Any = None
    text: str | None = None
    op: str = ""  # "and" | "or" for a group
    children: list[AreaExpr] = field(default_factory=list)

    def flipped(self) -> AreaExpr:
        return AreaExpr(not self.negate, self.geom, self.text, self.op, self.children)


# ---- parsing -----------------------------------------------------------------------------


class _Parser:
    """Recursive descent over the argument tokens: expr := term (OR term)*; term := factor
    (AND factor)*; factor := NOT factor | ( expr ) | area. Errors as Tile38's."""

    def __init__(self, ctx: Ctx, args: Args, clip: bool) -> None:
        self.ctx, self.args, self.clip = ctx, args, clip

    def peek(self) -> str:
        return self.args.peek_upper()

    def expr(self) -> AreaExpr:
        node = self.term()
        if self.peek() != "OR":
            return node
        group = AreaExpr(op="or", children=[node])
        while self.peek() == "OR":
            self.args.next()
            group.children.append(self.term())
        return group

    def term(self) -> AreaExpr:
        node = self.factor()
        if self.peek() != "AND":
            return node
        group = AreaExpr(op="and", children=[node])
        while self.peek() == "AND":
            self.args.next()
            group.children.append(self.factor())
        return group

    def factor(self) -> AreaExpr:
        word = self.peek()
        if not word:
            raise ArityError("test")
        if word == "NOT":
            self.args.next()
            return self.factor().flipped()
        if word in ("AND", "OR", ")"):
            raise invalid_argument(word.lower())
        if word == "(":
            self.args.next()
            node = self.expr()
            if self.peek() != ")":
                raise ArityError("test")
            self.args.next()
            return node
        if word not in AREAS:
            raise ArityError("test")
        if self.clip and word not in CLIP_AREAS:
            raise CommandError(f"invalid clip type '{text(self.args.argv[self.args.pos])}'")
        return self.area(word)

    def area(self, word: str) -> AreaExpr:
        args = self.args
        given = text(args.argv[args.pos + 1]) if word == "OBJECT" and args.pos + 1 < len(args.argv) else None
        area = parse_area(self.ctx, args)
        if word == "GET":
            col = self.ctx.db.get(text(args.argv[args.pos - 2]))
            item = col.get(text(args.argv[args.pos - 1])) if col is not None else None
            given = item.obj.json_text() if item is not None else None
        return AreaExpr(geom=area.geometry(), text=given)


def parse_test(ctx: Ctx, argv: list[bytes]) -> tuple[AreaExpr, str, bool, AreaExpr]:
    args = Args(argv, 1)
    area1 = _Parser(ctx, args, False).expr()
    if not args.more():
        raise ArityError("test")
    how = args.peek_upper()
    if how not in ("WITHIN", "INTERSECTS"):
        raise invalid_argument(args.argv[args.pos])
    args.next()
    clip = False
    if args.peek_upper() == "CLIP":
        if how != "INTERSECTS":
            raise invalid_argument(args.argv[args.pos])
        args.next()
        clip = True
    area2 = _Parser(ctx, args, clip).expr()
    negated = False
    while args.peek_upper() == "NOT":  # Tile38 takes a NOT anywhere, then wants an area
        args.next()
        negated = True
    if args.more() or negated:
        if args.peek_upper() in (")", "AND", "OR"):
            raise invalid_argument(args.peek_upper().lower())
        raise ArityError("test")
    if clip and (area1.geom is None or area2.geom is None):
        raise invalid_argument("clip")
    return area1, how, clip, area2


# ---- evaluation (Tile38's areaExpression semantics) ---------------------------------------


def _raw_obj(e: AreaExpr, obj: Any, pred: Pred) -> bool:
    """e (maybe a group) against one geometry, e's own negation not applied."""
    if e.geom is not None:
        return pred(e.geom, obj)
    if e.op == "and":
        return all(_obj(c, obj, pred) for c in e.children)
    if e.op == "or":
        return any(_obj(c, obj, pred) for c in e.children)
    return False


def _obj(e: AreaExpr, obj: Any, pred: Pred) -> bool:
    return _raw_obj(e, obj, pred) != e.negate


def _raw_expr(e: AreaExpr, other: AreaExpr, pred: Pred) -> bool:
    if other.negate:
        plain = AreaExpr(False, other.geom, other.text, other.op, other.children)
        return test_exprs(e.flipped(), plain, pred)
    if other.geom is not None:
        return _raw_obj(e, other.geom, pred)
    if other.op == "and":
        return all(_raw_expr(e, c, pred) for c in other.children)
    if other.op == "or":
        return any(_raw_expr(e, c, pred) for c in other.children)
    return False


def test_exprs(e: AreaExpr, other: AreaExpr, pred: Pred) -> bool:
    """Whether area expression `e` WITHIN / INTERSECTS (`pred`) expression `other`."""
    return _raw_expr(e, other, pred) != e.negate


def within(a: Any, b: Any) -> bool:
    return bool(shapely.covered_by(a, b))


def intersects(a: Any, b: Any) -> bool:
    return bool(shapely.intersects(a, b))


def clipped(area1: AreaExpr, area2: AreaExpr) -> str:
    """area1 clipped to the rectangle of area2: area1 as given when it lies inside."""
    minx, miny, maxx, maxy = area2.geom.bounds
    box = shapely.box(minx, miny, maxx, maxy)
    if area1.text is not None and shapely.covered_by(area1.geom, box):
        return area1.text
    if area1.text is not None:  # a Feature keeps its members, the geometry is clipped
        doc = orjson.loads(area1.text)
        if isinstance(doc, dict) and doc.get("type") == "Feature":
            shape = geojson_to_shape(doc.get("geometry") or {})
            doc["geometry"] = orjson.Fragment(shape_json(shapely.clip_by_rect(shape, minx, miny, maxx, maxy)))
            return orjson.dumps(doc).decode()
    return shape_json(shapely.clip_by_rect(area1.geom, minx, miny, maxx, maxy))


@command("test", min_args=1, flags=Flag.READ)
def cmd_test(ctx: Ctx, argv: list[bytes]) -> Any:
    """TEST area1 (WITHIN | INTERSECTS [CLIP]) area2 -- areas: POINT lat lon | CIRCLE lat lon
    meters | SECTOR lat lon meters b1 b2 | BOUNDS minlat minlon maxlat maxlon | HASH geohash
    | QUADKEY qk | TILE x y z | OBJECT geojson | GET key id, joined by AND / OR / NOT / ( )"""
    area1, how, clip, area2 = parse_test(ctx, argv)
    hit = test_exprs(area1, area2, within if how == "WITHIN" else intersects)
    out = clipped(area1, area2) if hit and clip else None
    if ctx.json:
        body: dict[str, Any] = {"result": hit}
        if out is not None:
            body["object"] = orjson.Fragment(out)
        return body
    if out is not None:
        return [int(hit), out]
    return int(hit)
