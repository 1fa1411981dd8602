"""Connection commands as Tile38 defines them (internal/server/client.go, monitor.go): CLIENT
LIST|ID|GETNAME|SETNAME|KILL, MONITOR, and TIMEOUT seconds CMD ..., which dispatch rewrites to
its inner command with a deadline (`split_timeout`), as Tile38's rewriteTimeoutMsg does.

A command under TIMEOUT that runs past its deadline replies `timeout` (Tile38 checks the
deadline after the command and inside long loops; here it is checked after the command, and
Lua scripts check it every few thousand instructions). Writes refuse TIMEOUT.
"""

from __future__ import annotations

import contextlib
import contextvars
import socket
import time
import unicodedata
from typing import TYPE_CHECKING, Any

from geoserver.commands.base import Ctx, Flag, command
from geoserver.errors import ArityError, CommandError, ProtocolError, invalid_argument
from geoserver.protocol.framing import FrameLimits, RequestReader
from geoserver.protocol.resp import OK

if TYPE_CHECKING:
    from geoserver.server import Client, Server

# The deadline (time.monotonic()) of the command running now, set by dispatch for TIMEOUT.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)
TIMEOUT_ERROR = "timeout"
CLIENT_SYNTAX = "Syntax error, try CLIENT (LIST | KILL | GETNAME | SETNAME)"
NO_SUCH_CLIENT = "No such client"
BAD_NAME = "Client names cannot contain spaces, newlines or special characters."
# Not shown to MONITOR (Tile38's list: they carry passwords or are replication plumbing).
UNMONITORED = frozenset({"config", "auth", "follow", "slaveof", "replicaof", "replconf", "aof",
                         "aofmd5", "client", "monitor", "hello"})
# Tile38's text, sent before closing a non-loopback connection in protected mode.
DENIED = (
    b"-DENIED Tile38 is running in protected mode because protected mode is enabled, no bind "
    b"address was specified, no authentication password is requested to clients. In this mode "
    b"connections are only accepted from the loopback interface. If you want to connect from "
    b"external computers to Tile38 you may adopt one of the following solutions: 1) Just "
    b"disable protected mode sending the command 'CONFIG SET protected-mode no' from the "
    b"loopback interface by connecting to Tile38 from the same host the server is running, "
    b"however MAKE SURE Tile38 is not publicly accessible from internet if you do so. Use "
    b"CONFIG REWRITE to make this change permanent. 2) Alternatively you can just disable the "
    b"protected mode by editing the Tile38 configuration file, and setting the protected mode "
    b"option to 'no', and then restarting the server. 3) If you started the server manually "
    b"just for testing, restart it with the '--protected-mode no' option. 4) Setup a bind "
    b"address or an authentication password. NOTE: You only need to do one of the above "
    b"things in order for the server to start accepting connections from the outside.\r\n"
)


def split_timeout(argv: list[bytes]) -> tuple[list[bytes], float]:
    """`TIMEOUT seconds CMD ...` -> (the inner command, its monotonic deadline)."""
    if len(argv) < 3 or not argv[1]:
        raise ArityError("timeout")
    try:
        seconds = float(argv[1])
    except ValueError:
        raise invalid_argument(argv[1]) from None
    if not seconds >= 0:  # also refuses NaN
        raise invalid_argument(argv[1])
    return argv[2:], time.monotonic() + seconds


def check_deadline() -> None:
    deadline = DEADLINE.get()
    if deadline is not None and time.monotonic() > deadline:
        raise CommandError(TIMEOUT_ERROR)


@command("timeout", min_args=3, flags=Flag.NOAUTH | Flag.LOADING_OK)
def cmd_timeout(ctx: Ctx, argv: list[bytes]) -> Any:
    """TIMEOUT seconds command [arg ...] -- run a read command, replying `timeout` if it takes
    longer than `seconds`. Dispatch rewrites it before the table is consulted."""
    raise CommandError("TIMEOUT must be the outermost command")


def peer_is_loopback(peer: str) -> bool:
    return peer.startswith(("127.0.0.1:", "[::1]:", "::1:")) or not peer  # "" : unix socket


def protected(server: Server) -> bool:
    """Tile38's isProtected: `--protected-mode yes`, no bind address other than loopback, the
    `protected-mode` property not `no` and no requirepass."""
    cfg = server.config
    if not cfg.protected_mode_flag:
        return False
    if cfg.host not in ("", "127.0.0.1", "::1", "localhost"):
        return False
    return cfg.protected_mode != "no" and not cfg.requirepass


