"""WHERE expressions (`WHERE "speed > 10 && props.kind == 'truck'"`), as Tile38 evaluates them
with tidwall/expr: JavaScript-like values and coercions, string comparisons without case,
`=~` regex, `.match(glob)`, dotted paths into JSON fields and GeoJSON members, `id`, `type`
and `this`.

The text is parsed once by lark (LALR) and compiled into nested Python closures; a query
calls the resulting `Predicate` once per candidate. Nothing is `eval()`ed. Compiled
predicates are pure functions of the text and cached (LRU).

Semantics kept from tidwall/expr + Tile38's extender (internal/server/expr.go):
- a name is looked up in the object's GeoJSON members, then `id`, `type`, then the fields;
  a missing name is the number 0 (so `!optionalId` holds when the field is unset);
- `&&`, `||` and comparisons yield booleans; `!` binds looser than comparisons
  (`!a > 1` is `!(a > 1)`), as in tidwall/expr;
- an evaluation error (reading a member of undefined, an invalid regex, calling a
  non-function) makes the whole expression false for that object, as in Tile38.
A text that does not parse is refused when the query is parsed (Tile38 silently matches
nothing): see "Differences from Tile38" in docs/commands.md.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from collections.abc import Callable
from typing import Any

import orjson
from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedInput

from geoserver.errors import CommandError
from geoserver.store.fields import JSON, JSONValue, _lower

GRAMMAR = r"""
?start: ternary
?ternary: coalesce | coalesce "?" ternary ":" ternary -> cond
?coalesce: or_ | coalesce "??" or_ -> coal
?or_: and_ | or_ "||" and_ -> or_op
?and_: bor | and_ "&&" bor -> and_op
?bor: bxor | bor "|" bxor -> bitor
?bxor: band | bxor "^" band -> bitxor
?band: eq | band "&" eq -> bitand
?eq: neg | eq EQOP neg -> equality
?neg: comp | "!" neg -> not_op
?comp: sum | comp COMPOP sum -> compare
?sum: product | sum ADDOP product -> arith
?product: unary | product MULOP unary -> arith
?unary: postfix | "-" unary -> negate | "+" unary -> plus
?postfix: atom
    | postfix "." NAME -> member
    | postfix "?." NAME -> optmember
    | postfix "[" ternary "]" -> index
    | postfix "(" [args] ")" -> call
args: ternary ("," ternary)*
?atom: NUMBER -> number
    | STRING -> string
    | NAME -> name
    | "(" ternary ")"
    | "[" [args] "]" -> array
