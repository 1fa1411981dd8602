"""Leader side of `AOF pos`: stream the file from `pos`, then every flushed chunk live.

Catch-up reads the file in bounded chunks and respects the socket's flow control. The switch
to live mode happens synchronously when the stream has sent every flushed byte, so no record
is skipped or sent twice: later flushes reach the stream through the AOF's listener list.
A stream is closed when the AOF file is replaced (shrink), when the follower sends anything,
or when a live follower falls too far behind (it reconnects and resumes by prefix).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geoserver.server import Client, Server

log = logging.getLogger(__name__)

CHUNK = 1 << 20
MAX_LIVE_BACKLOG = 64 << 20


class AofStream:
    def __init__(self, server: Server, client: Client, pos: int) -> None:
        self.server = server
        self.client = client
        self.pos = pos
        self.closed = False
        assert server.aof is not None
        self.generation = server.aof.generation  # the file `pos` was checked against
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task | None = None
        host, _, port = client.peer.rpartition(":")
        self.peer_ip = host
        self.peer_port = client.replica_port or (int(port) if port.isdigit() else 0)

    def start(self) -> None:
        aof = self.server.aof
        if aof is None or aof.generation != self.generation:
            # a shrink swapped the file between `AOF pos` and this start (the +OK went out at
            # the end of that loop turn): `pos` belongs to the old file; the follower retries
            self.close("AOF replaced before the stream started")
            return
        self.server.live_streams.add(self)
        self._task = asyncio.get_running_loop().create_task(self._catch_up())
        log.info("follower streaming", extra={"peer": self.client.peer, "pos": self.pos})

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    async def _catch_up(self) -> None:
        aof = self.server.aof
        transport = self.client.transport
        assert aof is not None and transport is not None
        try:
            while not self.closed:
                aof.flush()
                if self.pos >= aof.flushed:
                    aof.listeners.append(self._push)
                    return
                chunk = aof.read(self.pos, min(CHUNK, aof.flushed - self.pos))
                if not chunk:
                    raise OSError("AOF shorter than its recorded size")
                self.pos += len(chunk)
                transport.write(chunk)
                await self._writable.wait()
        except Exception as exc:
            self.close(f"stream failed: {exc}")

    def _push(self, data: bytes) -> None:
        transport = self.client.transport
        if self.closed or transport is None:
            return
        if transport.get_write_buffer_size() > MAX_LIVE_BACKLOG:
            self.close("follower too slow")
            return
        self.pos += len(data)
        transport.write(data)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        aof = self.server.aof
        if aof is not None and self._push in aof.listeners:
            aof.listeners.remove(self._push)
        self.server.live_streams.discard(self)
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.client.stream = None
        self.client.close()
        log.info("follower stream closed", extra={"peer": self.client.peer, "reason": reason})
