"""SERVER EXT and INFO as Tile38 builds them (internal/server/stats.go), from live server state.

Tile38's extended stats are mostly Go runtime.MemStats fields. Each keeps its name and JSON type
here, filled with the CPython/process figure that means the same thing where one exists
(docs/migration.md lists the mapping): resident memory for the heap in use, pymalloc's live
blocks for heap objects, asyncio tasks for goroutines, gc.callbacks for the last collection and
the share of time spent collecting. Fields with no counterpart (Go's mspan/mcache/stack pools,
malloc/free counters) are 0.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

import psutil

from geoserver import TILE38_COMPAT_VERSION

if TYPE_CHECKING:
    from geoserver.server import Server

_PROCESS = psutil.Process()
INFO_SECTIONS = ("server", "clients", "memory", "persistence", "stats", "replication", "cpu",
                 "cluster", "keyspace")


def total_commands(server: Server) -> int:
    return sum(s.ok + s.errors for s in server.metrics.commands().values())


def messages_sent(server: Server) -> int:
    """Hook messages delivered, when the hook sink counts them (the durable one does)."""
    stats = getattr(server.hook_sink, "stats", None)
    totals = getattr(stats, "totals", None)
    return int(getattr(totals, "sent", 0))


def extended_stats(server: Server, basic: dict[str, Any]) -> dict[str, Any]:
    """SERVER EXT: Tile38's extStats field set, in its JSON types."""
    mem = _PROCESS.memory_info()
    rss = mem.rss
    data = getattr(mem, "data", rss)
    gc_clock = server.metrics.gc
    uptime = time.time() - server.started
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a direct call in a test)
        tasks = 0
    points = basic["num_points"]
    return {
        "go_goroutines": tasks,
        "go_threads": threading.active_count(),
        "go_version": f"{platform.python_implementation().lower()}{platform.python_version()}",
        "alloc_bytes": rss,
        "alloc_bytes_total": rss,
        "sys_cpus": os.cpu_count() or 1,
        "sys_bytes": mem.vms,
        "lookups_total": 0,
        "mallocs_total": 0,
        "frees_total": 0,
        "heap_alloc_bytes": rss,
        "heap_sys_bytes": data,
        "heap_idle_bytes": max(0, data - rss),
        "heap_inuse_bytes": rss,
        "heap_released_bytes": 0,
        "heap_objects": sys.getallocatedblocks(),
        "stack_inuse_bytes": 0,
        "stack_sys_bytes": 0,
        "mspan_inuse_bytes": 0,
        "mspan_sys_bytes": 0,
        "mcache_inuse_bytes": 0,
        "mcache_sys_bytes": 0,
        "buck_hash_sys_bytes": 0,
        "gc_sys_bytes": 0,
        "other_sys_bytes": 0,
        "next_gc_bytes": 0,
        "last_gc_time_seconds": gc_clock.last_end,
        "gc_cpu_fraction": gc_clock.seconds / uptime if uptime > 0 else 0.0,
        "tile38_id": basic["id"],
        "tile38_pid": basic["pid"],
        "tile38_version": TILE38_COMPAT_VERSION,
        "tile38_max_heap_size": server.config.maxmemory,
        "tile38_type": "follower" if server.follower is not None else "leader",
        "tile38_read_only": server.read_only,
        "tile38_pointer_size": 8,
        "tile38_uptime_in_seconds": uptime,
        "tile38_connected_clients": len(server.clients),
        "tile38_cluster_enabled": False,
        "tile38_aof_enabled": server.aof is not None,
        "tile38_aof_rewrite_in_progress": server.shrink.running,
        "tile38_aof_last_rewrite_time_sec": int(server.shrink.last_duration),
        "tile38_aof_current_rewrite_time_sec": 0,
        "tile38_aof_size": server.aof_size,
        "tile38_http_transport": server.config.http_transport,
        "tile38_total_connections_received": server.metrics.connections_received,
        "tile38_total_commands_processed": total_commands(server),
        "tile38_total_messages_sent": messages_sent(server),
        "tile38_expired_keys": server.metrics.expired_keys,
        "tile38_connected_slaves": len(server.live_streams),
        "tile38_num_points": points,
        "tile38_num_objects": basic["num_objects"],
        "tile38_num_strings": basic["num_strings"],
        "tile38_num_collections": basic["num_collections"],
        "tile38_num_hooks": basic["num_hooks"],
        "tile38_num_hook_groups": 0,
        "tile38_num_object_groups": 0,
        "tile38_avg_point_size": rss // points if points else 0,
        "tile38_in_memory_size": basic["in_memory_size"],
    }


