"""Every error text the server replies with, and the small exception tree that carries them.

Commands raise; only the reply encoders at the edge turn an exception into `-ERR ...` (RESP)
or `{"ok":false,"err":"..."}` (JSON). Texts follow Tile38 1.30 so clients can match on them.

    GeoServerError
    ├── ProtocolError        malformed RESP/HTTP: reply once, then close the connection
    └── CommandError         a command refused its input; the connection keeps serving
        ├── ArityError       wrong number of arguments (RESP and JSON texts differ)
        ├── AuthError        authentication required / invalid password
        ├── NotLeaderError   writes sent to a follower
        └── CatchingUpError  reads sent to a follower that never caught up
"""

from __future__ import annotations

KEY_NOT_FOUND = "key not found"
ID_NOT_FOUND = "id not found"
ID_ALREADY_EXISTS = "id already exists"
NOT_LEADER = "not the leader"
READ_ONLY = "read only"
CATCHING_UP = "catching up to leader"
NOT_CAUGHT_UP = "not caught up"
AUTH_REQUIRED = "authentication required"
INVALID_PASSWORD = "invalid password"
LOADING = "LOADING Tile38 is loading the dataset in memory"  # Tile38's text: clients match it
AOF_DISABLED = "aof disabled"
OOM = "OOM command not allowed when used memory > 'maxmemory'"
POS_TOO_BIG = "pos is too big, must be less that the aof_size of leader"  # sic, Tile38's text
EOF_ERROR = "EOF"


class GeoServerError(Exception):
    """Base of every error the server turns into a reply."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(GeoServerError):
    """The byte stream cannot be parsed; the connection is closed after the reply."""


class CommandError(GeoServerError):
    """A command rejected its arguments or the current state."""


class ArityError(CommandError):
    """RESP says `wrong number of arguments for 'x' command`; JSON `invalid number of arguments`."""

    def __init__(self, command: str) -> None:
        super().__init__("invalid number of arguments")
        self.command = command.lower()

    def resp_message(self) -> str:
        return f"wrong number of arguments for '{self.command}' command"


class AuthError(CommandError):
    """The client has not authenticated, or sent a wrong password."""


class NotLeaderError(CommandError):
    def __init__(self) -> None:
        super().__init__(NOT_LEADER)


class CatchingUpError(CommandError):
    def __init__(self) -> None:
        super().__init__(CATCHING_UP)


def invalid_argument(token: bytes | str) -> CommandError:
    """The error for one bad token, quoted as the client sent it."""
    if isinstance(token, bytes):
        token = token.decode("utf-8", "replace")
    return CommandError(f"invalid argument '{token}'")


def unknown_command(name: bytes | str) -> CommandError:
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return CommandError(f"unknown command '{name}'")


def too_many_arguments(count: int, limit: int) -> ProtocolError:
    return ProtocolError(f"Protocol error: too many arguments ({count}, limit {limit})")


def argument_too_large(size: int, limit: int) -> ProtocolError:
    return ProtocolError(f"Protocol error: argument too large ({size} bytes, limit {limit})")


def request_too_large(limit: int) -> ProtocolError:
    return ProtocolError(f"Protocol error: request too large (limit {limit} bytes)")


def inline_too_big(limit: int) -> ProtocolError:
    return ProtocolError(f"Protocol error: too big inline request (limit {limit} bytes)")


def duplicate_argument(token: str) -> CommandError:
    return CommandError(f"duplicate argument '{token.upper()}'")
