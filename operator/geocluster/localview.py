"""How a local cluster looks: the rich table of ``geocluster up``/``status``, and the log ring.

Pure rendering from the two state files' contents (``cluster.json`` info, ``status.json``), so
the live view inside ``up`` and ``status`` from another terminal show exactly the same thing.
Below ``NARROW`` columns the table keeps only what identifies a member and its health (names
and addresses are never cut) and prints the rest as one line per member under it.
"""

from __future__ import annotations

import logging
from collections import deque
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .policy import load_status
from .spec import parse_time

NARROW = 120  # columns: below this, the narrow layout


class RingHandler(logging.Handler):
    """Keeps the last log lines for the live view."""

    def __init__(self, size: int = 12):
        super().__init__()
        self.lines: deque[str] = deque(maxlen=size)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def clock(value: str | None) -> str:
    """RFC 3339 -> local HH:MM:SS ('' for None)."""
    t = parse_time(value)
    return t.astimezone().strftime("%H:%M:%S") if t else ""


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def next_shrink(info: dict[str, Any], now: datetime | None = None) -> str:
    """When the schedule fires next, in its time zone (and local time when that differs)."""
    expr = info.get("schedule")
    if not expr:
        return "no shrink schedule"
    zone = info.get("timeZone") or "UTC"
    now = (now or datetime.now(UTC)).astimezone(ZoneInfo(zone))
    following = croniter(expr, now).get_next(datetime)
    when = following.strftime("%Y-%m-%d %H:%M %Z")
    local = following.astimezone()
    if local.utcoffset() != following.utcoffset():
        when += f" ({local.strftime('%H:%M %Z')} here)"
    return f"next shrink {when} (schedule {expr!r}, timeZone {zone})"


def _last(m: dict[str, Any], st: Any, ms: Any) -> str:
    """The leader's latest shrink, a follower's latest resync (and that it healed since)."""
    if m["role"] == "leader":
        rec = st.last_shrink
        return f"shrink {clock(rec.time)} {rec.result} ({rec.reason})" if rec else ""
    when, _, result = (m.get("lastResync") or "").partition(" ")
    if not when:
        return ""
    last = f"resync {clock(when)} {result}"
    healthy = parse_time(ms.healthy_since) if ms else None
    if result == "failed" and healthy and healthy >= (parse_time(when) or healthy):
        last += f", ok since {clock(ms.healthy_since)}"  # repaired another way (e.g. a restart)
    return last


def _repairs(m: dict[str, Any], ms: Any) -> str:
    rep = ms.last_repair if ms else None
    if rep is None:
        out = "-"
    elif ms.repairs:
        out = f"{rep.action} {rep.result} (#{ms.repairs})"
    else:  # the ladder starts afresh after a whole grace period healthy
        since = f"healthy since {clock(ms.healthy_since)}, " if ms.healthy_since else ""
        out = f"{rep.action} {rep.result} at {clock(rep.time)}; {since}ladder reset"
    return out + (f", restarted {m['restarts']}x" if m.get("restarts") else "")


def _state(m: dict[str, Any], ms: Any) -> Text:
    if not m.get("process"):
        return Text("stopped", "red")
    if ms is None:
        return Text("starting", "yellow")
    if ms.gave_up:
        return Text("gave up: " + (ms.divergence or ""), "bold red")
    if not ms.reachable or ms.divergence:
        return Text(ms.divergence or "unreachable", "yellow")
    return Text("ok", "green")


def table(info: dict[str, Any], status: dict[str, Any], narrow: bool = False) -> Table:
    """One row per member; ``narrow``: only name, role, address, aof_size, caught_up, state."""
    st = load_status(status)
    seen = {m.name: m for m in st.members}
    phase = st.phase or "Starting"
    if not info.get("supervisor"):
        phase = f"stopped (last seen {phase} at {clock(info.get('updated'))})"
    leader = f", leader {info['leader']}" if info.get("leader") else ""
    t = Table(title=f"GeoCluster {info.get('name', '?')}: {phase}{leader}", title_justify="left")
    members = info.get("members", [])
    wide = ("memory", "last shrink/resync", "repairs")
    for col in ("member", "role", "address", "aof_size", "caught_up", *(() if narrow else wide), "state"):
        longest = max([len(col)] + [len(m[col] if col != "member" else m["name"]) for m in members]) \
            if col in ("member", "address") else 0  # fmt: skip
        t.add_column("up" if narrow and col == "caught_up" else col,
                     justify="right" if col in ("aof_size", "memory") else "left",
                     no_wrap=col in ("member", "address"), min_width=longest or None,
                     overflow="fold")
    for m in members:
        ms = seen.get(m["name"])
        caught = "" if m["role"] == "leader" or not ms else ("yes" if ms.caught_up else "no")
        cells = [m["name"], m["role"], m["address"], size(ms.aof_size if ms else None), caught]
        if not narrow:
            cells += [size(m.get("memory")), _last(m, st, ms), _repairs(m, ms)]
        t.add_row(*cells, _state(m, ms))
    return t


def details(info: dict[str, Any], status: dict[str, Any]) -> Text:
    """The narrow layout's other columns: one line per member."""
    st = load_status(status)
    seen = {m.name: m for m in st.members}
    out = Text()
    for m in info.get("members", []):
        ms = seen.get(m["name"])
        parts = [f"memory {size(m.get('memory'))}", _last(m, st, ms), "repairs " + _repairs(m, ms)]
        out.append(f"{m['name']}: " + "; ".join(p for p in parts if p) + "\n")
    return out


def summary(info: dict[str, Any], status: dict[str, Any]) -> Text:
    """Conditions and what comes next, under the table."""
    st = load_status(status)
    out = Text()
    for c in st.conditions:
        colour = "green" if (c.status == "True") != (c.type == "Degraded") else "yellow"
        out.append(f"{c.type}={c.status}", colour).append(f" {c.reason}")
        out.append(f": {c.message}  " if c.message else "  ")
    rec = st.last_failover
    if rec:
        out.append(f"\nlast {rec.kind} {clock(rec.time)}: {rec.old} -> {rec.new} {rec.result} "
                   f"({rec.reason}); {rec.behind_bytes} bytes behind"
                   + (f", writes paused {rec.write_pause_ms} ms" if rec.write_pause_ms is not None else ""))
    lead = next((m for m in info.get("members", []) if m["name"] == info.get("leader")), None)
    if lead:  # where clients go (the README's commands say 9851; the leader may be elsewhere)
        port = lead["address"].rpartition(":")[2]
        out.append(f"\nleader {lead['name']} on {lead['address']}: redis-cli -p {port}", "bold")
    out.append("\n" + next_shrink(info))
    if st.pending_resyncs:
        out.append(f"; resyncs queued: {', '.join(st.pending_resyncs)}")
    return out


def render(info: dict[str, Any], status: dict[str, Any], lines: list[str], hint: str = "",
           width: int = 200) -> RenderableType:
    """The whole live view: table, conditions, recent log lines (narrow below ``NARROW``)."""
    narrow = width < NARROW
    parts: list[RenderableType] = [table(info, status, narrow)]
    if narrow:
        parts.append(details(info, status))
    parts.append(summary(info, status))
    if lines:
        parts.append(Text("\n".join(lines), "dim"))
    if hint:
        parts.append(Text(hint, "cyan"))
    return Group(*parts)
