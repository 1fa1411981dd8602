"""Geometry of stored objects: parsing inputs (POINT, BOUNDS, HASH, GeoJSON), validation with
clear errors, geodesic distance, and predicates through shapely.

Coordinates follow Tile38: commands take `lat lon`; GeoJSON is `[lon, lat]`.

GeoJSON from a client is measured against `GeoLimits` (vertices, parts, nesting) before
anything is built from it; AOF replay and the follower stream are not (what was acknowledged
loads), but every path refuses nesting deeper than MAX_DEPTH, so no input that one path
accepts can meet Python's recursion limit on another. Polygons are kept as given, valid or
not: validating or repairing a self-intersecting ring costs GEOS time superlinear in its
crossings (buffer(0) of 4,000 random vertices: 41 s), and Tile38 does neither. A point is
inside such a polygon by the even-odd rule; see docs/commands.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pygeohash
import shapely
from shapely.geometry import shape as shapely_shape

from geoserver.errors import CommandError, invalid_argument

MAX_DEPTH = 100  # deepest Feature/GeometryCollection nesting any path accepts
EARTH_RADIUS_M = 6371e3  # Tile38's geo.DistanceTo radius, so distances match its replies

GEOJSON_TYPES = {
    "Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
    "GeometryCollection", "Feature", "FeatureCollection",
}


@dataclass(frozen=True, slots=True)
class GeoLimits:
    """How big a client's GeoJSON may be (config geojson-max-*)."""

    vertices: int  # positions, all parts together
    parts: int  # rings, lines, polygons, and members of collections
    depth: int  # nested Feature / FeatureCollection / GeometryCollection levels


@dataclass(slots=True, eq=False)
class GeoObject:
    """A stored value: a point (fast path, no shapely), any GeoJSON geometry, or a string."""

    kind: str  # "point" | "geojson" | "string"
    lat: float = 0.0
    lon: float = 0.0
    z: float | None = None
    bbox: tuple[float, float, float, float] | None = None  # minlon, minlat, maxlon, maxlat
    geojson: dict[str, Any] | None = None
    text: str | None = None  # the string value, or the GeoJSON text as stored
    _shape: Any = field(default=None, repr=False)


    @property
    def is_spatial(self) -> bool:
        return self.kind != "string"

    def shape(self) -> Any:
        """The shapely geometry, built on first use and cached."""
        if self._shape is None:
            if self.kind == "point":
                self._shape = shapely.Point(self.lon, self.lat)
            elif self.kind == "geojson":
                self._shape = geojson_to_shape(self.geojson or {})
        return self._shape

    def to_geojson(self) -> dict[str, Any]:
        if self.kind == "point":
            coords = [num(self.lon), num(self.lat)]
            if self.z is not None:
                coords.append(num(self.z))
            return {"type": "Point", "coordinates": coords}
        return self.geojson or {}

    def json_text(self) -> str:
        """The object as Tile38 prints it: GeoJSON text, or the raw string."""
        if self.kind == "string":
            return self.text or ""
        if self.kind == "geojson" and self.text is not None:
            return self.text
        return orjson.dumps(self.to_geojson()).decode()

    def center(self) -> tuple[float, float]:
        """(lat, lon) used for distances and POINT output of non-point objects."""
        if self.kind == "point":
            return self.lat, self.lon
        if self.bbox is None:  # a STRING: Tile38's zero point (SCAN ... POINTS/HASHES)
            return 0.0, 0.0
        return (self.bbox[1] + self.bbox[3]) / 2, (self.bbox[0] + self.bbox[2]) / 2

    def weight(self) -> int:
        """In-memory bytes as Tile38 counts them for STATS in_memory_size: 16 for a point
        (two float64), 24 with z, the text's length for strings and other GeoJSON."""
        if self.kind == "point":
            return 16 if self.z is None else 24
        return len(self.text or "")


def num(value: float) -> float | int:
    """Integral floats print as integers (`33`, not `33.0`), as Go does."""
    return int(value) if float(value).is_integer() and abs(value) < 1e16 else value


def parse_float(token: bytes, low: float = -math.inf, high: float = math.inf) -> float:
    """A finite number within [low, high], else Tile38's `invalid argument '<token>'`."""
    try:
        value = float(token)
    except ValueError:
        raise invalid_argument(token) from None
    if not low <= value <= high or math.isinf(value):  # the comparison also refuses nan
        raise invalid_argument(token)
    return value


