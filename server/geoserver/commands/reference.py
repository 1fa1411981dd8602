"""Render the command reference (docs/commands.md) from the command table itself, so the
documented syntax is the syntax the server parses. `python -m geoserver.commands.reference`."""

from __future__ import annotations

import inspect

from geoserver.commands import TABLE
from geoserver.commands.base import Command, Flag

HEADER = """# geoserver command reference

Generated from the command table by `python -m geoserver.commands.reference > docs/commands.md`
(a test fails when this file is out of date). Every command works over RESP (redis-cli, redis-py,
pyle38), inline text (telnet), and HTTP (`GET /CMD+arg+arg`, `POST /` with the command line as the
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
  `resyncs`, `leader_aof_size`, `replication_state`, `replication_error`.
- `RESYNC` (follower): full resync now. `HELLO 2|3` answers the handshake RESP3-era clients send.
- Over HTTP, admin commands need POST, writes and admin commands from another site's page are
  refused, and CORS headers go only to origins in `cors-origins`; requests are framed against
  limits, smaller before AUTH; `CONFIG GET` redacts passwords (docs/security.md).
- A follower that cannot continue its leader's AOF replaces its dataset *and* its AOF (see
  docs/replication.md) instead of replaying the leader's file on top of stale memory.
- Not implemented: geofences (`FENCE`, `SETHOOK`, channels), scripting (`EVAL`), `JSET/JGET`,
  `SEARCH`, `SPARSE`, `CLIP`, `BUFFER`, `WHERE` expressions, `SECTOR`, `MVT`.
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
