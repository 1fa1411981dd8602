"""LEASE: the leader lease an operator renews (geoserver.lease; docs/operator.md#leader-lease)."""

from __future__ import annotations

from typing import Any

from geoserver.commands.base import Args, Ctx, Flag, command
from geoserver.errors import invalid_argument

MAX_LEASE_MS = 86_400_000  # a day: a longer lease is no fence at all


@command("lease", max_args=5, flags=Flag.ADMIN)
def cmd_lease(ctx: Ctx, argv: list[bytes]) -> Any:
    """LEASE | LEASE epoch milliseconds [SINCE clock] | LEASE OFF -- the leader lease: once
    given, writes are refused with `LEASE expired ...` when it lapses. `LEASE` reports state,
    epoch, remaining_ms and clock (this server's monotonic ms); a grant with SINCE clock lasts
    until clock + milliseconds (so a late-delivered grant cannot extend it); milliseconds 0
    revokes it and ends the epoch; an epoch below the highest seen is refused; OFF drops the
    gate. Not logged to the AOF: each member's own, in memory. Once a lease was given, SERVER
    and INFO's replication section also show lease_state, lease_epoch, lease_remaining_ms and
    lease_writes_refused (true/1 while writes get `LEASE expired`)."""
    lease = ctx.server.lease
    if len(argv) == 2:
        if argv[1].upper() != b"OFF":
            raise invalid_argument(argv[1])
        lease.off()
    elif len(argv) > 2:
        args = Args(argv, 1)
        epoch, ms = args.next_int(0), args.next_int(0, MAX_LEASE_MS)
        since = None
        if args.more():
            if args.next().upper() != b"SINCE":
                raise invalid_argument(argv[3])
            since = args.next_int(0)
            if args.more():
                raise invalid_argument(argv[args.pos])
        lease.grant(epoch, ms, since)
    info = lease.info()
    if ctx.json:
        return {"lease": info}
    return [x for kv in info.items() for x in (kv[0], kv[1])]