def check_lat_lon(lat: float, lon: float) -> None:
    if not -90.0 <= lat <= 90.0:
        raise CommandError(f"invalid latitude '{num(lat)}': must be within -90..90")
    if not -180.0 <= lon <= 180.0:
        raise CommandError(f"invalid longitude '{num(lon)}': must be within -180..180")


def make_point(lat: float, lon: float, z: float | None = None) -> GeoObject:
    check_lat_lon(lat, lon)
    return GeoObject("point", lat, lon, z, (lon, lat, lon, lat))


def make_bounds(minlat: float, minlon: float, maxlat: float, maxlon: float) -> GeoObject:
    check_lat_lon(minlat, minlon)
    check_lat_lon(maxlat, maxlon)
    if minlat > maxlat or minlon > maxlon:
        raise CommandError("invalid bounds: min must not exceed max")
    gj = box_geojson(minlat, minlon, maxlat, maxlon)
    return GeoObject("geojson", bbox=(minlon, minlat, maxlon, maxlat), geojson=gj)


def box_geojson(minlat: float, minlon: float, maxlat: float, maxlon: float) -> dict[str, Any]:
    """A lat/lon box as a GeoJSON Polygon (counter-clockwise ring, closed)."""
    ring = [[minlon, minlat], [maxlon, minlat], [maxlon, maxlat], [minlon, maxlat], [minlon, minlat]]
    return {"type": "Polygon", "coordinates": [[[num(x), num(y)] for x, y in ring]]}


def geohash_bounds(geohash: str) -> tuple[float, float, float, float]:
    """(minlat, minlon, maxlat, maxlon) of a geohash cell."""
    try:
        box = pygeohash.get_bounding_box(geohash)
    except Exception:
        raise CommandError(f"invalid geohash '{geohash}'") from None
    return box.min_lat, box.min_lon, box.max_lat, box.max_lon


def make_hash_point(geohash: str) -> GeoObject:
    if not geohash or not pygeohash.is_valid_geohash(geohash):
        raise CommandError(f"invalid geohash '{geohash}'")
    decoded = pygeohash.decode_exactly(geohash)
    return make_point(decoded.latitude, decoded.longitude)


def encode_geohash(lat: float, lon: float, precision: int) -> str:
    return pygeohash.encode(lat, lon, precision)


def make_string(value: str) -> GeoObject:
    return GeoObject("string", text=value)


def parse_geojson(text: bytes | str, limits: GeoLimits | None = None) -> GeoObject:
    """Validate GeoJSON text into an object; a Point becomes the fast point kind. `limits`
    are a client's (None: replay, only MAX_DEPTH)."""
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise CommandError("invalid data") from None  # Tile38's text
    if not isinstance(data, dict):
        raise CommandError("invalid data")
    if "type" not in data:
        raise CommandError("missing type")  # Tile38's text
    if data["type"] not in GEOJSON_TYPES:
        raise CommandError("invalid geojson: unknown 'type'")
    check_size(data, limits)
    if data["type"] == "Point":
        coords = _coords(data, 1)
        z = float(coords[2]) if len(coords) > 2 else None
        return make_point(float(coords[1]), float(coords[0]), z)
    geom = geojson_to_shape(data)
    if geom is None or geom.is_empty:
        bbox = (0.0, 0.0, 0.0, 0.0)
    else:
        minx, miny, maxx, maxy = geom.bounds
        check_lat_lon(miny, minx)
        check_lat_lon(maxy, maxx)
        bbox = (minx, miny, maxx, maxy)
    stored = text.decode() if isinstance(text, bytes) else text
    return GeoObject("geojson", bbox=bbox, geojson=data, text=stored, _shape=geom)


_CONTAINERS = {"Feature": "geometry", "FeatureCollection": "features", "GeometryCollection": "geometries"}