def set_keepalive(transport: Any, seconds: int) -> None:
    """Tile38's `keepalive`: TCP keep-alive probes after `seconds` idle (0: off)."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6) or seconds <= 0:
        return
    with contextlib.suppress(OSError):  # a socket already closed by the peer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, seconds)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, seconds)


def client_line(client: Client, now: float) -> str:
    return (f"id={client.id} addr={client.peer} name={client.name} "
            f"age={int(now - client.connected_at)} idle={int(now - client.last_active)} "
            f"cmd={client.last_cmd or 'NULL'}")


def _typed(value: str) -> Any:
    """Tile38's tryParseType for CLIENT LIST in JSON: numbers become numbers."""
    try:
        return int(value)
    except ValueError:
        return value


@command("client", min_args=2)
def cmd_client(ctx: Ctx, argv: list[bytes]) -> Any:
    """CLIENT LIST | CLIENT ID | CLIENT GETNAME | CLIENT SETNAME name |
    CLIENT KILL [ADDR] ip:port | CLIENT KILL ID id"""
    sub = argv[1].decode("utf-8", "replace").lower()
    me = ctx.client
    if sub in ("list", "id", "getname") and len(argv) != 2:
        raise ArityError("client")
    if sub == "list":
        now = time.monotonic()
        lines = [client_line(c, now) for c in sorted(ctx.server.clients, key=lambda c: c.id)]
        if ctx.json:
            return {"list": [{k: _typed(v) for k, _, v in (w.partition("=") for w in line.split(" "))}
                             for line in lines]}
        return "".join(line + "\n" for line in lines)
    if sub == "id":
        ident = me.id if me is not None else 0
        return {"id": ident} if ctx.json else ident
    if sub == "getname":
        name = me.name if me is not None else ""
        return {"name": name} if ctx.json else name
    if sub == "setname":
        if len(argv) != 3:
            raise ArityError("client")
        if any(b < 0x21 or b > 0x7E for b in argv[2]):
            raise CommandError(BAD_NAME)
        if me is not None:
            me.name = argv[2].decode()
        return {} if ctx.json else OK
    if sub == "kill":
        return _kill(ctx, argv)
    raise CommandError(CLIENT_SYNTAX)


def _kill(ctx: Ctx, argv: list[bytes]) -> Any:
    """Tile38's argument rules: `ip:port`, `ADDR ip:port` or `ID id`, exactly one of them."""
    if len(argv) < 3:
        raise ArityError("client")
    addr = ident = None
    i = 2
    while i < len(argv):
        if addr is not None or ident is not None:
            raise ArityError("client")
        word = argv[i].decode("utf-8", "replace")
        if ":" in word:
            addr = word
        elif word.lower() in ("addr", "id"):
            i += 1
            if i == len(argv):
                raise ArityError("client")
            value = argv[i].decode("utf-8", "replace")
            addr, ident = (value, None) if word.lower() == "addr" else (None, value)
        else:
            raise CommandError(NO_SUCH_CLIENT)
        i += 1
    victims = [c for c in ctx.server.clients
               if (ident is not None and str(c.id) == ident) or (addr is not None and c.peer == addr)]
    if not victims:
        raise CommandError(NO_SUCH_CLIENT)
    for victim in victims:
        victim.close()
    return {} if ctx.json else OK


@command("monitor", max_args=1)
def cmd_monitor(ctx: Ctx, argv: list[bytes]) -> Any:
    """MONITOR -- stream every command the server runs (`+<time> [0 <addr>] "arg" ...`) until
    the connection sends anything (QUIT gets `+OK`) or closes."""
    client = ctx.client
    if client is None or not client.resp_conn:
        raise CommandError("MONITOR needs a RESP connection")
    client.monitoring = True
    ctx.server.monitors.add(client)
    return OK


def monitor_input(client: Client, data: bytes) -> None:
    """Whatever a monitoring connection sends ends it; QUIT is answered first (Tile38)."""
    client.server.monitors.discard(client)
    reader = RequestReader(FrameLimits(16, 1024, 1024, 4096))
    reader.feed(data)
    try:
        argv = reader.next()
    except ProtocolError:
        argv = None
    if argv and argv[0].lower() == b"quit" and client.transport is not None:
        client.transport.write(b"+OK\r\n")
    client.close()


def go_quote(arg: bytes) -> str:
    """Go's strconv.Quote of an argument, as Tile38 prints it to MONITOR."""
    out = ['"']
    for ch in arg.decode("utf-8", "surrogateescape"):
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0xDC80 <= code <= 0xDCFF:  # an undecodable byte
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code > 0x7F and not (ch.isprintable() or unicodedata.category(ch) == "Zs"):
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_SHORT = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def send_monitor(server: Server, source: str, argv: list[bytes]) -> None:
    """One MONITOR line to every monitoring connection (`source`: peer address or `lua`)."""
    if argv[0].decode("utf-8", "replace").lower() in UNMONITORED:
        return
    line = f"+{time.time():.6f} [0 {source}] {' '.join(go_quote(a) for a in argv)}\r\n".encode()
    for watcher in list(server.monitors):
        if watcher.transport is None or watcher.transport.is_closing():
            server.monitors.discard(watcher)
        else:
            watcher.transport.write(line)
