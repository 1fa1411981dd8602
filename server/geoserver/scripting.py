"""Lua scripts as Tile38 runs them (internal/server/scripts.go), on lupa's bundled Lua 5.1 (the
dialect of Tile38's gopher-lua).

The interface is small: `ScriptEngine.load/exists/flush`, and `run(script, keys, argv, call,
deadline)` where `call(argv) -> (ok, value)` runs one command through the server's command table
(commands/scripts.py). Values cross as Tile38 converts them: command results are RESP values
(status -> {ok=...}, error -> {err=...}, nil -> false), and the script's return value goes back
the same way (`to_resp`) or as JSON (`to_json`).

Sandbox: every script runs in its own environment holding only Tile38's set (tonumber,
tostring, table, math, string, os.clock/difftime/time, json, tile38) plus pure helpers (type,
pairs, ipairs, next, select, error, assert, unpack). io, os.execute/getenv, package, require,
debug, load/loadstring/loadfile/dofile, coroutine, pcall/xpcall, getmetatable/setmetatable and
lupa's `python` bridge are unreachable; new globals are refused; Python attributes cannot be
read. A count hook (every HOOK_EVERY instructions) ends a script past its deadline or the time
limit, and the runtime's allocator has a memory ceiling, so a script cannot hold the loop or
the host's memory. pcall and coroutines are left out because either would let a script catch
or escape that hook.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import Any

import lupa.lua51 as lua51
import orjson

from geoserver.protocol.resp import Simple, format_float

HOOK_EVERY = 1000  # instructions between deadline checks
MAX_FLAT_FIELDS = 1000  # WHEREEVAL FIELDS passed as arguments up to this many names and values
DEFAULT_MEMORY = 64 << 20  # bytes one runtime may allocate
SHA_NOT_FOUND = "sha not found"
TIMEOUT = "timeout"

CallResult = tuple[bool, Any]  # (True, RESP-shaped value) or (False, error text)


class ScriptError(Exception):
    """A script that does not compile, fails, or runs out of time or memory; `message` is the
    error reply text."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ScriptReplyError(Exception):
    """The script returned an error reply ({err=...} or tile38.error_reply)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def sha1hex(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _deny(obj: Any, name: Any, setting: bool) -> Any:
    raise AttributeError("Python attributes are not reachable from scripts")


_SETUP = r"""
local sethook, gethook = debug.sethook, debug.gethook
local setfenv, loadstring, pcall = setfenv, loadstring, pcall
local tostring, select, error, type = tostring, select, error, type
local rawset, next = rawset, next
local function copy(t) local c = {} for k, v in pairs(t) do c[k] = v end return c end
local base = {
  tonumber = tonumber, tostring = tostring, type = type, pairs = pairs, ipairs = ipairs,
  next = next, select = select, error = error, assert = assert, unpack = unpack,
  _VERSION = _VERSION,
}
local libs = {table = table, math = math, string = string}
local osx = {clock = os.clock, difftime = os.difftime, time = os.time}

local engine = {}
local pycall, pyexpired, pyjson_encode, pyjson_decode

function engine.init(call, expired, json_encode, json_decode)
  pycall, pyexpired, pyjson_encode, pyjson_decode = call, expired, json_encode, json_decode
end

local function args(...)
  local n, out = select("#", ...), {}
  for i = 1, n do out[i] = tostring((select(i, ...))) end
  return out
end

local tile38 = {
  call = function(...)
    local ok, v = pycall(args(...))
    if not ok then error("ERR " .. v, 2) end
    return v
  end,
  pcall = function(...)
    local ok, v = pycall(args(...))
    if not ok then return {err = v} end
    return v
  end,
  error_reply = function(s) return {err = tostring(s)} end,
  status_reply = function(s) return {ok = tostring(s)} end,
  sha1hex = nil,  -- set from Python
  distance_to = nil,
}
engine.tile38 = tile38
local json = {
  encode = function(v) return pyjson_encode(v) end,
  decode = function(s) return pyjson_decode(tostring(s)) end,
}

function engine.compile(source, name)
  local fn, err = loadstring(source, name)
  if not fn then return false, err end
  return fn, ""
end

