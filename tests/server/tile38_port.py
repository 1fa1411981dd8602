"""Runs Tile38's own test tables (tests/*.go, ported as Python data) against a real geoserver.

A case is `(args, mode, kind, want)`: mode "R" (RESP) or "J" (JSON output); kind "OK", "Str"
or "Err" as in Tile38's harness. RESP replies are printed the way Tile38's harness prints
them (`[0 [id1 id2]]`, `<nil>`), JSON replies are compared as parsed documents without
`elapsed`. `skip` maps a case index to the reason it is not run (a deliberate difference, or
a feature outside this port), so every table states what it does not check; a reason that
starts with UNORDERED runs the case comparing results as sets (geoserver answers in id order,
Tile38 in its R-tree's order).
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from wire import Wire

Case = tuple[list[str], str, str, Any]


def resp_text(value: Any, top: bool = True) -> str:
    if value is None:
        return "<nil>" if top else "nil"
    if isinstance(value, Exception):
        return str(value)
    if isinstance(value, list):
        return "[" + " ".join(resp_text(v, False) for v in value) + "]"
    return str(value)


UNORDERED = "unordered: "  # a skip reason with this prefix runs the case, ignoring id order


def _sorted_lists(text: str) -> str:
    """Every innermost `[a b c]` with its items sorted: compares results whatever their order."""
    return re.sub(r"\[([^\[\]]*)\]", lambda m: "[" + " ".join(sorted(m.group(1).split())) + "]", text)


def _check_resp(reply: Any, kind: str, want: Any, unordered: bool = False) -> bool:
    if unordered:
        return _sorted_lists(resp_text(reply)) == _sorted_lists(str(want))
    if kind == "OK":
        return reply == "OK"
    if kind == "Err":
        if want == "<nil>":
            return reply is None
        return isinstance(reply, Exception) and str(reply) in (want, "ERR " + want)
    return resp_text(reply) == str(want)


def _by_id(doc: dict[str, Any]) -> dict[str, Any]:
    """The result lists of a search reply sorted by id (for UNORDERED cases)."""
    key = lambda row: row["id"] if isinstance(row, dict) else row  # noqa: E731
    return {k: sorted(v, key=key) if k in ("ids", "objects", "points", "bounds", "hashes") else v
            for k, v in doc.items()}


def _check_json(doc: dict[str, Any], kind: str, want: Any, unordered: bool = False) -> bool:
    doc = {k: v for k, v in doc.items() if k != "elapsed"}
    if unordered and kind == "Str":
        return _by_id(doc) == _by_id(orjson.loads(want))
    if kind == "OK":  # Tile38's harness (mock_io_test.go OK()) asks only that `ok` is true
        return doc.get("ok") is True
    if kind == "Err":
        return doc == {"ok": False, "err": want}
    return doc == orjson.loads(want)


def run(port: int, cases: list[Case], skip: dict[int, str] | None = None) -> tuple[int, list[str]]:
    """Run the cases in order on a flushed server: (cases passed, failure descriptions)."""
    skip = skip or {}
    failures: list[str] = []
    passed = 0
    with Wire(port) as resp, Wire(port) as js:
        assert resp.call("FLUSHDB") == "OK"
        for i, (args, mode, kind, want) in enumerate(cases):
            unordered = skip.get(i, "").startswith(UNORDERED)
            if i in skip and not unordered:
                continue
            if mode == "J":
                raw = js.json(*args) if js.json_mode else None
                if raw is None:
                    js.json_mode = False
                    raw = js.json(*args)
                ok = _check_json(raw, kind, want, unordered)
                got: Any = raw
            else:
                got = resp.call(*args)
                ok = _check_resp(got, kind, want, unordered)
            if ok:
                passed += 1
            else:
                failures.append(f"#{i} {args} ({mode} {kind}) want {want!r} got {got!r}")
    return passed, failures
