"""Command families. Importing this package fills the one command table (`TABLE`).

fence.py gives NEARBY/WITHIN/INTERSECTS their FENCE form by wrapping search.py's entries; it
imports search itself, so the order of the imports below does not matter.
"""

from geoserver.commands import (  # noqa: F401  (registration)
    clients,
    fence,
    json,
    keys,
    lease,
    pubsub,
    replication,
    scripts,
    search,
    server,
    testcmd,
)
from geoserver.commands.base import TABLE, Command, Flag

__all__ = ["TABLE", "Command", "Flag"]
