"""`tile38-server`: Tile38's own command line (cmd/tile38-server/main.go), mapped onto the same
ServerConfig as `geoserver`, so Helm values and scripts written for Tile38 start geoserver
unchanged (`tile38-server -h 0.0.0.0 -p 9851 -d /data --appendonly yes`).

Go's flag package accepts `-name` and `--name`, `-name value` and `-name=value`; so does this
parser. `-h` is the listening host, as in Tile38 (`--help` prints the usage). Flags that only
tune Go's runtime or Tile38's profiling are accepted and ignored with a warning; what each flag
does here is in docs/migration.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from geoserver import TILE38_COMPAT_VERSION, __version__
from geoserver.cli import serve, setup_logging

if TYPE_CHECKING:
    from geoserver.config import ServerConfig

log = logging.getLogger("geoserver.tile38_cli")

USAGE = """tile38-server version: {version} (geoserver {geoserver})

Usage: tile38-server [-p port]

Basic Options:
  -h hostname : listening host
  -p port     : listening port (default: 9851)
  -d path     : data directory (default: data)
  -s socket   : listen on unix socket file
  -l encoding : set log encoding to json or text (default: text)
  -o output   : auto set client output to json or resp (default: resp)
  -q          : no logging. totally silent output
  -v          : enable verbose logging
  -vv         : enable very verbose logging

Advanced Options:
  --pidfile path          : file that contains the pid
  --appendonly yes/no     : AOF persistence (default: yes)
  --appendfilename path   : AOF path (default: data/appendonly.aof)
  --queuefilename path    : Event queue path (default:data/queue.db)
  --http-transport yes/no : HTTP transport (default: yes)
  --protected-mode yes/no : protected mode (default: no)
  --metrics-addr addr     : the listening addr for Prometheus metrics
  --nohup                 : do not exit on SIGHUP
  --spinlock              : use a spinlock. For very write-heavy workloads

Developer Options:
  --dev                   : enable developer mode
"""

_YES = {"yes": True, "no": False}
_TRUE = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# Accepted for compatibility, no effect here (Go runtime and profiling knobs).
_IGNORED_VALUE = ("threads", "evio", "pprofport", "cpuprofile", "memprofile")
_IGNORED_BOOL = ("spinlock",)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"tile38-server: {message}\nRun 'tile38-server --help' for usage.\n")
        raise SystemExit(2)


def _choice(table: dict[str, bool], what: str):
    def parse(text: str) -> bool:
        try:
            return table[text.lower()]
        except KeyError:
            raise argparse.ArgumentTypeError(f"{what} must be 'yes' or 'no'") from None

    return parse


def _both(name: str) -> list[str]:
    """Go's flag package: `-name` and `--name` are the same flag."""
    return [f"-{name}", f"--{name}"]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tile38-server", add_help=False, allow_abbrev=False)
    p.add_argument(*_both("h"), dest="host", default="", metavar="hostname")
    p.add_argument(*_both("p"), dest="port", type=int, default=9851, metavar="port")
    p.add_argument(*_both("d"), dest="dir", default="data", metavar="path")
    p.add_argument(*_both("s"), dest="socket", default="", metavar="socket")
    p.add_argument(*_both("l"), dest="log_encoding", choices=["json", "text"], default="text")
    p.add_argument(*_both("o"), dest="output", type=str.lower, choices=["json", "resp"], default="resp")
    p.add_argument(*_both("q"), dest="quiet", action="store_true")
    p.add_argument(*_both("v"), dest="verbose", action="store_true")
    p.add_argument(*_both("vv"), dest="very_verbose", action="store_true")
    p.add_argument(*_both("vvv"), dest="very_verbose", action="store_true")
    p.add_argument(*_both("pidfile"), default="")
    p.add_argument(*_both("appendonly"), type=_choice(_YES, "appendonly"), default=True)
    p.add_argument(*_both("appendfilename"), default="")
    p.add_argument(*_both("queuefilename"), default="")
    p.add_argument(*_both("http-transport"), dest="http_transport",
                   type=_choice(_TRUE, "http-transport"), default=True)
    p.add_argument(*_both("protected-mode"), dest="protected_mode",
                   type=_choice(_YES, "protected-mode"), default=False)
    p.add_argument(*_both("metrics-addr"), dest="metrics_addr", default="")
    p.add_argument(*_both("nohup"), action="store_true")
    p.add_argument(*_both("dev"), action="store_true")
    for name in _IGNORED_VALUE:
        p.add_argument(*_both(name), dest=name, default=None)
    for name in _IGNORED_BOOL:
        p.add_argument(*_both(name), dest=name, action="store_true")
    p.add_argument("--help", action="store_true")
    p.add_argument("--version", action="store_true")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The ServerConfig a Tile38 command line means. `--appendfilename` is a path (relative
    to the working directory, as in Tile38), not a name inside `-d`."""
    from geoserver.config import ServerConfig

    data = Path(args.dir)
    aof = Path(args.appendfilename).absolute() if args.appendfilename else None
    cfg = ServerConfig(
        host=args.host, port=0 if args.socket else args.port, dir=data,
        appendonly=args.appendonly, appendfilename=str(aof) if aof else "appendonly.aof",
        metrics_addr=args.metrics_addr or None, json_output=args.output == "json",
        unix_socket=args.socket, http_transport=args.http_transport,
        protected_mode_flag=args.protected_mode,
        queue_path=args.queuefilename or str(data / "queue.db"),
    )
    return cfg


def log_level(args: argparse.Namespace) -> int:
    if args.quiet:
        return logging.CRITICAL + 10  # Tile38's -q: totally silent
    if args.verbose or args.very_verbose:
        return logging.DEBUG
    return logging.INFO


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:
        raise SystemExit("tile38-server: interrupted") from None


def _main(argv: list[str] | None) -> None:
    args = parse_args(argv)
    if args.help:
        sys.stdout.write(USAGE.format(version=TILE38_COMPAT_VERSION, geoserver=__version__))
        return
    if args.version:
        sys.stdout.write(f"tile38-server version: {TILE38_COMPAT_VERSION} (geoserver {__version__})\n")
        return
    setup_logging(log_level(args), json=args.log_encoding == "json")
    for name in (*_IGNORED_VALUE, *_IGNORED_BOOL):
        if getattr(args, name):
            log.warning("flag has no effect in geoserver", extra={"flag": name})
    if args.queuefilename:
        log.warning("--queuefilename is accepted; hook events are not queued in a file yet",
                    extra={"path": args.queuefilename})
    cfg = config_from_args(args)
    pidfile = _write_pidfile(args.pidfile) if args.pidfile else None
    signal.signal(signal.SIGQUIT, lambda signum, frame: _quit_now(pidfile))
    try:
        serve(cfg, "tile38-server")
    finally:
        if pidfile is not None:
            pidfile.unlink(missing_ok=True)


def _write_pidfile(path: str) -> Path | None:
    """Tile38 writes "<pid>" and a newline, and goes on serving when it cannot (a warning)."""
    pidfile = Path(path)
    try:
        pidfile.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning("pidfile: cannot write it", extra={"path": path, "error": exc.strerror or str(exc)})
        return None
    return pidfile


def _quit_now(pidfile: Path | None) -> None:
    """SIGQUIT: Tile38 removes the pid file and exits 3 at once (SIGTERM and SIGINT shut down
    cleanly). Python's default would die by the signal and leave the pid file behind."""
    if pidfile is not None:
        pidfile.unlink(missing_ok=True)
    log.warning("signal: quit")
    logging.shutdown()
    os._exit(3)


if __name__ == "__main__":
    main()
