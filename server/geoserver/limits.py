"""Pure decisions behind the connection limits (docs/security.md): which framing limits a
client gets, when its unsent output gets it disconnected, when an idle or unauthenticated
connection is closed, and how many clients the file-descriptor limit allows. Time is passed
in; the Client in server.py only acts on the answers."""

from __future__ import annotations

import resource
from dataclasses import dataclass

from geoserver.config import OutputLimit, ServerConfig
from geoserver.protocol.framing import FrameLimits

FD_RESERVE = 32  # descriptors kept for the AOF, listeners, follower links and shrink files


def frame_limits(config: ServerConfig, authed: bool) -> FrameLimits:
    """Before AUTH (when a password is set) a client gets Redis 7's much smaller limits."""
    if authed or not config.requirepass:
        return FrameLimits(config.max_request_args, config.max_request_size,
                           config.max_inline_size, config.max_request_size)
    return FrameLimits(config.preauth_max_args, config.preauth_max_bulk,
                       min(config.max_inline_size, config.preauth_max_bulk), config.preauth_max_bulk)


@dataclass(slots=True)
class OutputGuard:
    """Redis's client-output-buffer-limit for one client: over `hard` at once, or over `soft`
    continuously for `soft_seconds`, the client must go."""

    limit: OutputLimit
    over_soft_since: float | None = None

    def check(self, unsent: int, now: float) -> str:
        """Why the client must be disconnected now, or ""."""
        limit = self.limit
        if limit.hard and unsent > limit.hard:
            return f"output buffer {unsent} bytes over the hard limit {limit.hard}"
        if limit.soft and unsent > limit.soft:
            if self.over_soft_since is None:
                self.over_soft_since = now
            elif now - self.over_soft_since >= limit.soft_seconds:
                return (f"output buffer {unsent} bytes over the soft limit {limit.soft} "
                        f"for {limit.soft_seconds} s")
        else:
            self.over_soft_since = None
        return ""


def idle_reason(config: ServerConfig, authed: bool, connected_at: float, last_active: float,
                now: float) -> str:
    """Why a connection that is not streaming the AOF should be closed now, or ""."""
    unauthenticated = bool(config.requirepass) and not authed
    if unauthenticated and config.auth_timeout and now - connected_at >= config.auth_timeout:
        return f"not authenticated within {config.auth_timeout} s"
    if config.timeout and now - last_active >= config.timeout:
        return f"idle for {config.timeout} s"
    return ""


def request_reason(config: ServerConfig, http: bool, since: float, now: float) -> str:
    """Why a connection whose request began arriving at `since` and is still incomplete should
    be closed now (a slow trickle, slow-loris), or "". HTTP counts from the connection's start."""
    limit = config.http_request_timeout if http else config.request_timeout
    if limit and now - since >= limit:
        return f"{'HTTP ' if http else ''}request not complete within {limit} s"
    return ""


def client_budget(maxclients: int) -> tuple[int, str]:
    """Clients the descriptor limit allows (raising the soft limit toward the hard one first,
    as Redis does), and a warning when `maxclients` had to be reduced."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = maxclients + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY or soft >= want:
        return maxclients, ""
    allowed = max(1, soft - FD_RESERVE)
    return allowed, (f"maxclients {maxclients} needs {want} file descriptors but the limit is "
                     f"{soft}: maxclients reduced to {allowed}")