def check_size(data: dict[str, Any], limits: GeoLimits | None) -> None:
    """Refuse GeoJSON past the limits, in time proportional to its parts (not its vertices):
    positions are counted by list length. Malformed members are left to the parser."""
    depth_limit = MAX_DEPTH if limits is None else min(limits.depth, MAX_DEPTH)
    max_vertices = limits.vertices if limits is not None else math.inf
    max_parts = limits.parts if limits is not None else math.inf
    vertices = parts = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        member = _CONTAINERS.get(kind)  # type: ignore[arg-type]
        if member is not None:
            if depth >= depth_limit:
                raise CommandError(f"invalid geojson: nested too deep (limit {depth_limit})")
            children = node.get(member)
            if kind == "Feature":
                stack.append((children, depth + 1))
            elif isinstance(children, list):
                parts += len(children)
                if parts > max_parts:
                    raise _too_many_parts(max_parts)
                stack.extend((child, depth + 1) for child in children)
            continue
        coords = node.get("coordinates")
        if not isinstance(coords, list):
            continue
        if kind == "Point":
            vertices += 1
        elif kind in ("MultiPoint", "LineString"):
            vertices += len(coords)
        elif kind in ("MultiLineString", "Polygon"):
            parts += len(coords)
            if parts > max_parts:
                raise _too_many_parts(max_parts)
            vertices += sum(len(line) for line in coords if isinstance(line, list))
        elif kind == "MultiPolygon":
            for polygon in coords:
                if isinstance(polygon, list):
                    parts += 1 + len(polygon)
                    if parts > max_parts:
                        raise _too_many_parts(max_parts)
                    vertices += sum(len(ring) for ring in polygon if isinstance(ring, list))
        if vertices > max_vertices:
            raise CommandError(f"invalid geojson: too many vertices (limit {max_vertices})")


def _too_many_parts(limit: float) -> CommandError:
    return CommandError(f"invalid geojson: too many rings, lines, polygons or members (limit {limit})")


def _coords(obj: dict[str, Any], depth: int) -> Any:
    coords = obj.get("coordinates")
    if not isinstance(coords, list):
        raise CommandError("invalid geojson: missing 'coordinates'")
    if depth == 1 and (len(coords) < 2 or not all(isinstance(c, int | float) for c in coords)):
        raise CommandError("invalid geojson: a position needs two or three numbers")
    return coords


def geojson_to_shape(data: dict[str, Any]) -> Any:
    """GeoJSON (incl. Feature/FeatureCollection) to one shapely geometry, validating it."""
    kind = data.get("type")
    try:
        if kind == "Feature":
            geometry = data.get("geometry")
            if not isinstance(geometry, dict):
                raise CommandError("invalid geojson: Feature without a geometry")
            return geojson_to_shape(geometry)
        if kind == "FeatureCollection":
            features = data.get("features")
            if not isinstance(features, list):
                raise CommandError("invalid geojson: FeatureCollection without 'features'")
            return shapely.GeometryCollection([geojson_to_shape(f) for f in features])
        if kind == "GeometryCollection":
            parts = data.get("geometries")
            if not isinstance(parts, list):
                raise CommandError("invalid geojson: GeometryCollection without 'geometries'")
            return shapely.GeometryCollection([geojson_to_shape(g) for g in parts])
        _coords(data, 1 if kind == "Point" else 0)
        geom = shapely_shape(_as_arrays(data))
    except CommandError:
        raise
    except Exception as exc:  # shapely/GEOS reject malformed coordinate arrays in many ways
        raise CommandError(f"invalid geojson: {exc}") from None
    return geom  # kept as given, even if self-intersecting (module docstring)


# List levels above the coordinate arrays (one array of positions per ring or line).
_RING_LEVELS = {"LineString": 0, "Polygon": 1, "MultiLineString": 1, "MultiPolygon": 2}