EQOP: "===" | "!==" | "==" | "!=" | "=~"
COMPOP: "<=" | ">=" | "<" | ">"
ADDOP: "+" | "-"
MULOP: "*" | "/" | "%"
NUMBER: /0[xX][0-9a-fA-F]+|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?/
STRING: /"(\\.|[^"\\])*"|'(\\.|[^'\\])*'/
NAME: /[A-Za-z_$][A-Za-z0-9_$]*/
%import common.WS
%ignore WS
"""

_PARSER = Lark(GRAMMAR, parser="lalr", maybe_placeholders=False)
MAX_LENGTH = 4096  # an expression longer than this is refused (parse and compile cost)


class _Undefined:
    __slots__ = ()

    def __repr__(self) -> str:
        return "undefined"


UNDEF = _Undefined()


class EvalError(Exception):
    """Evaluation failed for one object: the expression is false for it."""


class _Func:
    """A callable member (`value.match`): remembers what it was read from."""

    __slots__ = ("name", "target")

    def __init__(self, name: str, target: Any) -> None:
        self.name, self.target = name, target


class Env:
    """What an expression reads for one object: its id, item (obj, fields), lazily parsed."""

    __slots__ = ("_members", "item", "oid")

    def __init__(self, oid: str, item: Any) -> None:
        self.oid, self.item = oid, item
        self._members: dict[str, Any] | None = None

    def members(self) -> dict[str, Any]:
        """The GeoJSON object's own members (Tile38's Members(): properties and foreign
        members; a Feature always has `properties`)."""
        if self._members is None:
            obj = self.item.obj
            doc = obj.geojson if obj.kind == "geojson" else None
            out: dict[str, Any] = {}
            if isinstance(doc, dict):
                out = {k: v for k, v in doc.items() if k not in _STRUCTURAL}
                if doc.get("type") == "Feature" and not isinstance(out.get("properties"), dict):
                    out["properties"] = {}
            self._members = out
        return self._members


_STRUCTURAL = {"type", "coordinates", "geometry", "geometries", "features"}


def _type_of(env: Env) -> Any:
    obj = env.item.obj
    if obj.kind == "point":
        return "Point"
    if obj.kind == "geojson" and isinstance(obj.geojson, dict):
        return obj.geojson.get("type", UNDEF)
    return UNDEF


def _from_json(node: Any) -> Any:
    """A parsed JSON node as an expression value (numbers as floats)."""
    if isinstance(node, bool) or node is None or isinstance(node, (str, dict, list)):
        return node
    return float(node)


def _field_value(value: Any) -> Any:
    if value.__class__ is float:
        return value
    if isinstance(value, JSONValue):
        if value.kind == JSON:
            return orjson.loads(str(value))
        return {"true": True, "false": False}.get(value)
    return value


def lookup(env: Env, name: str) -> Any:
    """A root name (Tile38's objExpr)."""
    item = env.item
    fields = item.fields
    if item.obj.kind == "geojson":
        members = env.members()
        if name in members:
            return _from_json(members[name])
    elif fields and name != "id" and name != "type":  # points and strings have no members
        value = fields.get(name)
        if value is not None:
            return value if value.__class__ is float else _field_value(value)
    if name == "id":
        return env.oid
    if name == "type":
        return _type_of(env)
    if fields:
        value = fields.get(name)
        if value is not None:
            return _field_value(value)
    return 0.0


class _This:
    """The `this` object: its members are root names."""

    __slots__ = ()


THIS = _This()


def _member(env: Env, left: Any, name: str) -> Any:
    if left is THIS:
        return lookup(env, name)
    if isinstance(left, dict):
        return _from_json(left[name]) if name in left else UNDEF
    if isinstance(left, list):
        if name.isdigit() and int(name) < len(left):
            return _from_json(left[int(name)])
        if name == "length":
            return float(len(left))
        return UNDEF
    if left is UNDEF:
        raise EvalError(f"Cannot read properties of undefined (reading '{name}')")
    if name == "match":
        return _Func("match", left)
    return UNDEF


# ---- JavaScript-like coercions ----------------------------------------------------------------


def to_bool(v: Any) -> bool:
    if v is True or v is False:
        return v
    if v is UNDEF or v is None:
        return False
    if v.__class__ is float:
        return v == v and v != 0
    if isinstance(v, str):
        return v != ""
    return True


def to_number(v: Any) -> float:
    if v.__class__ is float:
        return v
    if v is True or v is False:
        return 1.0 if v else 0.0
    if v is None:
        return 0.0
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return 0.0
        try:
            return float(int(s, 16)) if s[:2].lower() == "0x" else float(s)
        except ValueError:
            return math.nan
    return math.nan


def to_string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is True or v is False:
        return "true" if v else "false"
    if v is None:
        return "null"
    if v is UNDEF:
        return "undefined"
    if v.__class__ is float:
        if v != v:
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return str(int(v)) if v.is_integer() and abs(v) < 1e21 else repr(v)
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return ""


def _is_obj(v: Any) -> bool:
    return isinstance(v, (dict, list)) or v is THIS


def _kind(v: Any) -> type:
    return bool if v is True or v is False else v.__class__


def lt(a: Any, b: Any) -> Any:
    if _is_obj(a) or _is_obj(b):
        return UNDEF
    if a.__class__ is float and b.__class__ is float:
        return a < b
    if isinstance(a, str) and isinstance(b, str):
        return _lower(a) < _lower(b)
    return to_number(a) < to_number(b)


def eq(a: Any, b: Any) -> Any:
    if _is_obj(a) or _is_obj(b):
        return UNDEF
    if a.__class__ is float and b.__class__ is float:
        return a == b
    ka, kb = _kind(a), _kind(b)
    if ka is kb or (isinstance(a, str) and isinstance(b, str)):
        if isinstance(a, str):
            return len(a) == len(b) and _lower(a) == _lower(b)
        if ka is bool:
            return a is b
        return True  # undefined == undefined, null == null
    return to_number(a) == to_number(b)


def _le(a: Any, b: Any) -> Any:
    t = lt(a, b)
    return t if t is True or t is UNDEF else eq(a, b)


def _ge(a: Any, b: Any) -> Any:
    t = lt(b, a)
    return t if t is True or t is UNDEF else eq(a, b)


def _strict_eq(a: Any, b: Any) -> Any:
    if _kind(a) is not _kind(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return eq(a, b)


def _not(v: Any) -> bool:
    return not to_bool(v)


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as err:
        raise EvalError(f"invalid regex pattern: {err}") from None


def regex_match(a: Any, b: Any) -> bool:
    return _regex(to_string(b)).search(to_string(a)) is not None


def add(a: Any, b: Any) -> Any:
    if _is_obj(a) or _is_obj(b):
        return UNDEF
    if a.__class__ is float and b.__class__ is float:
        return a + b
    if isinstance(a, str) or isinstance(b, str):
        return to_string(a) + to_string(b)
    return to_number(a) + to_number(b)


def _arith(op: str) -> Callable[[Any, Any], Any]:
    def div(x: float, y: float) -> float:
        if y == 0:
            return math.nan if x == 0 or x != x else math.copysign(math.inf, x) * math.copysign(1, y)
        return x / y

    def mod(x: float, y: float) -> float:
        return math.nan if y == 0 or math.isinf(x) else math.fmod(x, y)

    fn: Callable[[float, float], float] = {
        "-": lambda x, y: x - y, "*": lambda x, y: x * y, "/": div, "%": mod}[op]

    def apply(a: Any, b: Any) -> Any:
        if _is_obj(a) or _is_obj(b):
            return UNDEF
        return fn(to_number(a), to_number(b))

    return apply


def _to_int(v: Any) -> int:
    n = to_number(v)
    return 0 if n != n or math.isinf(n) else int(n)


_BITS: dict[str, Callable[[int, int], int]] = {
    "bitor": lambda x, y: x | y, "bitxor": lambda x, y: x ^ y, "bitand": lambda x, y: x & y}


def _glob_nocase(value: str, pattern: str) -> bool:
    """tidwall/match MatchNoCase: `*` any run, `?` any one character, without case."""
    regex = _glob_regex(pattern.lower())
    return regex.fullmatch(value.lower()) is not None


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        parts.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(parts), re.DOTALL)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0"}


def _unquote(token: str) -> str:
    body = token[1:-1]
    if "\\" not in body:
        return body

    def one(m: re.Match[str]) -> str:
        s = m.group(1)
        if s[0] == "u":
            return chr(int(s[1:], 16))
        return _ESCAPES.get(s, s)

    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", one, body, flags=re.DOTALL)


# ---- compile --------------------------------------------------------------------------------

Node = Callable[[Env], Any]
_CONSTANTS = {"true": True, "false": False, "null": None, "undefined": UNDEF,
              "NaN": math.nan, "Infinity": math.inf}


def _const(value: Any) -> Node:
    return lambda env: value


def _compile(t: Any) -> Node:
    if isinstance(t, Token):
        raise CommandError("invalid where expression")  # grammar guarantees trees here
    kind = t.data
    ch = t.children
    if kind == "number":
        text = str(ch[0])
        value = float(int(text, 16)) if text[:2].lower() == "0x" else float(text)
        return _const(value)
    if kind == "string":
        return _const(_unquote(str(ch[0])))
    if kind == "name":
        name = str(ch[0])
        if name in _CONSTANTS:
            return _const(_CONSTANTS[name])
        if name == "this":
            return _const(THIS)
        return lambda env: lookup(env, name)
    if kind in ("member", "optmember"):
        left, name = _compile(ch[0]), str(ch[1])
        if kind == "optmember":
            def opt(env: Env) -> Any:
                v = left(env)
                return UNDEF if v is UNDEF else _member(env, v, name)
            return opt
        return lambda env: _member(env, left(env), name)
    if kind == "index":
        left, key = _compile(ch[0]), _compile(ch[1])
        return lambda env: _member(env, left(env), to_string(key(env)))
    if kind == "call":
        return _compile_call(ch)
    if kind == "array":
        items = [_compile(c) for c in (ch[0].children if ch else [])]
        return lambda env: [f(env) for f in items]
    if kind == "cond":
        test, yes, no = (_compile(c) for c in ch)
        return lambda env: yes(env) if to_bool(test(env)) else no(env)
    if kind == "coal":
        a, b = _compile(ch[0]), _compile(ch[1])

        def coalesce(env: Env) -> Any:
            v = a(env)
            return b(env) if v is UNDEF or v is None else v
        return coalesce
    if kind == "or_op":
        a, b = _compile(ch[0]), _compile(ch[1])
        return lambda env: to_bool(a(env)) or to_bool(b(env))
    if kind == "and_op":
        a, b = _compile(ch[0]), _compile(ch[1])
        return lambda env: to_bool(a(env)) and to_bool(b(env))
    if kind in _BITS:
        a, b, bit = _compile(ch[0]), _compile(ch[1]), _BITS[kind]
        return lambda env: float(bit(_to_int(a(env)), _to_int(b(env))))
    if kind == "not_op":
        a = _compile(ch[0])
        return lambda env: not to_bool(a(env))
    if kind == "negate":
        a = _compile(ch[0])
        return lambda env: -to_number(a(env))
    if kind == "plus":
        a = _compile(ch[0])
        return lambda env: to_number(a(env))
    if kind in ("equality", "compare"):
        return _compile_compare(ch)
    if kind == "arith":
        a, op, b = _compile(ch[0]), str(ch[1]), _compile(ch[2])
        fn = add if op == "+" else _arith(op)
        return lambda env: fn(a(env), b(env))
    raise CommandError("invalid where expression")


def _compile_compare(ch: list[Any]) -> Node:
    a, op, b = _compile(ch[0]), str(ch[1]), _compile(ch[2])
    if op == "=~" and isinstance(ch[2], Tree) and ch[2].data == "string":
        pattern = _unquote(str(ch[2].children[0]))
        try:
            search = re.compile(pattern).search  # a literal pattern is compiled once
        except re.error:
            def never(env: Env) -> Any:
                raise EvalError("invalid regex pattern")
            return never
        return lambda env: search(to_string(a(env))) is not None
    fn: Callable[[Any, Any], Any] = {
        "==": eq, "!=": lambda x, y: _not(eq(x, y)), "===": _strict_eq,
        "!==": lambda x, y: _not(_strict_eq(x, y)), "=~": regex_match,
        "<": lt, ">": lambda x, y: lt(y, x), "<=": _le, ">=": _ge}[op]
    fast = _FLOAT_OPS.get(op)
    if fast is None:
        return lambda env: fn(a(env), b(env))
    right = ch[2]
    if isinstance(right, Tree) and right.data == "number":  # `speed > 10`: the common case
        const = b(None)  # type: ignore[arg-type]

        def against_number(env: Env) -> Any:
            x = a(env)
            return fast(x, const) if x.__class__ is float else fn(x, const)
        return against_number

    def compare(env: Env) -> Any:
        x, y = a(env), b(env)
        return fast(x, y) if x.__class__ is float and y.__class__ is float else fn(x, y)
    return compare


_FLOAT_OPS: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq, "!=": operator.ne, "===": operator.eq, "!==": operator.ne,
    "<": operator.lt, ">": operator.gt, "<=": operator.le, ">=": operator.ge}


