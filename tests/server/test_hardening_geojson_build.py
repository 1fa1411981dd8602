"""GeoJSON rings handed to shapely as arrays (store/geometry._as_arrays; issue 9: a
100k-vertex SET spent 40 of its 60 ms in shapely's per-coordinate conversion).

The geometry built must be exactly the one shapely builds from the lists (same WKB), and input
shapely refuses must be refused with the same text: a table of well-formed, odd and malformed
inputs, each through both paths. Pure: no server needed, the function is the whole change.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import shapely
from geoserver.errors import CommandError
from geoserver.store.geometry import GeoLimits, geojson_to_shape, parse_geojson
from shapely.geometry import shape as shapely_shape

SQUARE = [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]
HOLE = [[0.2, 0.2], [0.4, 0.2], [0.4, 0.4], [0.2, 0.2]]
CASES: list[dict[str, Any]] = [
    {"type": "Polygon", "coordinates": [SQUARE]},
    {"type": "Polygon", "coordinates": [SQUARE[:-1]]},  # not closed: shapely closes it
    {"type": "Polygon", "coordinates": [SQUARE, HOLE]},
    {"type": "Polygon", "coordinates": [[[0, 0, 5], [1, 0, 6], [1, 1, 7], [0, 0, 5]]]},  # z
    {"type": "Polygon", "coordinates": [[[0, 0], [1.5, 0], [1, 2], [0, 0]]]},  # ints and floats
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},  # bow tie
    {"type": "Polygon", "coordinates": [[["0", "0"], ["1", "0"], ["1", "1"], ["0", "0"]]]},
    {"type": "Polygon", "coordinates": [[[True, 0], [1, 0], [1, 1], [True, 0]]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1, 1], [0, 0]]]},  # 2-D and 3-D
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [0, 0]]]},  # too few positions
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, None], [0, 0]]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, [1]], [0, 0]]]},
    {"type": "Polygon", "coordinates": [SQUARE, []]},
    {"type": "Polygon", "coordinates": []},
    {"type": "Polygon", "coordinates": [[]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [2 ** 70, 0]]]},
    {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [float("nan"), 0], [0, 0]]]},
    {"type": "LineString", "coordinates": SQUARE},
    {"type": "LineString", "coordinates": [[0, 0]]},
    {"type": "LineString", "coordinates": [[0, 0, 1], [2, 2, 2]]},
    {"type": "LineString", "coordinates": [0, 0]},
    {"type": "MultiLineString", "coordinates": [SQUARE, [[5, 5], [6, 6]]]},
    {"type": "MultiLineString", "coordinates": [SQUARE, []]},
    {"type": "MultiPolygon", "coordinates": [[SQUARE, HOLE], [[[5, 5], [6, 5], [6, 6], [5, 5]]]]},
    {"type": "MultiPolygon", "coordinates": [[SQUARE], []]},
    {"type": "MultiPolygon", "coordinates": [[[[0, 0], [1, 0]]]]},
    {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [SQUARE, HOLE]}},
    {"type": "GeometryCollection", "geometries": [{"type": "LineString", "coordinates": SQUARE},
                                                  {"type": "Polygon", "coordinates": [SQUARE]}]},
]


def _slow(data: dict[str, Any]) -> Any:
    """What geojson_to_shape built before: shapely's shape() of the lists."""
    if data["type"] == "Feature":
        return _slow(data["geometry"])
    if data["type"] == "GeometryCollection":
        return shapely.GeometryCollection([_slow(g) for g in data["geometries"]])
    return shapely_shape(data)


@pytest.mark.parametrize("data", CASES, ids=lambda d: repr(d)[:70])
def test_arrays_build_what_lists_build(data: dict[str, Any]) -> None:
    try:
        want: Any = shapely.to_wkb(_slow(data), output_dimension=3)
    except Exception as exc:  # the refusal is what is compared
        want = f"invalid geojson: {exc}"
    try:
        got: Any = shapely.to_wkb(geojson_to_shape(data), output_dimension=3)
    except CommandError as exc:
        got = exc.message
    assert got == want


def test_big_polygon_round_trip() -> None:
    """A 100k-vertex ring: the same polygon, and parse_geojson keeps the text as given."""
    import math

    ring = [[9 * math.cos(i / 1000), 9 * math.sin(i / 997)] for i in range(100_000)]
    ring.append(ring[0])
    data = {"type": "Polygon", "coordinates": [ring]}
    text = orjson.dumps(data)
    obj = parse_geojson(text, GeoLimits(1_000_000, 1000, 10))
    assert shapely.to_wkb(obj.shape()) == shapely.to_wkb(shapely_shape(data))
    assert obj.json_text() == text.decode() and obj.geojson == data
