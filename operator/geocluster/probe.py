"""Async client of geoserver for the operator: SERVER, AOFSHRINK, RESYNC, with timeouts.

Contract relied on (geoserver, Tile38-compatible): after ``OUTPUT json`` every reply is a JSON
string ``{"ok":true,...}`` or ``{"ok":false,"err":"..."}``. ``SERVER`` returns ``stats`` with
``aof_size``, ``aof_shrinking``, ``last_shrink_time``, ``last_shrink_result``, ``resyncs`` and,
on followers, ``following`` and ``caught_up``. ``AOFSHRINK`` and ``RESYNC`` return at once and
work in the background. An unreachable member is a finding (``reachable=False``), never raised.
With ``ca_file`` the connection is TLS, verifying the member's certificate with that CA (the
local runtime: by the address's host). With ``tls`` (a context from :func:`tls_context`, on
Kubernetes) it is TLS too, dialing the pod IP but verifying the certificate by ``server_name``
(the member's pod DNS name: certificates name pods, not their changing IPs).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .policy import Member

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 3.0
# geoserver has no CLIENT SETINFO; redis-py >= 7 spells "don't send it" driver_info=None.
_NO_CLIENT_SETINFO: dict[str, Any] = (
    {"driver_info": None}
    if "driver_info" in inspect.signature(aioredis.Redis.__init__).parameters
    else {"lib_name": None, "lib_version": None}
)


class ProbeError(Exception):
    """A member answered with an error, or could not be reached, for an action."""


def tls_context(ca_pem: str, cert_pem: str | None = None, key_pem: str | None = None) -> ssl.SSLContext:
    """A client context trusting ``ca_pem`` only, checking host names, presenting
    ``cert_pem``/``key_pem`` when given (members that require client certificates).
    ssl.SSLError (an OSError) or ValueError when the PEM is not usable."""
    context = ssl.create_default_context(cadata=ca_pem)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_pem and key_pem:
        _load_chain(context, cert_pem, key_pem)
    return context


def _load_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """load_cert_chain wants files: anonymous memory files where Linux has them (the key never
    touches a disk), else a private temporary directory removed at once."""
    if hasattr(os, "memfd_create"):
        fds = [os.memfd_create("geocluster-tls", 0) for _ in range(2)]
        try:
            for fd, pem in zip(fds, (cert_pem, key_pem), strict=True):
                os.write(fd, pem.encode())
            context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}")
        finally:
            for fd in fds:
                os.close(fd)
        return
    with tempfile.TemporaryDirectory() as tmp:  # mode 0700
        cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert.write_text(cert_pem)
        key.write_text(key_pem)
        context.load_cert_chain(cert, key)


class _NamedTLSConnection(aioredis.Connection):
    """TCP to the address given, TLS with a prepared context, verified by ``server_hostname``."""

    def __init__(self, *, tls_context: ssl.SSLContext, server_hostname: str, **kwargs: Any):
        self._tls_context, self._server_hostname = tls_context, server_hostname
        super().__init__(**kwargs)

    def _connection_arguments(self) -> Mapping:
        return {**super()._connection_arguments(), "ssl": self._tls_context,
                "server_hostname": self._server_hostname}  # fmt: skip


class Client:
    """One connection to one geoserver, in JSON output mode."""

    def __init__(self, address: str, password: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 ca_file: str | None = None, tls: ssl.SSLContext | None = None,
                 server_name: str | None = None):
        host, _, port = address.rpartition(":")
        self.address, self.password, self.timeout = address, password, timeout
        ca_tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": ca_file} if ca_file else {}
        self._redis = aioredis.Redis(
            host=host,
            port=int(port),
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            single_connection_client=True,
            protocol=2,
            # no retries: redis-py's default (3, exponential backoff) turned a refused connection
            # into a TimeoutError after the whole timeout; the next tick is the retry
            retry=Retry(NoBackoff(), 0),
            **_NO_CLIENT_SETINFO,
            **ca_tls,
        )
        if tls is not None:  # the pool makes its connection on first use, with these
            pool = self._redis.connection_pool
            pool.connection_class = _NamedTLSConnection
            pool.connection_kwargs.update(tls_context=tls, server_hostname=server_name or host)
        self._redis.response_callbacks.clear()  # replies are JSON strings, never redis-py types

    async def __aenter__(self) -> Client:
        try:
            if self.password:
                await self.command("AUTH", self.password)
            await self.command("OUTPUT", "json")
        except BaseException:
            await self._redis.aclose()  # __aexit__ does not run when __aenter__ fails
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._redis.aclose()

    async def command(self, *args: str) -> dict[str, Any]:
        """Send one command; raise ProbeError on ``ok:false`` or any transport problem."""
        try:
            async with asyncio.timeout(self.timeout):
                raw = await self._redis.execute_command(*args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise ProbeError(f"{self.address}: {type(exc).__name__}: {exc}") from exc
        return _decode(raw, self.address)


def _decode(raw: Any, address: str) -> dict[str, Any]:
    """JSON reply -> dict; a bare ``OK`` (RESP mode, e.g. before OUTPUT json) counts as ok."""
    if isinstance(raw, bytes | str) and raw in (b"OK", "OK"):
        return {"ok": True}
    try:
        reply = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise ProbeError(f"{address}: unexpected reply {raw!r}") from exc
    if not isinstance(reply, dict) or not reply.get("ok"):
        err = reply.get("err") if isinstance(reply, dict) else reply
        raise ProbeError(f"{address}: {err}")
    return reply


async def observe(
    name: str,
    role: Literal["leader", "follower"],
    address: str | None,
    password: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ca_file: str | None = None,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> Member:
    """SERVER of one member as a policy observation; failures become reachable=False."""
    if not address:
        return Member(name, role, None, reachable=False, error="no pod IP yet")
    try:
        async with Client(address, password, timeout, ca_file, tls, server_name) as client:
            stats = (await client.command("SERVER"))["stats"]
    except (ProbeError, KeyError) as exc:
        log.debug("probe of %s failed: %s", name, exc)
        return Member(name, role, address, reachable=False, error=str(exc))
    return Member(
        name,
        role,
        address,
        reachable=True,
        aof_size=_int(stats.get("aof_size")),
        caught_up=stats.get("caught_up") if role == "follower" else None,
        following=stats.get("following"),
        shrinking=bool(stats.get("aof_shrinking")),
        resyncs=_int(stats.get("resyncs")),
        last_shrink_time=float(stats.get("last_shrink_time") or 0.0),
        last_shrink_result=str(stats.get("last_shrink_result") or ""),
        caught_up_once=stats.get("caught_up_once") if role == "follower" else None,
        num_objects=_int(stats.get("num_objects")),
        replication_state=stats.get("replication_state"),
        num_hooks=_int(stats.get("num_hooks")),
        # a refusing follower's replication_error may meanwhile be a failed reconnect
        replication_error=stats.get("resync_refusal") or stats.get("replication_error") or None,
        pending_events=_int(stats.get("pending_events")),
    )


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


async def observe_all(
    targets: list[tuple[str, Literal["leader", "follower"], str | None]],
    password: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    ca_file: str | None = None,
    tls: ssl.SSLContext | None = None,
    server_names: Mapping[str, str] | None = None,
) -> list[Member]:
    """Probe every (name, role, address) concurrently; with ``tls``, member ``n`` is verified
    by ``server_names[n]``."""
    names = server_names or {}
    return list(await asyncio.gather(*(observe(n, r, a, password, timeout, ca_file, tls, names.get(n))
                                       for n, r, a in targets)))  # fmt: skip


ACTION_COMMANDS = {"shrink": "AOFSHRINK", "resync": "RESYNC"}


async def start_action(address: str, kind: str, password: str | None = None,
                       ca_file: str | None = None, tls: ssl.SSLContext | None = None,
                       server_name: str | None = None) -> None:
    """Start a policy action on a member: it replies at once and works in the background."""
    await send(address, ACTION_COMMANDS[kind], password=password, ca_file=ca_file, tls=tls,
               server_name=server_name)


async def send(address: str, *args: str, password: str | None = None, timeout: float = 5.0,
               ca_file: str | None = None, tls: ssl.SSLContext | None = None,
               server_name: str | None = None):
    """Run one command (AOFSHRINK, RESYNC, ...) on one member; raise ProbeError on failure."""
    async with Client(address, password, timeout, ca_file, tls, server_name) as client:
        return await client.command(*args)


# --- the leader lease (geoserver LEASE; docs/operator.md#leader-lease) ------------------------


@dataclass(frozen=True)
class LeaseInfo:
    """A member's `LEASE` reply: state (none/valid/expired/revoked), highest epoch seen."""

    state: str
    epoch: int
    remaining_ms: int
    clock: int  # the member's monotonic milliseconds when it answered


