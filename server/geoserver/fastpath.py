"""The compiled fast path for whole commands (issue 15): a connection's requests run in C++
(`geoserver._core.execute_batch`, src/core/fastpath.cpp) while they are the simplest hot forms,
and from the first other request on through the normal path (RequestReader ->
dispatch.execute), unchanged: `serve` takes a read straight from the socket while the reader
holds nothing (every unpipelined request), `run` the reader's buffered bytes.
docs/architecture.md#the-fast-path describes it.

Handled in C++: `PING [message]`; `GET key id [POINT]` of a plain point or a miss;
`SET key id POINT lat lon` into an existing collection over nothing or a plain point, and
`SET key id FIELD name value ... POINT lat lon` (up to 8 FIELDs, each a non-zero JSON number, names
not z/lat/lon and ASCII) over nothing, a plain point or a point Item without expiry, merging the
old fields as Collection.set does;
`FSET key id [XX] name value ...` (up to 8 pairs, values as above, no RETURN) of a plain point or
an Item without expiry, as Collection.set_field per pair (a plain point becomes the point Item);
`DEL key id` of a plain point that is not its collection's last object, or of nothing;
`NEARBY key [LIMIT n] [IDS|COUNT|OBJECTS|POINTS] POINT lat lon meters` over a collection of points
only; `SCAN key [LIMIT n] [IDS|COUNT|OBJECTS|POINTS]` (OBJECTS, POINTS: while every row is a plain
point). Replies are what the command table renders in RESP output mode; on a RESP connection in
JSON output (OUTPUT json: pyle38, tile38-ts) PING, SET, FSET, DEL, a GET that finds a plain point and
the searches above (rows whose ids orjson writes unescaped) run, as `{"ok":true,...,"elapsed":...}`
bulks (errors: Python). A SET's (a deleting
DEL's, a changing FSET's) AOF record is its request bytes, which the core accepts only in canonical RESP, i.e.
exactly `encode_command(argv)`, and goes through the same AofLog buffer (group commit, fsync,
followers, AOFSHRINK's capture).

Invariant: the fast path runs a request only when the command table would do exactly the same.
`run` decides, per batch, from the server's state, which of PING / reads / writes may run:

- none over HTTP, on a connection subscribed, in a live fence, streaming the AOF or in
  MONITOR, nor while any client MONITORs (they must see each command);
- reads and writes only when the client is authenticated (or no requirepass) and the AOF is not
  loading; reads not on a follower still catching up (CatchingUpError); NEARBY, SCAN only while no
  object's expiry is due within EXPIRY_MARGIN (the Python path then checks each candidate);
- writes only when `dispatch.write_refusal(server, grows=True)` is None (the write gate: leader,
  read-only, MISCONF, maxmemory, lease), no live fence, hook or channel would hear them
  (`FenceEngine.active`) and no sliced write holds any key (`slices.blocker`).

`modes` is cached per client (`Client.fast_gate`) until `Server.gate_version` or
`slices.generation` moves: every command through the table bumps the version as it starts and as
an awaited one ends, and so does every setting of a server attribute the gate reads
(`gate_input`: loading, follower, aof_error, over_maxmemory; a follower's caught_up_once). What
changes with the clock alone is checked per call: the lease's end, and the next expiry.
The core counts what it runs into `metrics.CoreCounts` itself (no Python per request).

The core stops at anything else: other commands, options, errors (Python renders them), a new
key, an id holding a non-plain object, numbers it cannot parse or print exactly as Python does.
`GEOSERVER_FASTPATH=0` turns it off (tests/server/test_fastpath_differential.py runs both).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from geoserver import dispatch
from geoserver.commands import slices
from geoserver.store import index
from geoserver.store.collection import STORE_KINDS

if TYPE_CHECKING:
    from geoserver.protocol.framing import RequestReader
    from geoserver.server import Client, Server

_core = index._core
_execute = getattr(_core, "execute_batch", None)
_replay = getattr(_core, "replay_batch", None)
PING, READ, WRITE, RECORD, SEARCH, JSON = getattr(_core, "FASTPATH_MODES", (1, 2, 4, 8, 16, 32))
# the core's command indexes (src/core/fastpath.cpp Cmd), as the command table names them
NAMES = ("ping", "set", "get", "nearby", "scan", "del", "fset")
EXPIRY_MARGIN = 1.0  # seconds: NEARBY and SCAN run in C++ only while no object can expire this soon

# On unless GEOSERVER_FASTPATH=0, and only with the compiled point index (the core updates it).
ENABLED = (os.environ.get("GEOSERVER_FASTPATH", "1") != "0" and _execute is not None
           and index.CORE == "cpp")


NO_GATE = (-1, -1, 0, None)  # Client.fast_gate before its first request: computed then


def gate_input(name: str) -> property:
    """A Server (or Follower) attribute the cached gate depends on: setting it to a new value
    invalidates every client's gate (`gate_version` of the object, or of its `server`)."""
    key = "_" + name

    def get(self: Any) -> Any:
        return self.__dict__[key]

    def put(self: Any, value: Any) -> None:
        state = self.__dict__
        if state.get(key, _UNSET) != value:
            state[key] = value
            getattr(self, "server", self).gate_version += 1

    return property(get, put)