def _as_arrays(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with each ring or line as a float array, for shapely's constructors: given lists
    they convert coordinate by coordinate in Python (~0.4 µs each, 40 of the 60 ms of a
    100k-vertex SET); given an array they take it whole. Only rings that numpy reads as a 2-D
    int or float array are converted (what shapely would make of them too: the same floats);
    anything else (ragged, bool, text, None, empty) leaves `data` as it is, for shapely to
    build or refuse as before (tests/server/test_hardening_geojson_build.py)."""
    levels = _RING_LEVELS.get(data.get("type"))  # type: ignore[arg-type]
    if levels is None:
        return data
    try:
        coords = _rings_as_arrays(data["coordinates"], levels)
    except (ValueError, TypeError, OverflowError):
        return data
    return {"type": data["type"], "coordinates": coords}


def _rings_as_arrays(node: Any, levels: int) -> Any:
    if levels:
        if not isinstance(node, list) or not node:
            raise ValueError("not a list of rings")
        return [_rings_as_arrays(child, levels - 1) for child in node]
    arr = np.asarray(node)
    if arr.ndim != 2 or not len(arr) or arr.dtype.kind not in "if":
        raise ValueError("not a 2-D numeric array")
    return arr.astype(np.float64, copy=False)


def haversine_many(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    """Distances in meters from one point to many, vectorised."""
    p1 = math.radians(lat)
    p2 = np.radians(lats)
    dp = p2 - p1
    dl = np.radians(lons - lon)
    a = np.sin(dp / 2) ** 2 + math.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * np.arcsin(np.minimum(1.0, np.sqrt(a)))


def circle_bbox(lat: float, lon: float, meters: float) -> tuple[float, float, float, float]:
    """(minlat, minlon, maxlat, maxlon) enclosing a circle; spans the globe near the poles."""
    dlat = math.degrees(meters / EARTH_RADIUS_M)
    minlat, maxlat = max(-90.0, lat - dlat), min(90.0, lat + dlat)
    if minlat <= -90.0 or maxlat >= 90.0:
        return minlat, -180.0, maxlat, 180.0
    coslat = min(math.cos(math.radians(minlat)), math.cos(math.radians(maxlat)))
    dlon = math.degrees(meters / (EARTH_RADIUS_M * max(coslat, 1e-12)))
    if dlon >= 180.0:
        return minlat, -180.0, maxlat, 180.0
    return minlat, lon - dlon, maxlat, lon + dlon


def circle_polygon(lat: float, lon: float, meters: float, steps: int = 64) -> Any:
    """A geodesic circle as a polygon, for predicates against non-point objects."""
    d = meters / EARTH_RADIUS_M
    p1, l1 = math.radians(lat), math.radians(lon)
    ring = []
    for i in range(steps):
        brng = 2 * math.pi * i / steps
        p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(brng))
        l2 = l1 + math.atan2(
            math.sin(brng) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
        )
        ring.append((math.degrees(l2), math.degrees(p2)))
    return shapely.Polygon(ring)


def destination(lat: float, lon: float, meters: float, bearing: float) -> tuple[float, float]:
    """(lon, lat) reached from (lat, lon) after `meters` on the great circle at `bearing`
    degrees (0 north, 90 east)."""
    d = meters / EARTH_RADIUS_M
    p1, l1, brng = math.radians(lat), math.radians(lon), math.radians(bearing)
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(brng))
    l2 = l1 + math.atan2(math.sin(brng) * math.sin(d) * math.cos(p1),
                         math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(l2), math.degrees(p2)


def sector_polygon(lat: float, lon: float, meters: float, bearing1: float, bearing2: float,
                   steps: int = 64) -> Any:
    """SECTOR: the pie slice from the center, clockwise from bearing1 to bearing2 (as Tile38's
    sectr: bearings in degrees, 0 north, 90 east)."""
    b1, b2 = bearing1 % 360, bearing2 % 360
    span = (b2 - b1) % 360 or 360.0
    n = max(2, int(steps * span / 360) + 1)
    arc = [destination(lat, lon, meters, b1 + span * i / (n - 1)) for i in range(n)]
    return shapely.Polygon([(lon, lat), *arc, (lon, lat)])


# ---- NEARBY ... DISTANCE digit for digit as Tile38 prints them ------------------------------
# Tile38 computes point distances with Go's math.Sin/Cos/Asin (Cephes polynomials, not the C
# library's), so the last printed digits differ from libm's. These are the same algorithms.

_M4PI = 1.273239544735162542821171882678754627704620361328125  # 4/Pi as Go folds it
_PI4A, _PI4B, _PI4C = 7.85398125648498535156e-1, 3.77489470793079817668e-8, 2.69515142907905952645e-15
_SIN = (1.58962301576546568060e-10, -2.50507477628578072866e-8, 2.75573136213857245213e-6,
        -1.98412698295895385996e-4, 8.33333333332211858878e-3, -1.66666666666666307295e-1)
_COS = (-1.13585365213876817300e-11, 2.08757008419747316778e-9, -2.75573141792967388112e-7,
        2.48015872888517045348e-5, -1.38888888888730564116e-3, 4.16666666666665929218e-2)


def _octant(x: float) -> tuple[int, float]:
    j = int(x * _M4PI)
    y = float(j)
    if j & 1:
        j += 1
        y += 1
    return j & 7, ((x - y * _PI4A) - y * _PI4B) - y * _PI4C


def _sin_poly(z: float, zz: float) -> float:
    s = _SIN
    return z + z * zz * (((((s[0] * zz + s[1]) * zz + s[2]) * zz + s[3]) * zz + s[4]) * zz + s[5])


def _cos_poly(zz: float) -> float:
    c = _COS
    poly = (((((c[0] * zz + c[1]) * zz + c[2]) * zz + c[3]) * zz + c[4]) * zz + c[5])
    return 1.0 - 0.5 * zz + zz * zz * poly


def go_sin(x: float) -> float:
    """Go's math.Sin for |x| < 2**29 (every angle a distance needs)."""
    if x == 0 or x != x:
        return x
    sign = x < 0
    j, z = _octant(-x if sign else x)
    if j > 3:
        sign, j = not sign, j - 4
    zz = z * z
    y = _cos_poly(zz) if j in (1, 2) else _sin_poly(z, zz)
    return -y if sign else y


def go_cos(x: float) -> float:
    """Go's math.Cos for |x| < 2**29."""
    j, z = _octant(abs(x))
    sign = False
    if j > 3:
        j, sign = j - 4, True
    if j > 1:
        sign = not sign
    zz = z * z
    y = _sin_poly(z, zz) if j in (1, 2) else _cos_poly(zz)
    return -y if sign else y


def _xatan(x: float) -> float:
    z = x * x
    z = z * ((((-8.750608600031904122785e-01 * z + -1.615753718733365076637e+01) * z
                + -7.500855792314704667340e+01) * z + -1.228866684490136173410e+02) * z
             + -6.485021904942025371773e+01) / (((((z + 2.485846490142306297962e+01) * z
                                                   + 1.650270098316988542046e+02) * z
                                                  + 4.328810604912902668951e+02) * z
                                                 + 4.853903996359136964868e+02) * z
                                                + 1.945506571482613964425e+02)
    return x * z + x


def _satan(x: float) -> float:
    more = 6.123233995736765886130e-17
    if x <= 0.66:
        return _xatan(x)
    if x > 2.41421356237309504880:
        return math.pi / 2 - _xatan(1 / x) + more
    return math.pi / 4 + _xatan((x - 1) / (x + 1)) + 0.5 * more


def go_asin(x: float) -> float:
    """Go's math.Asin."""
    if x == 0:
        return x
    sign = x < 0
    if sign:
        x = -x
    if x > 1:
        return math.nan
    temp = math.sqrt(1 - x * x)
    temp = math.pi / 2 - _satan(temp / x) if x > 0.7 else _satan(x / temp)
    return -temp if sign else temp


def tile38_point_distance(qlat: float, qlon: float, lat: float, lon: float) -> float:
    """Meters from the query point to a point object, as Tile38's NEARBY computes them (the
    point case of its geodetic point-to-rect distance, Go's trigonometry)."""
    pa, la = lat * math.pi / 180, lon * math.pi / 180
    pb, lb = qlat * math.pi / 180, qlon * math.pi / 180
    if pa == pb and la == lb:
        return 0.0
    sp, sl = go_sin((pa - pb) / 2), go_sin((la - lb) / 2)
    return 6371e3 * (2 * go_asin(math.sqrt(sp * sp + sl * sl * go_cos(pa) * go_cos(pb))))


def shape_json(shape: Any) -> str:
    """A shapely geometry as GeoJSON text, numbers as Go prints them (`1`, not `1.0`)."""
    def go(node: Any) -> Any:
        if isinstance(node, float):
            return num(node)
        if isinstance(node, (list, tuple)):
            return [go(x) for x in node]
        if isinstance(node, dict):
            return {k: go(v) for k, v in node.items()}
        return node

    return orjson.dumps(go(shapely.geometry.mapping(shape))).decode()