local function locked_env(keys, argv)
  local env = copy(base)
  for name, lib in pairs(libs) do env[name] = copy(lib) end
  env.string.dump = nil  -- bytecode has no use without loadstring
  env.os = copy(osx)
  env.tile38 = copy(tile38)
  env.json = copy(json)
  env.KEYS, env.ARGV = keys, argv
  return setmetatable(env, {
    __newindex = function(_, name)
      error("attempt to create global variable '" .. tostring(name) .. "'", 2)
    end,
  })
end

local function hook()
  if pyexpired() then error("__geoserver_deadline__", 0) end
end

function engine.run(fn, keys, argv)
  setfenv(fn, locked_env(keys, argv))
  sethook(hook, "", HOOK_EVERY)
  local ok, res = pcall(fn)
  sethook()
  return ok, res
end

-- WHEREEVAL: one environment per query (ARGV); ID, FIELDS and PROPERTIES set per object.
-- Returns 1, match (Tile38's truthiness) / 0, the Lua error / 2, an unsupported type.
-- FIELDS come as name, value, name, value ... (cheaper than a table made from Python), or
-- as one table when there are too many for the Lua stack.
function engine.where(fn, argv)
  local env = locked_env({}, argv)
  return function(id, props, ...)
    local fields, flat = ..., {...}
    if type(fields) ~= "table" then
      fields = {}
      for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
    end
    rawset(env, "ID", id); rawset(env, "FIELDS", fields); rawset(env, "PROPERTIES", props or {})
    setfenv(fn, env)  -- the compiled function is shared (cache by sha): set its env each time
    sethook(hook, "", HOOK_EVERY)
    local ok, res = pcall(fn)
    sethook()
    rawset(env, "ID", nil); rawset(env, "FIELDS", nil); rawset(env, "PROPERTIES", nil)
    if not ok then return 0, res end
    local t = type(res)
    if t == "nil" then return 1, false end
    if t == "boolean" then return 1, res end
    if t == "number" then return 1, res ~= 0 end
    if t == "string" then return 1, res ~= "" end
    if t == "table" then return 1, next(res) ~= nil end
    return 2, t
  end
end

return engine
""".replace("HOOK_EVERY", str(HOOK_EVERY))


class ScriptEngine:
    """One sandboxed Lua runtime and the compiled scripts, by sha1 (SCRIPT LOAD, EVAL)."""

    def __init__(self, max_memory: int = DEFAULT_MEMORY, time_limit: float = 5.0) -> None:
        self.lua = lua51.LuaRuntime(encoding=None, register_eval=False, register_builtins=False,
                                    attribute_filter=_deny, unpack_returned_tuples=True,
                                    max_memory=max_memory)
        self.time_limit = time_limit
        self._engine = self.lua.execute(_SETUP)
        self._scripts: dict[str, Any] = {}
        self._deadline = math.inf
        self._limit_at = math.inf
        self._call: Callable[[list[bytes]], CallResult] | None = None
        self._engine[b"init"](self._pycall, self._expired, self._json_encode, self._json_decode)
        tile38 = self._engine[b"tile38"]
        tile38[b"sha1hex"] = lambda s: sha1hex(_bytes(s)).encode()
        tile38[b"distance_to"] = _distance_to
        # nothing of the host stays reachable from the runtime's own globals either
        g = self.lua.globals()
        for name in ("io", "os", "package", "require", "debug", "load", "loadstring", "loadfile",
                     "dofile", "module", "collectgarbage", "getfenv", "setfenv", "rawset",
                     "rawget", "newproxy", "gcinfo", "coroutine", "python", "print"):
            g[name.encode()] = None

    # --- SCRIPT LOAD / EXISTS / FLUSH ---------------------------------------------------
    def load(self, source: bytes) -> str:
        sha = sha1hex(source)
        if sha not in self._scripts:
            self._scripts[sha] = self._compile(source, sha)
        return sha

    def exists(self, sha: str) -> bool:
        return sha.lower() in self._scripts

    def flush(self) -> None:
        self._scripts.clear()

    def _compile(self, source: bytes, sha: str) -> Any:
        fn, err = self._engine[b"compile"](source, f"f_{sha}".encode())
        if fn is False:
            raise ScriptError(_text(err).replace("\n", "\\n"))
        return fn

    # --- EVAL -----------------------------------------------------------------------------
    def run(self, script: bytes, is_sha: bool, keys: list[bytes], argv: list[bytes],
            call: Callable[[list[bytes]], CallResult], deadline: float | None) -> Any:
        """Run a script; returns its Lua result (see to_resp / to_json)."""
        fn = self._function(script, is_sha)
        now = time.monotonic()
        self._deadline = deadline if deadline is not None else math.inf
        self._limit_at = now + self.time_limit if self.time_limit > 0 else math.inf
        self._call = call
        try:
            ok, result = self._engine[b"run"](fn, self.lua.table(*keys), self.lua.table(*argv))
        except lua51.LuaMemoryError:
            raise ScriptError("script used more than its memory limit") from None
        finally:
            self._call = None
        if ok:
            return result
        if time.monotonic() > self._deadline:
            raise ScriptError(TIMEOUT)
        message = _text(result)
        if "__geoserver_deadline__" in message:
            raise ScriptError(f"script ran longer than its time limit ({self.time_limit:g} s)")
        if "not enough memory" in message:
            raise ScriptError("script used more than its memory limit")
        raise ScriptError(message.replace("\n", "\\n"))

    # --- WHEREEVAL ------------------------------------------------------------------------
    def where(self, script: bytes, is_sha: bool, argv: list[bytes],
              call: Callable[[list[bytes]], CallResult], deadline: float | None) -> WherePredicate:
        """A per-object predicate for WHEREEVAL / WHEREEVALSHA, compiled once (the EVAL cache)."""
        if self._call is not None:  # the hook is one per runtime: no script inside a script
            raise ScriptError("WHEREEVAL is not allowed inside a script")
        fn = self._function(script, is_sha)
        return WherePredicate(self, self._engine[b"where"](fn, self.lua.table(*argv)), call, deadline)

    def _function(self, script: bytes, is_sha: bool) -> Any:
        if is_sha:
            fn = self._scripts.get(_text(script).lower())
            if fn is None:
                raise ScriptError(SHA_NOT_FOUND)
            return fn
        sha = sha1hex(script)
        fn = self._scripts.get(sha)
        if fn is None:
            fn = self._scripts[sha] = self._compile(script, sha)
        return fn

    def _expired(self) -> bool:
        now = time.monotonic()
        return now > self._deadline or now > self._limit_at

    def _pycall(self, args: Any) -> tuple[bool, Any]:
        argv = [_bytes(a) for a in args.values()]
        if not argv:
            return False, b"wrong number of arguments for 'tile38.call'"
        assert self._call is not None
        ok, value = self._call(argv)
        if not ok:
            return False, str(value).encode()
        return True, self.to_lua(value)

    # --- conversions ------------------------------------------------------------------------
    def to_lua(self, value: Any) -> Any:
        """A RESP-shaped command result as Tile38's ConvertToLua makes it."""
        if value is None:
            return False
        if isinstance(value, Simple):
            return self.lua.table_from({b"ok": value.encode()})
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return value
        if isinstance(value, float):  # RESP sends floats as bulk strings, so Lua gets text
            return format_float(value).encode()
        if isinstance(value, str):
            return value.encode("utf-8", "surrogateescape")
        if isinstance(value, bytes):
            return value
        if isinstance(value, dict):
            value = [x for kv in value.items() for x in kv]
        if isinstance(value, list | tuple):
            return self.lua.table_from([self.to_lua(v) for v in value])
        return str(value).encode()

    def _json_encode(self, value: Any) -> bytes:
        return orjson.dumps(to_json(value))

    def _json_decode(self, text: Any) -> Any:
        try:
            doc = orjson.loads(_bytes(text))
        except orjson.JSONDecodeError as exc:
            raise ScriptError(f"json: {exc}") from None
        return self._from_json(doc)

    def _from_json(self, doc: Any) -> Any:
        if isinstance(doc, dict):
            return self.lua.table_from({k.encode(): self._from_json(v) for k, v in doc.items()})
        if isinstance(doc, list):
            return self.lua.table_from([self._from_json(v) for v in doc])
        if isinstance(doc, str):
            return doc.encode()
        return doc


class WherePredicate:
    """One WHEREEVAL of one query (or fence): `match(id, fields, properties)` runs the script
    for an object with ID, FIELDS (`fields`: name, value, name, value ... with numbers, strings
    or booleans) and PROPERTIES (the GeoJSON properties, or None) set, within script-time-limit
    per object and the command's TIMEOUT.
    Its tile38.call goes to `call` (read-only commands). Tile38's rules: a Lua error fails
    the search, except indexing a non-table (a missing nested field), which is no match."""

    __slots__ = ("_call", "_deadline", "_engine", "_fn")

    def __init__(self, engine: ScriptEngine, fn: Any, call: Callable[[list[bytes]], CallResult],
                 deadline: float | None) -> None:
        self._engine = engine
        self._fn = fn
        self._call = call
        self._deadline = deadline if deadline is not None else math.inf

    def match(self, oid: str, fields: list[Any], properties: dict[str, Any] | None) -> bool:
        eng = self._engine
        if eng._call is not None:
            raise ScriptError("WHEREEVAL is not allowed inside a script")
        eng._deadline = self._deadline
        eng._limit_at = time.monotonic() + eng.time_limit if eng.time_limit > 0 else math.inf
        eng._call = self._call
        try:
            props = eng._from_json(properties) if properties else None
            if len(fields) > MAX_FLAT_FIELDS:
                fields = [eng.lua.table_from(dict(zip(fields[::2], fields[1::2], strict=True)))]
            status, value = self._fn(oid.encode("utf-8", "surrogateescape"), props, *fields)
        except lua51.LuaMemoryError:
            raise ScriptError("script used more than its memory limit") from None
        finally:
            eng._call = None
        if status == 1:
            return bool(value)
        if status == 2:
            raise ScriptError(f"script returned value of type {_text(value)}")
        if time.monotonic() > eng._deadline:
            raise ScriptError(TIMEOUT)
        message = _text(value)
        if "__geoserver_deadline__" in message:
            raise ScriptError(f"script ran longer than its time limit ({eng.time_limit:g} s)")
        if "not enough memory" in message:
            raise ScriptError("script used more than its memory limit")
        if "attempt to index" in message:
            return False
        raise ScriptError(message.replace("\n", "\\n"))


def _bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, float) and value == int(value):
        return str(int(value)).encode()
    return str(value).encode()


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _distance_to(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """tile38.distance_to: haversine meters, as tidwall/geojson/geo.DistanceTo."""
    radius = 6371e3
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return radius * 2 * math.atan2(math.sqrt(a), math.sqrt(1 - a))


def _is_list(table: Any) -> bool:
    return len(table) != 0


def to_resp(value: Any) -> Any:
    """Tile38's ConvertToRESP: the script's return value as a RESP-shaped Python value;
    raises ScriptReplyError for {err=...}."""
    if value is None or value is False:
        return None
    if value is True:
        return 1
    if isinstance(value, int | float):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return value
        return math.floor(value)
    if isinstance(value, bytes):
        return value
    if lua51.lua_type(value) == "table":
        if _is_list(value):
            return [to_resp(v) for v in value.values()]
        items = list(value.items())
        if len(items) == 1 and items[0][0] in (b"ok", b"err"):
            key, inner = items[0]
            if key == b"ok":
                return Simple(_text(inner))
            raise ScriptReplyError(_text(inner))
        return [[to_resp(k), to_resp(v)] for k, v in items]
    raise ScriptReplyError(f"Unsupported lua type: {lua51.lua_type(value) or type(value).__name__}")


def to_json(value: Any) -> Any:
    """Tile38's ConvertToJSON: the script's return value for `{"ok":true,"result":...}`."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)  # Lua 5.1 numbers are doubles; Tile38 prints 4, not 4.0
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if lua51.lua_type(value) == "table":
        if _is_list(value):
            return [to_json(v) for v in value.values()]
        return {_text(k) if isinstance(k, bytes) else str(k): to_json(v) for k, v in value.items()}
    return f"Unsupported lua type: {lua51.lua_type(value)}"

