"""Live migration (``bootstrap.fromLeader``): the probe-side steps both runtimes share.

The new leader follows the old one (a running Tile38 or geoserver) over the replication
protocol until it is detached. :func:`detach` ends that, in this order, so no write the old
leader acknowledged is lost:

1. ``READONLY yes`` on the old leader: from now on its clients get ``read only`` errors (they
   should move to the new leader, as after a switchover). ``force`` goes on without it (an old
   leader that is gone or refuses); writes it acknowledged after the last copied byte are lost.
2. Wait until the new leader's ``aof_size`` equals the old one's: it has every byte.
3. ``FOLLOW no one`` and ``READONLY no`` on the new leader: it takes writes.

When step 2 or 3 fails, the old leader gets ``READONLY no`` again (it takes writes, the
migration goes on) and :class:`DetachError` says why. :func:`follow` points the new leader at
the old one (Kubernetes: the pods start following their own cluster's leader, so the operator
re-points it). The local runtime (``localbackup``) and the kopf timer (``handlers_bootstrap``)
both call these; what to do when is decided in ``bootstrap_state``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal

from . import probe
from .policy import Member

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0


class DetachError(Exception):
    """The detach did not happen; the old leader takes writes again (if it was fenced)."""


@dataclass(frozen=True)
class Endpoint:
    """One geoserver or Tile38 to talk to, and how."""

    name: str
    address: str  # host:port
    password: str | None = None
    ca_file: str | None = None  # the local runtime's TLS
    tls: ssl.SSLContext | None = None  # Kubernetes' TLS, verified by server_name
    server_name: str | None = None

    async def send(self, *args: str) -> Any:
        return await probe.send(self.address, *args, password=self.password, ca_file=self.ca_file,
                                tls=self.tls, server_name=self.server_name)

    def client(self, timeout: float = PROBE_TIMEOUT) -> probe.Client:
        """One connection (``async with``), for a sequence of commands."""
        return probe.Client(self.address, self.password, timeout, self.ca_file, self.tls, self.server_name)

    async def observe(self, role: Literal["leader", "follower"] = "leader",
                      timeout: float = PROBE_TIMEOUT) -> Member:
        """SERVER as a Member (``follower``: with caught_up; a reachable=False one on failure)."""
        return await probe.observe(self.name, role, self.address, self.password, timeout,
                                   self.ca_file, self.tls, self.server_name)


@dataclass(frozen=True)
class Detached:
    """A detach that happened."""

    aof_size: int | None  # the new leader's, equal to the old one's (unless forced)
    write_pause_ms: int  # READONLY yes on the old leader -> the new one takes writes
    fenced: bool  # the old leader was made read-only (False only with force)


async def follow(new: Endpoint, old_address: str, old_password: str | None) -> None:
    """Make ``new`` follow the old leader: its password first (geoserver sends leaderauth only
    to a leader an authenticated client named, so ``new`` needs a password of its own), then
    FOLLOW. An empty leaderauth keeps the cluster's own password from the old server."""
    host, _, port = old_address.rpartition(":")
    await new.send("CONFIG", "SET", "leaderauth", old_password or "")
    await new.send("FOLLOW", host, port)


async def detach(old: Endpoint, new: Endpoint, *, force: bool = False, timeout: float = 30.0,
                 poll: float = 0.005) -> Detached:
    """Fence ``old``, wait until ``new`` has all of its AOF, make ``new`` a writable leader. One
    connection to each is held throughout (no reconnect, AUTH and OUTPUT per poll while
    clients wait)."""
    fenced = False
    started = time.monotonic()
    try:
        async with contextlib.AsyncExitStack() as stack:
            target = await stack.enter_async_context(new.client())
            source: probe.Client | None = None
            try:
                source = await stack.enter_async_context(old.client())
                await source.command("READONLY", "yes")
                fenced, started = True, time.monotonic()
            except probe.ProbeError as exc:
                if not force:
                    raise DetachError(f"cannot make the old leader read-only ({exc}); detach with "
                                      "force to go on anyway") from None
                log.warning("detach with force: the old leader is not fenced: %s", exc)
            deadline = time.monotonic() + timeout
            while True:
                want = await _aof_size(source) if source is not None else None
                have = await _aof_size(target)
                if (want is not None and have == want) or (force and want is None):
                    break
                if want is None and source is not None and not force:
                    raise DetachError("the old leader stopped answering")
                if time.monotonic() > deadline:
                    raise DetachError(f"{new.name} at aof_size {have}, the old leader at {want} "
                                      f"after {timeout:.0f}s")
                await asyncio.sleep(poll)
            await target.command("FOLLOW", "no", "one")
            await target.command("READONLY", "no")
    except (probe.ProbeError, DetachError) as exc:
        if fenced:
            try:
                await old.send("READONLY", "no")
            except probe.ProbeError as again:
                log.warning("detach: READONLY no on the old leader failed: %s", again)
        raise DetachError(str(exc)) from None
    return Detached(have, round((time.monotonic() - started) * 1000), fenced)


async def _aof_size(client: probe.Client) -> int | None:
    """aof_size from SERVER; None when the server no longer answers (the force path)."""
    try:
        return (await client.command("SERVER"))["stats"].get("aof_size")
    except probe.ProbeError:
        return None
