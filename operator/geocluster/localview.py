"""How a local cluster looks: the rich table of ``geocluster up``/``status``, and the log ring.

Pure rendering from the two state files' contents (``cluster.json`` info, ``status.json``), so
the live view inside ``up`` and ``status`` from another terminal show exactly the same thing.
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
    expr = info.get("schedule")
    if not expr:
        return "no shrink schedule"
    now = (now or datetime.now(UTC)).astimezone(ZoneInfo(info.get("timeZone") or "UTC"))
    following = croniter(expr, now).get_next(datetime)
    return f"next shrink {following.astimezone().strftime('%H:%M:%S')} ({expr})"


def table(info: dict[str, Any], status: dict[str, Any]) -> Table:
    """One row per member."""
    st = load_status(status)
    seen = {m.name: m for m in st.members}
    phase = st.phase or "Starting"
    if not info.get("supervisor"):
        phase = f"stopped (last seen {phase} at {clock(info.get('updated'))})"
    leader = f", leader {info['leader']}" if info.get("leader") else ""
    t = Table(title=f"GeoCluster {info.get('name', '?')}: {phase}{leader}", title_justify="left")
    for col in ("member", "role", "address", "aof_size", "caught_up", "memory", "last shrink/resync",
                "repairs", "state"):
        t.add_column(col, justify="right" if col in ("aof_size", "memory") else "left")
    for m in info.get("members", []):
        ms = seen.get(m["name"])
        if m["role"] == "leader":
            rec = st.last_shrink
            last = f"shrink {clock(rec.time)} {rec.result} ({rec.reason})" if rec else ""
        else:
            when, _, result = (m.get("lastResync") or "").partition(" ")
            last = f"resync {clock(when)} {result}" if when else ""
        rep = ms.last_repair if ms else None
        repair = f"{rep.action} {rep.result} (#{ms.repairs})" if rep and ms else "-"
        repair += f", restarted {m['restarts']}x" if m.get("restarts") else ""
        if not m.get("process"):
            state = Text("stopped", "red")
        elif ms is None:
            state = Text("starting", "yellow")
        elif ms.gave_up:
            state = Text("gave up: " + (ms.divergence or ""), "bold red")
        elif not ms.reachable or ms.divergence:
            state = Text(ms.divergence or "unreachable", "yellow")
        else:
            state = Text("ok", "green")
        caught = "" if m["role"] == "leader" or not ms else ("yes" if ms.caught_up else "no")
        t.add_row(m["name"], m["role"], m["address"], size(ms.aof_size if ms else None), caught,
                  size(m.get("memory")), last, repair, state)
    return t


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
    out.append("\n" + next_shrink(info))
    if st.pending_resyncs:
        out.append(f"; resyncs queued: {', '.join(st.pending_resyncs)}")
    return out


def render(info: dict[str, Any], status: dict[str, Any], lines: list[str], hint: str = "") -> RenderableType:
    """The whole live view: table, conditions, recent log lines."""
    parts: list[RenderableType] = [table(info, status), summary(info, status)]
    if lines:
        parts.append(Text("\n".join(lines), "dim"))
    if hint:
        parts.append(Text(hint, "cyan"))
    return Group(*parts)