def _compile_call(ch: list[Any]) -> Node:
    target = ch[0]
    args = [_compile(c) for c in (ch[1].children if len(ch) > 1 and ch[1] is not None else [])]
    fn = _compile(target)

    def call(env: Env) -> Any:
        f = fn(env)
        if not isinstance(f, _Func):
            raise EvalError("is not a function")
        if not args:
            return UNDEF
        return _glob_nocase(to_string(f.target), to_string(args[0](env)))

    return call


Predicate = Callable[[str, Any], bool]


@functools.lru_cache(maxsize=512)
def compile_where(text: str) -> Predicate:
    """The predicate of a WHERE expression: `pred(oid, item) -> bool`. Raises CommandError
    for a text that does not parse."""
    if len(text) > MAX_LENGTH:
        raise CommandError(f"invalid where expression: longer than {MAX_LENGTH} characters")
    try:
        tree = _PARSER.parse(text)
    except UnexpectedInput as err:
        raise CommandError(f"invalid where expression: syntax error at column {err.column}") from None
    except LarkError:
        raise CommandError("invalid where expression: syntax error") from None
    try:
        node = _compile(tree)
    except RecursionError:
        raise CommandError("invalid where expression: nested too deep") from None

    def predicate(oid: str, item: Any) -> bool:
        try:
            return to_bool(node(Env(oid, item)))
        except (EvalError, RecursionError, OverflowError):
            return False

    return predicate
