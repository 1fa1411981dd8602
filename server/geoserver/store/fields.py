"""Field values as JSON values, as Tile38's internal/field: numbers, strings, booleans, null,
objects and arrays. As in Tile38, a zero number means "no field": it is never stored, and
setting a field to 0 deletes it.

Representation (numbers are the common case and stay plain floats, so query paths compare
them without unwrapping):

    number   float (NaN and +-Inf included: `FSET k id f inf`)
    string   str
    other    JSONValue, a str subclass holding the compact JSON text (`true`, `null`,
             `{"a":1}`): RESP replies show it as that text, JSON replies embed it.

Ordering between kinds is Tile38's: null < false < number < string < true < JSON, and strings
compare case-insensitively. Dotted names (`info.speed`) reach into JSON fields with the gjson
path subset in `path_get` (keys, array indexes, `#` for a length, `\\.` escapes).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Any

import orjson

from geoserver.binary import text
from geoserver.errors import invalid_argument

RESERVED = {"z", "lat", "lon"}


class JSONValue(str):
    """A field value that is JSON but neither number nor string: its compact JSON text."""

    __slots__ = ()

    @property
    def kind(self) -> int:
        return _KIND_OF_FIRST.get(self[:1], JSON)


FieldValue = float | str  # JSONValue is a str

NULL, FALSE, NUMBER, STRING, TRUE, JSON = range(6)  # Tile38's kind order
_KIND_OF_FIRST = {"n": NULL, "f": FALSE, "t": TRUE}
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SPECIAL = {"nan": math.nan, "inf": math.inf, "+inf": math.inf, "infinity": math.inf,
            "+infinity": math.inf, "-inf": -math.inf, "-infinity": -math.inf}
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[ \t\r\n]+')


def compact_json(doc: str) -> str:
    """`doc` (valid JSON) without the whitespace between tokens, numbers and key order kept
    as written (Tile38's pretty.Ugly)."""
    return _TOKENS.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else "", doc)


def value_of(data: str) -> FieldValue:
    """Tile38's field.ValueOf: a JSON number is a number, other JSON is kept as JSON (a JSON
    string is its text), NaN/Inf spellings are numbers, anything else is a string."""
    data = data.strip()
    if _NUMBER.fullmatch(data):
        return float(data)
    if data[:1] in ('{', '[', '"', "t", "f", "n"):
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = data
        else:
            if parsed is None or isinstance(parsed, bool):
                return JSONValue(data)
            if not isinstance(parsed, str):
                return JSONValue(compact_json(data))
        data = parsed
    if 3 <= len(data) <= 9:
        special = _SPECIAL.get(data.lower())
        if special is not None:
            return special
    return data


def parse_field_value(raw: bytes) -> FieldValue:
    return value_of(text(raw))


def check_field_name(raw: bytes) -> str:
    name = text(raw)
    if name.lower() in RESERVED or not name:
        raise invalid_argument(raw)
    return name


def is_zero(value: FieldValue) -> bool:
    return value.__class__ is float and value == 0


def kind_of(value: FieldValue) -> int:
    if value.__class__ is float:
        return NUMBER
    if isinstance(value, JSONValue):
        return value.kind
    return STRING


def _lower(s: str) -> str:
    """ASCII-only lowering, as Tile38's case-insensitive compare."""
    return s.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}


def less(a: FieldValue, b: FieldValue) -> bool:
    """Tile38's Value.Less: by kind, then numbers by value, strings without case."""
    if a.__class__ is float and b.__class__ is float:
        return a < b  # type: ignore[operator]
    ka, kb = kind_of(a), kind_of(b)
    if ka != kb:
        return ka < kb
    if ka == STRING:
        return _lower(a) < _lower(b)  # type: ignore[arg-type]
    return a < b  # type: ignore[operator]


def equals(a: FieldValue, b: FieldValue) -> bool:
    return not less(a, b) and not less(b, a)


def field_json(value: FieldValue) -> Any:
    """The value inside a JSON reply (Tile38's Value.JSON())."""
    if value.__class__ is float:
        if math.isnan(value):  # type: ignore[arg-type]
            return "NaN"
        if math.isinf(value):  # type: ignore[arg-type]
            return "+Inf" if value > 0 else "-Inf"  # type: ignore[operator]
        return int(value) if value.is_integer() and abs(value) < 1e16 else value  # type: ignore[union-attr]
    if isinstance(value, JSONValue):
        return orjson.Fragment(str(value))
    return value