@dataclass(frozen=True)
class Renewal:
    """What a grant did. ``read_at``: when the member's clock was read (None: not read, so no
    grant was sent); the lease can end no later than ``read_at`` + its length, whether or not
    the grant arrived. ``info``: the reply after the grant (None when it failed: ``error``)."""

    read_at: datetime | None
    info: LeaseInfo | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.info is not None and self.error is None


def _lease(reply: dict[str, Any]) -> LeaseInfo:
    got = reply["lease"]
    return LeaseInfo(str(got["state"]), int(got["epoch"]), int(got["remaining_ms"]), int(got["clock"]))


async def lease_info(address: str, password: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                     ca_file: str | None = None, tls: ssl.SSLContext | None = None,
                     server_name: str | None = None) -> LeaseInfo | None:
    """`LEASE` of one member, or None when it cannot be read."""
    try:
        async with Client(address, password, timeout, ca_file, tls, server_name) as client:
            return _lease(await client.command("LEASE"))
    except (ProbeError, KeyError, TypeError, ValueError) as exc:
        log.debug("LEASE of %s failed: %s", address, exc)
        return None


async def grant_lease(address: str, epoch: int, ms: int, password: str | None = None,
                      timeout: float = DEFAULT_TIMEOUT, ca_file: str | None = None,
                      tls: ssl.SSLContext | None = None, server_name: str | None = None,
                      now: Callable[[], datetime] | None = None, adopt: bool = False) -> Renewal:
    """Read the member's clock, then `LEASE epoch ms SINCE clock` on the same connection; the
    time is taken after the reading arrived, so ``read_at`` + ms bounds the lease's end. ms 0
    revokes. ``adopt``: renew at the member's epoch when it is higher and was not revoked (the
    recorded epoch was lost, e.g. a recreated ConfigMap); a revoked one stays fenced. Never
    raises: failures are in the result (its ``info.epoch`` is the epoch granted)."""
    clock_now = now or (lambda: datetime.now(UTC))
    read_at = None
    try:
        async with Client(address, password, timeout, ca_file, tls, server_name) as client:
            reading = _lease(await client.command("LEASE"))
            read_at = clock_now()
            if adopt and reading.epoch > epoch and reading.state != "revoked":
                epoch = reading.epoch
            reply = await client.command("LEASE", str(epoch), str(ms), "SINCE", str(reading.clock))
            return Renewal(read_at, _lease(reply))
    except (ProbeError, KeyError, TypeError, ValueError) as exc:
        return Renewal(read_at, None, str(exc))
