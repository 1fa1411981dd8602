"""Render the command reference (docs/commands.md) from the command table itself, so the
documented syntax is the syntax the server parses. `python -m geoserver.commands.reference`."""

from __future__ import annotations

import inspect

from geoserver.commands import TABLE
from geoserver.commands.base import Command, Flag

HEADER = """# geoserver command reference

Generated from the command table by `python -m geoserver.commands.reference > docs/commands.md`
(a test fails when this file is out of date). Every command works over RESP (redis-cli, redis-py;
pyle38 for the commands it wraps), inline text (telnet), and HTTP (`GET /CMD+arg+arg`, `POST /`
with the command line as the
body); replies are JSON (`{"ok":true,...,"elapsed":"..."}` / `{"ok":false,"err":"..."}`) over HTTP
and after `OUTPUT json`, RESP otherwise. Shapes and error texts follow Tile38 1.30.

Flags: **write** — logged to the AOF when it changes data, refused on followers (`not the leader`)
and with `READONLY yes` (`read only`); **read** — refused on a follower that has not caught up
once (`catching up to leader`); **no auth** — allowed before `AUTH`; **admin** — server
management; all other commands need `AUTH` when `requirepass` is set and get `LOADING ...` while
the AOF loads.

Differences from Tile38 1.30, on purpose:
- `SERVER` is never refused on a catching-up follower (operators must see it), and it has extra
  fields: `aof_shrinking`, `last_shrink_time`, `last_shrink_result`, `last_shrink_duration_ms`,
  `resyncs`, `leader_aof_size`, `replication_state`, `replication_error`, and once a leader
  lease was given (`LEASE`) `lease_state`, `lease_epoch`, `lease_remaining_ms`,
  `lease_writes_refused` (also in `INFO replication`).
- `RESYNC` (follower): full resync now. `HELLO 2|3` answers the handshake RESP3-era clients send.
- Over HTTP, admin commands need POST, writes and admin commands from another site's page are
  refused, and CORS headers go only to origins in `cors-origins`; requests are framed against
  limits, smaller before AUTH; `CONFIG GET` redacts passwords (docs/security.md).
- A follower that cannot continue its leader's AOF replaces its dataset *and* its AOF (see
  docs/replication.md) instead of replaying the leader's file on top of stale memory.
- Results of WITHIN, INTERSECTS (and SCAN, SEARCH) come in id order (SEARCH: value order), not
  in Tile38's R-tree order, and CURSOR pages follow that order: a client paging with CURSOR
  gets the same pages on every geoserver, whatever the index (a grid here, compiled or Python),
  but not Tile38's pages. NEARBY is nearest first in both.
- Latitudes outside -90..90 are refused (`invalid latitude '-112': must be within -90..90`) where
  Tile38 stores them (Redis GEOADD and PostGIS refuse them too): `SET k id POINT -112 33` is an
  error, not a point off the globe.
- `WHERE "expression"` that does not parse is refused (`invalid where expression: syntax error
  at column 7`); Tile38 silently matches nothing. Evaluation errors (an invalid `=~` regex,
  reading a member of undefined) make the expression false for that object, as in Tile38.
- JSET/JDEL re-encode the edited document's numbers (`1.0e10` is stored as 10000000000.0), and
  a field number keeps its value, not its spelling (`FSET ... f 1.10` reads back as 1.1).
- STATS `in_memory_size` counts points as Tile38 does (16 bytes, 24 with z) and strings and
  GeoJSON by their text; field values count 8 bytes each whatever their length.
- NEARBY ... DISTANCE to a point is computed as Tile38 does (its formula, Go's trigonometry) and
  prints the same digits; to a shape it is the distance to its bounding box, which may differ
  in the last digits.
- TEST ... INTERSECTS CLIP of a MultiPolygon answers the clipped MultiPolygon (Tile38: a
  FeatureCollection of clipped Features).
- SPARSE n takes, in each of the 4^n quads (visited north-west, north-east, south-west, south-
  east, recursively, as Tile38), the first hit in id order (Tile38: in R-tree order), so the
  sample can differ; a shape spanning more than 1024 quads is placed by its center.
- BUFFER of a polygon or line is computed in a local equirectangular frame (exact for points and
  circles, within a fraction of a percent for city-sized shapes); CLIP and CLIPBY cut with GEOS.
- Scripting (EVAL and its variants, SCRIPT, WHEREEVAL/WHEREEVALSHA) runs on Lua 5.1 (lupa, the
  dialect of Tile38's gopher-lua), sandboxed (docs/migration.md): `script-time-limit` bounds
  each run, for WHEREEVAL each object's evaluation (TIMEOUT bounds the whole search); a
  WHEREEVAL's `tile38.call` runs read-only commands, and WHEREEVAL inside a script is refused
  (`WHEREEVAL is not allowed inside a script`).
- Not implemented: `MVT`.

`SET`/`FSET ... RETURN [WITHFIELDS] [OBJECT|POINT|BOUNDS|HASH precision]` (Tile38 after 1.37)
answers the write with the stored object as `GET` with those words would; a bad RETURN word, or
POINT/BOUNDS/HASH of a STRING object, is refused before anything is written.

WHERE takes Tile38's three forms: `WHERE name min max` (`(` before a bound excludes it,
`-inf`/`+inf`), `WHERE name op value` (`<`, `<=`, `>`, `>=`, `==`, `!=`), and `WHERE "expression"`
(told apart as Tile38 does: when the token after the next one starts with a letter).
Field values are JSON values (numbers, strings, `true`/`false`/`null`, objects, arrays: `FIELD
info {"driver":"x"}`), shown with their JSON type in GET WITHFIELDS, FGET and search replies;
comparisons order null < false < number < string < true < JSON, strings without case. A dotted
name reaches into a JSON field (`info.driver`) or a GeoJSON object's `properties.*`.
Expressions (tidwall/expr's language, parsed once per query and compiled into closures, never
`eval`'d): `&& || !`, `== != === !== < <= > >=` (strings without case), `+ - * / %`, `& | ^`,
`?:`, `??`, `=~ 'regex'`, `id.match('glob*')`, parentheses, `'strings'`, numbers, `true`,
`false`, `null`, and names: a GeoJSON member (`properties.speed`), `id`, `type`, a field
(`info.driver`), or `this.name`; a missing name is 0 (`!optional` holds when it is unset).
JSET/JGET/JDEL paths: `a.b.c`, array indexes `tags.0`, `tags.-1` to append (JSET), `\\.` for a
dot in a key, `tags.#` for a length (JGET).

Keys, ids, field names and values, STRING values and glob patterns are byte strings: any
bytes, also ones that are not UTF-8 (`\\xff` and `\\xfe` are two keys), are kept exactly in the
store, the AOF, AOFSHRINK's rewrite, RESP replies and on followers. JSON replies and error texts
show bytes that are not UTF-8 as U+FFFD (so two such keys can look alike there; RESP tells them
apart). Such bytes sort as U+DC80..U+DCFF, between U+D7FF and U+E000: key and id order differs
from byte order only where they meet characters from U+E000 up. Inline (telnet) and HTTP
requests are text: invalid UTF-8 in them becomes U+FFFD. A glob pattern (MATCH, KEYS, PDEL,
CONFIG GET) is at most `max-pattern-length` bytes (`invalid pattern: too long (limit 1024
bytes)`); compiled patterns are kept in an LRU of 256.

GeoJSON (SET ... OBJECT, and the OBJECT area of WITHIN / INTERSECTS) is measured before anything
is built or acknowledged: `geojson-max-vertices` positions (`invalid geojson: too many vertices
(limit 200000)`), `geojson-max-parts` rings, lines, polygons and collection members (`invalid
geojson: too many rings, lines, polygons or members (limit 100000)`), `geojson-max-depth` nested
Feature / FeatureCollection / GeometryCollection levels, at most 100 whatever the setting
(`invalid geojson: nested too deep (limit 32)`); bytes are bounded by `max-request-size`. The AOF
loader and the follower stream do not apply these limits: what was acknowledged loads, also after
they were lowered. Invalid polygons (self-intersecting or self-touching rings, overlapping
members) are accepted and kept as given, never repaired: a point is inside by the even-odd rule,
as with Tile38's ray casting (both lobes of a bow tie are inside), and shape-to-shape predicates
(GEOS) take the rings as given, so they are exact for valid polygons only. A WITHIN / INTERSECTS
whose shape area would test more than 10^8 edges (points and vertices located, times the edges a
scan line across the area crosses; about 3 s of CPU) is refused: `area too complex to search:
about N edge tests for M locations (limit 100000000)`.

Long commands run in slices (commands/slices.py): work over more than 10,000 items (keys for
KEYS, STATS, SERVER, INFO; candidates for SCAN, WITHIN, INTERSECTS, NEARBY, PDEL) is done a few
milliseconds at a time, and other clients are served in between; the client that sent it gets
its replies in order (its later pipelined commands wait). Replies are the same as in one go
when nothing else writes meanwhile. When other clients write while a sliced command runs:
- KEYS, SCAN: a walk in key / id order that resumes after the last key or id it read. A key or
  id that exists for the whole command is listed exactly once, in order; one created or
  deleted meanwhile may or may not be. Each object is shown as it is when its slice is read.
  The returned cursor counts positions, so it is approximate if the range changed meanwhile.
- NEARBY: the ring (positions and ids) is the data as it was when the command started, in the
  order of those distances; objects deleted meanwhile are left out, objects moved meanwhile keep
  their place but are shown as they are now, objects created meanwhile are not included.
- WITHIN, INTERSECTS: a point counts if it was inside when the command started and still
  exists; a non-point object counts if it was inside when its step tested it (objects are
  tested in the order of the candidate list taken at the start) and still exists. Either is
  shown as it is when its row is read (it may no longer match); objects created meanwhile are
  not included.
- STATS, SERVER, INFO: each key is counted as it is when its slice reads it (the totals are a
  sum over slightly different moments, exact when nothing writes meanwhile).
- PDEL: other writes to its key (and FLUSHDB, DROP or RENAME of it) wait until it ends, so it
  deletes exactly the ids that match when it starts, and its one AOF record, appended when it
  ends, replays (restart, followers) to the same dataset. Reads of the key meanwhile may see some
  of the ids already gone. The AOF loader and followers replay PDEL in one go.
- DROP, FLUSHDB: the data is detached at once (the next command sees it gone) and its memory
  is freed by a background task in slices.
- `/metrics` with more than 10,000 keys serves dataset figures from a background sweep at most
  5 s old (none on the first scrape after start), and per-collection series for the 1,000
  largest collections only.
"""


