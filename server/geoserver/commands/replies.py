"""Shared pieces of reply bodies: how objects, points, bounds and fields look in JSON and RESP."""

from __future__ import annotations

import math
from typing import Any

import orjson

from geoserver.store.collection import Item
from geoserver.store.fields import FieldValue, field_json, field_text
from geoserver.store.geometry import GeoObject, num


def field_out(value: FieldValue) -> Any:
    return field_json(value)  # a JSON field value is embedded as JSON, not quoted


def object_json(obj: GeoObject) -> Any:
    """The object for a JSON reply: GeoJSON embedded verbatim, or the string."""
    if obj.kind == "string":
        return obj.text
    if obj.kind == "geojson" and obj.text is not None:
        return orjson.Fragment(obj.text)
    return obj.to_geojson()


def point_json(obj: GeoObject) -> dict[str, Any]:
    lat, lon = obj.center()
    out: dict[str, Any] = {"lat": num(lat), "lon": num(lon)}
    if obj.z is not None:
        out["z"] = num(obj.z)
    return out


def point_resp(obj: GeoObject) -> list[Any]:
    lat, lon = obj.center()
    out: list[Any] = [float(lat), float(lon)]
    if obj.z is not None:
        out.append(float(obj.z))
    return out


def bounds_of(obj: GeoObject) -> tuple[float, float, float, float]:
    """(minlat, minlon, maxlat, maxlon); a STRING has Tile38's empty rect at 0,0."""
    minlon, minlat, maxlon, maxlat = obj.bbox if obj.bbox is not None else (0.0, 0.0, 0.0, 0.0)
    return minlat, minlon, maxlat, maxlon


def bounds_json(obj: GeoObject) -> dict[str, Any]:
    minlat, minlon, maxlat, maxlon = bounds_of(obj)
    return {"sw": {"lat": num(minlat), "lon": num(minlon)}, "ne": {"lat": num(maxlat), "lon": num(maxlon)}}


def bounds_resp(obj: GeoObject) -> list[Any]:
    minlat, minlon, maxlat, maxlon = bounds_of(obj)
    return [[float(minlat), float(minlon)], [float(maxlat), float(maxlon)]]


def fields_resp(item: Item) -> list[Any]:
    out: list[Any] = []
    for name, value in item.field_list():
        out.append(name)
        out.append(value if isinstance(value, str) else
                   float(value) if math.isfinite(value) else field_text(value))  # +Inf, NaN as Tile38
    return out


def fields_json(item: Item) -> dict[str, Any]:
    return {name: field_out(value) for name, value in item.field_list()}
