"""Field values: numbers are stored as floats, anything else as text. As in Tile38, a zero
value means "no field": it is never stored, and setting a field to 0 deletes it."""

from __future__ import annotations

import math

from geoserver.binary import text
from geoserver.errors import invalid_argument

RESERVED = {"z", "lat", "lon"}
FieldValue = float | str


def parse_field_value(raw: bytes) -> FieldValue:
    value_text = text(raw)
    try:
        value = float(value_text)
    except ValueError:
        return value_text
    if math.isnan(value) or math.isinf(value):
        return value_text
    return value


def check_field_name(raw: bytes) -> str:
    name = text(raw)
    if name.lower() in RESERVED or not name:
        raise invalid_argument(raw)
    return name


def is_zero(value: FieldValue) -> bool:
    return value == 0 or value == "" or value == "0"


def field_number(value: FieldValue | None) -> float:
    """Numeric view used by WHERE: text that is not a number compares as 0."""
    if value is None:
        return 0.0
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except ValueError:
        return 0.0
