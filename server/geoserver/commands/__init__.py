"""Command families. Importing this package fills the one command table (`TABLE`)."""

from geoserver.commands import json, keys, replication, search, server, testcmd  # noqa: F401  (registration)
from geoserver.commands import clients, scripts  # noqa: F401  (CLIENT MONITOR TIMEOUT, EVAL)
from geoserver.commands import fence, pubsub  # noqa: F401  (registration; after search: FENCE)
from geoserver.commands.base import TABLE, Command, Flag

__all__ = ["TABLE", "Command", "Flag"]