_UNSET = object()


def modes(server: Server, client: Client) -> int:
    """Which requests the fast path may run for this client now (0: none): its cached gate,
    less writes once the lease has lapsed and searches while an expiry is near."""
    gate = client.fast_gate
    if gate[0] != server.gate_version or gate[1] != slices.generation:
        gate = client.fast_gate = (server.gate_version, slices.generation, *_gate(server, client))
    mode, write_until = gate[2], gate[3]
    if write_until is not None and mode & WRITE and time.monotonic() >= write_until:
        mode &= ~WRITE  # the lease lapsed (dispatch.write_refusal answers the write)
    db = server.db  # no clock read while nothing is scheduled to expire (most datasets)
    if mode & SEARCH and db._expiry and db.may_have_expired(time.time() + EXPIRY_MARGIN):
        mode &= ~SEARCH  # the Python path checks each candidate's expiry
    return mode


def _gate(server: Server, client: Client) -> tuple[int, float | None]:
    """modes() without the clock: the mode, and the monotonic time writes end (the lease)."""
    if (not client.resp_conn or client.subscriber is not None or client.live is not None
            or client.stream is not None or client.monitoring or server.monitors):
        return 0, None
    mode = PING | JSON if client.json else PING
    if (client._authed or not server.config.requirepass) and not server.loading:  # Client.authed
        follower = server.follower
        if follower is None or follower.caught_up_once:
            mode |= READ | SEARCH
        if (dispatch.write_refusal(server, True) is None and not server.fences.active
                and slices.blocker(server.db, "flushdb", []) is None):  # flushdb: any key held
            mode |= WRITE
    if server.aof is not None:
        mode |= RECORD
    return mode, server.lease.until


def serve(client: Client, data: bytes, budget: int) -> tuple[bytes, int, bool]:
    """Run a read straight from the socket while the reader holds nothing (every unpipelined
    request): (replies, bytes of `data` consumed, whether their writes were appended to the
    AOF). The caller feeds what was not consumed to the reader; no copy, no framing state."""
    end, replies, logged = _run_core(client, data, 0, budget)
    return replies, end, logged


def run(client: Client, budget: int) -> bytes:
    """Run the client's buffered requests from the reader's position while the core handles
    them; returns their replies (b"": none ran) and leaves the reader at the next request."""
    reader = client.reader
    pos = reader._pos
    end, replies, _ = _run_core(client, reader._buf, pos, budget)
    if end == pos:
        return b""
    advance(reader, end)
    client.request_since = client.last_active
    return replies


def _run_core(client: Client, buf: bytes | bytearray, pos: int, budget: int) -> tuple[int, bytes, bool]:
    """`_core.execute_batch` from `buf[pos]` under the client's modes and frame limits:
    (where it stopped, the replies, whether records went to the AOF), the records appended."""
    if pos >= len(buf) or buf[pos] != 0x2A:  # `*`: only RESP arrays
        return pos, b"", False
    server = client.server
    mode = modes(server, client)
    if not mode:
        return pos, b"", False
    limits = client.reader.limits
    end, replies, aof, last, _ = _execute(buf, pos, server.db.collections, STORE_KINDS, mode,
                                          limits.max_args, limits.max_bulk, limits.max_request,
                                          budget, server.metrics.core.buf)
    if end != pos:
        if aof:
            server.aof.append(aof)  # type: ignore[union-attr]  # RECORD is set only with an AOF
        client.last_cmd = NAMES[last]
    return end, replies, bool(aof)


def advance(reader: RequestReader, end: int) -> None:
    """Move the framing past requests the core ran: its state is that of a request boundary
    (the hiredis reader, which was fed the bytes just consumed, is started afresh at `end`)."""
    reader._pos = reader._scan_from = end
    reader._reader = None
    reader._checked = False
    reader._walked = 0
    reader.inline = False


def replayer(server: Server) -> Callable[[RequestReader], int] | None:
    """For aof/loader.py: applies a run of the SET, FSET and DEL records the core runs, at the
    reader's position, into the server's dataset (as dispatch.apply_record would) and returns
    how many; None when the fast path is off."""
    if not ENABLED or _replay is None:
        return None

    def replay(reader: RequestReader) -> int:
        buf, pos = reader._buf, reader._pos
        if pos >= len(buf) or buf[pos] != 0x2A:
            return 0
        end, records = _replay(buf, pos, server.db.collections, STORE_KINDS)
        if end != pos:
            advance(reader, end)
        return records

    return replay