def field_text(value: FieldValue) -> str:
    """The value in a RESP reply: the number as Go prints it, the string, the JSON text."""
    if value.__class__ is float:
        if math.isnan(value):  # type: ignore[arg-type]
            return "NaN"
        if math.isinf(value):  # type: ignore[arg-type]
            return "+Inf" if value > 0 else "-Inf"  # type: ignore[operator]
        if value.is_integer() and abs(value) < 1e16:  # type: ignore[union-attr]
            return str(int(value))
        return format(Decimal(repr(value)), "f")  # Go's 'f', -1: shortest digits, no exponent
    return str(value)


def field_arg(value: FieldValue) -> str:
    """A FIELD argument that parses back to `value` (AOF rewrite): a string that would read
    as a number or JSON is written as a JSON string."""
    out = field_text(value)
    if isinstance(value, str) and not isinstance(value, JSONValue) and value_of(out) != out:
        return orjson.dumps(value).decode()
    return out


def field_number(value: FieldValue | None) -> float:
    """Numeric view of a value: text that is not a number counts as 0."""
    if value is None:
        return 0.0
    if value.__class__ is float:
        return value  # type: ignore[return-value]
    try:
        return float(value)
    except ValueError:
        return 0.0


# ---- gjson / sjson paths (the subset Tile38 documents) ---------------------------------


def split_path(path: str) -> list[str]:
    """`a.b\\.c.0` -> ["a", "b.c", "0"]."""
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            cur.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


_MISSING = object()


def path_get(doc: Any, path: str) -> Any:
    """The value at `path` in a parsed JSON document, or `MISSING`."""
    node = doc
    for key in split_path(path):
        if isinstance(node, dict):
            node = node.get(key, _MISSING)
        elif isinstance(node, list):
            if key == "#":
                node = len(node)
            elif key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return _MISSING
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


MISSING = _MISSING


def path_set(doc: Any, path: str, value: Any) -> Any:
    """`doc` with `value` at `path` (sjson.Set): missing objects are created, `-1` appends to
    an array, an index past the end pads with nulls. Returns the new root."""
    keys = split_path(path)
    if any(k == "" for k in keys):
        raise ValueError("path cannot be empty")
    root = doc if isinstance(doc, (dict, list)) else {}
    node: Any = root
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        nxt_is_index = not last and (keys[i + 1] == "-1" or keys[i + 1].isdigit())
        fresh: Any = [] if nxt_is_index else {}
        if isinstance(node, list) and (key == "-1" or key.isdigit()):
            idx = len(node) if key == "-1" else int(key)
            while len(node) <= idx:
                node.append(None)
            if last:
                node[idx] = value
                return root
            if not isinstance(node[idx], (dict, list)):
                node[idx] = fresh
            node = node[idx]
        else:
            if isinstance(node, list):
                raise ValueError("array index expected")
            if last:
                node[key] = value
                return root
            if not isinstance(node.get(key), (dict, list)):
                node[key] = fresh
            node = node[key]
    return root


def path_delete(doc: Any, path: str) -> bool:
    """Delete the value at `path`; whether something was there."""
    keys = split_path(path)
    parent = path_get(doc, ".".join(k.replace(".", "\\.") for k in keys[:-1])) if len(keys) > 1 else doc
    key = keys[-1]
    if isinstance(parent, dict) and key in parent:
        del parent[key]
        return True
    if isinstance(parent, list):
        if key == "-1" and parent:
            parent.pop()
            return True
        if key.isdigit() and int(key) < len(parent):
            del parent[int(key)]
            return True
    return False


def json_field_value(node: Any) -> FieldValue:
    """A parsed JSON node as a field value (a path result: Tile38's ValueOf(res.Raw))."""
    if isinstance(node, bool) or node is None:
        return JSONValue("null" if node is None else ("true" if node else "false"))
    if isinstance(node, (int, float)):
        return float(node)
    if isinstance(node, str):
        return node
    return JSONValue(orjson.dumps(node).decode())


def field_path(fields: dict[str, FieldValue] | None, name: str) -> FieldValue:
    """The value a WHERE names: the field itself, or (`info.speed`) a path into a JSON field;
    0 when missing (Tile38's ZeroField)."""
    if not fields:
        return 0.0
    value = fields.get(name)
    if value is not None:
        return value
    dot = name.find(".")
    if dot < 0:
        return 0.0
    doc = fields.get(name[:dot])
    if not isinstance(doc, JSONValue) or doc.kind != JSON:
        return 0.0
    node = path_get(orjson.loads(str(doc)), name[dot + 1:])
    return 0.0 if node is _MISSING else json_field_value(node)