def _flags(cmd: Command) -> str:
    names = [("write", Flag.WRITE), ("read", Flag.READ), ("no auth", Flag.NOAUTH), ("admin", Flag.ADMIN)]
    return ", ".join(n for n, f in names if cmd.flags & f) or "-"


def render() -> str:
    families: dict[str, list[tuple[str, Command]]] = {}
    for name, cmd in sorted(TABLE.items()):
        if cmd.name != name:
            continue  # aliases are listed with their command
        module = inspect.getmodule(cmd.func)
        family = (module.__name__.rsplit(".", 1)[-1] if module else "other").capitalize()
        families.setdefault(family, []).append((name, cmd))
    aliases: dict[str, list[str]] = {}
    for name, cmd in TABLE.items():
        if cmd.name != name:
            aliases.setdefault(cmd.name, []).append(name.upper())
    out = [HEADER]
    for family in sorted(families):
        out.append(f"\n## {family}\n\n| Command | Syntax | Flags |\n|---|---|---|")
        for name, cmd in families[family]:
            doc = " ".join(line.strip() for line in (cmd.func.__doc__ or "").strip().splitlines())
            syntax, _, why = doc.partition(" -- ")
            alias = f" (alias {', '.join(sorted(aliases[name]))})" if name in aliases else ""
            text = f"`{syntax}`" + (f" — {why}" if why else "")
            out.append(f"| {name.upper()}{alias} | {text.replace('|', chr(92) + '|')} | {_flags(cmd)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(render(), end="")