def _cpu() -> dict[str, str]:
    """Tile38 prints `%.2f` seconds; whole seconds here, so clients that type these fields as
    integers (pyle38) accept them."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"used_cpu_sys": f"{int(own.ru_stime):.2f}", "used_cpu_user": f"{int(own.ru_utime):.2f}",
            "used_cpu_sys_children": f"{int(children.ru_stime):.2f}",
            "used_cpu_user_children": f"{int(children.ru_utime):.2f}"}


def info_sections(server: Server, basic: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every INFO section Tile38 has, its fields in its order (`process_id` and `os` in Server,
    the replication state of a follower and the `lease_*` fields of a member given a lease,
    are ours, documented)."""
    follower = server.follower
    replication: dict[str, Any]
    if follower is None:
        replication = {"role": "master"}
        for i, stream in enumerate(sorted(server.live_streams, key=id)):
            replication[f"slave{i}"] = f"ip={stream.peer_ip},port={stream.peer_port},state=online"
    else:
        replication = {"role": "slave", "master_host": follower.host, "master_port": follower.port,
                       "slave_repl_offset": server.aof_size}
        if server.config.replica_priority >= 0:
            replication["slave_priority"] = server.config.replica_priority
        replication.update({"master_link_status": "up" if follower.connected else "down",
                            "replication_state": follower.state,
                            "replication_error": follower.last_error})
    replication["connected_slaves"] = len(server.live_streams)
    # the leader lease (geoserver.lease), after Tile38's fields and only once one was given:
    # lease_state, lease_epoch, lease_remaining_ms, lease_writes_refused (0/1, as Redis flags)
    for key, value in server.lease.stats().items():
        replication[key] = int(value) if isinstance(value, bool) else value
    shrink = server.shrink
    return {
        "server": {"tile38_version": TILE38_COMPAT_VERSION, "redis_version": TILE38_COMPAT_VERSION,
                   "uptime_in_seconds": basic["uptime"], "process_id": basic["pid"],
                   "os": platform.platform()},
        "clients": {"connected_clients": len(server.clients)},
        "memory": {"used_memory": basic["mem_alloc"]},
        "persistence": {"aof_enabled": int(server.aof is not None),
                        "aof_rewrite_in_progress": int(shrink.running),
                        "aof_last_rewrite_time_sec": int(shrink.last_duration),
                        "aof_current_rewrite_time_sec": 0,
                        "aof_current_size": server.aof_size,
                        "aof_last_rewrite_status": shrink.last_result or "none"},
        "stats": {"total_connections_received": server.metrics.connections_received,
                  "total_commands_processed": total_commands(server),
                  "total_messages_sent": messages_sent(server),
                  "expired_keys": server.metrics.expired_keys},
        "replication": replication,
        "cpu": _cpu(),
        "cluster": {"cluster_enabled": 0},
        "keyspace": {},
    }


def pick_sections(words: list[str]) -> list[str]:
    """INFO [section ...]: none, `all` or `default` mean every section; unknown names are
    skipped, as in Tile38; the order is always Tile38's."""
    wanted = {w.lower() for w in words}
    if not wanted or wanted & {"all", "default", "everything"}:
        return list(INFO_SECTIONS)
    return [name for name in INFO_SECTIONS if name in wanted]


def typed(value: str) -> Any:
    """Tile38's tryParseType: int, then float, then bool, else the text."""
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false", "t", "f"):
        return value.lower() in ("true", "t")
    return value


def info_text(sections: dict[str, dict[str, Any]], names: list[str]) -> str:
    """Tile38's INFO text: `# Name` then `key:value` lines, sections apart by a blank line."""
    parts = []
    for name in names:
        if name == "keyspace":  # Tile38 writes only the separator for it
            parts.append("")
            continue
        title = "CPU" if name == "cpu" else name.capitalize()
        lines = [f"# {title}"] + [f"{k}:{v}" for k, v in sections[name].items()]
        parts.append("".join(line + "\r\n" for line in lines))
    return "\r\n".join(parts)


def info_json(text: str) -> dict[str, Any]:
    """The JSON form Tile38 derives from the text, every value through tryParseType."""
    out: dict[str, Any] = {}
    for line in text.split("\r\n"):
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition(":")
            if sep:
                out[key] = typed(value)
    return out
