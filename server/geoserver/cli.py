"""`geoserver` command line, flags in the spirit of tile38-server."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from geoserver import __version__

if TYPE_CHECKING:
    from geoserver.config import ServerConfig
# The rest is imported in main(): a Ctrl-C while it loads is then one line, not a traceback.


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from geoserver.config import PROPERTIES, ServerConfig

    p = argparse.ArgumentParser(
        prog="geoserver",
        description="A Tile38-compatible geospatial server: RESP and HTTP on one port, "
        "JSON replies, AOF persistence, leader/follower replication.",
    )
    p.add_argument("-H", "--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("-p", "--port", type=int, default=9851, help="port to listen on (default %(default)s)")
    p.add_argument("--tls-port", type=int, default=0, metavar="PORT",
                   help="with --tls-cert-file: serve TLS on this port and plaintext on --port "
                   "(default 0: --port itself is TLS-only)")
    p.add_argument("-d", "--dir", type=Path, default=Path("data"),
                   help="data directory: AOF and config file (default %(default)s)")
    p.add_argument("--appendonly", choices=["yes", "no"], default="yes", help="keep an AOF (default yes)")
    p.add_argument("--appendfsync", choices=["always", "everysec", "no"], default=None,
                   help="when the AOF is fsynced (default: as CONFIG REWRITE saved it, else everysec)")
    p.add_argument("--appendfilename", default="appendonly.aof", help="AOF file name inside --dir")
    p.add_argument("--requirepass", default=None,
                   help="password clients must AUTH with (default $GEOSERVER_REQUIREPASS; the "
                   "environment keeps it out of the process list). Given, even empty, it overrides "
                   "the one CONFIG REWRITE saved; not given, the saved one is used")
    p.add_argument("--leaderauth", default=None,
                   help="password this follower sends to its leader (default $GEOSERVER_LEADERAUTH; "
                   "overrides the saved one as --requirepass does)")
    p.add_argument("--follow", metavar="HOST:PORT", default="",
                   help="follow this leader (same as FOLLOW host port; persisted)")
    p.add_argument("--metrics-addr", metavar="HOST:PORT", default=None,
                   help="also serve Prometheus /metrics and /healthz on this address")
    p.add_argument("--max-request-size", default=None,
                   help="largest request in bytes, larger ones close the connection "
                   "(default 64 MiB, or the value saved by CONFIG REWRITE)")
    limits = p.add_argument_group("limits", "every CONFIG property also as a flag (docs/security.md)")
    for name, prop in PROPERTIES.items():
        if prop.flag:
            limits.add_argument(f"--{name}", dest=_dest(name), default=None, metavar="VALUE",
                                help=f"{prop.help} (default {getattr(ServerConfig, _dest(name))})")
    p.add_argument("-o", "--output", choices=["json", "resp"], default="resp",
                   help="default reply format for RESP connections (HTTP is always JSON)")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"geoserver {__version__}")
    return p.parse_args(argv)


class KeyValueFormatter(logging.Formatter):
    """`time level logger message key=value ...`: structured fields from `extra=`."""

    _RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in self._RESERVED}
        if extras:
            base += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return base


class JsonFormatter(logging.Formatter):
    """One JSON object per line (`tile38-server -l json`): time, level, logger, message and
    the structured fields from `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        entry = {"time": self.formatTime(record), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        entry.update({k: v for k, v in vars(record).items() if k not in KeyValueFormatter._RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def _dest(name: str) -> str:
    return name.replace("-", "_")


def setup_logging(level: int, json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else
                         KeyValueFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def serve(cfg: ServerConfig, prog: str) -> None:
    """Run the server; start-up failures (a busy port, an unreadable directory) and Ctrl-C
    before the signal handlers are in place end with one line on stderr, not a traceback."""
    from geoserver.aof.loader import AofCorruptError, LegacyAofError

    try:
        from geoserver.server import run

        run(cfg)
    except (AofCorruptError, LegacyAofError) as exc:
        raise SystemExit(f"{prog}: cannot load the AOF: {exc}") from None
    except KeyboardInterrupt:
        raise SystemExit(f"{prog}: interrupted") from None
    except OSError as exc:
        where = cfg.unix_socket or f"{cfg.host or '*'}:{cfg.port}"
        raise SystemExit(f"{prog}: cannot start on {where}: {exc.strerror or exc}") from None


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    from geoserver.config import PROPERTIES, ServerConfig

    cfg = ServerConfig(
        host=args.host, port=args.port, dir=args.dir, appendonly=args.appendonly == "yes",
        appendfsync=args.appendfsync or "everysec",
        appendfilename=args.appendfilename,
        metrics_addr=args.metrics_addr, json_output=args.output == "json", tls_port=args.tls_port,
    )
    if args.tls_port and args.tls_port == args.port:
        raise SystemExit("geoserver: --tls-port must differ from --port (0: --port is TLS)")
    for name, env in (("requirepass", "GEOSERVER_REQUIREPASS"), ("leaderauth", "GEOSERVER_LEADERAUTH")):
        value = getattr(args, name)
        value = os.environ.get(env) if value is None else value
        if value is not None:  # given, even if empty: it overrides the persisted config
            setattr(cfg, name, value)
            cfg.given.add(name)
    if args.appendfsync is not None:
        cfg.given.add("appendfsync")
    for name in PROPERTIES:
        value = getattr(args, _dest(name), None)
        if value is None or name in ("requirepass", "leaderauth", "appendfsync"):
            continue
        try:
            cfg.set_property(name, str(value))
        except ValueError as exc:
            raise SystemExit(f"geoserver: invalid --{name} {value!r}: {exc}") from None
        cfg.given.add(name)
    if args.follow:
        host, sep, port = args.follow.rpartition(":")
        if not sep or not port.isdigit():
            raise SystemExit(f"geoserver: --follow wants HOST:PORT, got {args.follow!r}")
        cfg.follow_host, cfg.follow_port = host, int(port)
    return cfg


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:
        raise SystemExit("geoserver: interrupted") from None


def _main(argv: list[str] | None) -> None:
    args = parse_args(argv)
    setup_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO)
    cfg = config_from_args(args)
    serve(cfg, "geoserver")
