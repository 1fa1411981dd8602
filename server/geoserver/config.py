"""Server settings: command-line flags plus the persistent JSON config file (`<dir>/config`),
which keeps what CONFIG SET / FOLLOW / READONLY change so a restart resumes the same role.

Every tunable is declared once in `PROPERTIES`: its parser, default and help. CONFIG GET/SET,
the `--<name>` flags (cli.py), the config file and docs/security.md's table all derive from it.
A setting given by flag or environment wins over the file (`given`).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from geoserver.aof.log import private_file
from geoserver.delivery.policy import parse_timeout
from geoserver.tls import parse_auth_clients, parse_yes_no

log = logging.getLogger(__name__)

_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|m|mb|g|gb)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2, "g": 1000**3, "gb": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from `1073741824`, `64mb`, `1gb`, `16kb` (Redis units: k = 1000, kb = 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]


def parse_mem_size(text: str) -> int:
    """Tile38's maxmemory: bytes, or kb / mb / gb in any case (`434MB`), 1024-based; Redis's
    k / m / g (1000-based) are accepted too; empty is 0 (no limit)."""
    return parse_size(text) if text.strip() else 0


def parse_yes_no_word(text: str) -> str:
    """`yes` or `no`, any case, kept lower-case (Tile38's protected-mode)."""
    word = text.lower()
    if word not in ("yes", "no"):
        raise ValueError(text)
    return word


def parse_priority(text: str) -> int:
    """Tile38's replica-priority: a non-negative integer; unset (-1) leaves it out of INFO."""
    return parse_count(text)


def parse_count(text: str) -> int:
    """A non-negative integer."""
    value = int(text)
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


def parse_ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{text!r} is not within 0..1")
    return value


OUTPUT_CLASSES = ("normal", "replica", "pubsub")


def parse_output_limits(text: str) -> str:
    """`client-output-buffer-limit` as Redis writes it: `class hard soft seconds` groups for
    normal, replica and pubsub; classes not named keep their current value."""
    words = text.split()
    if not words or len(words) % 4:
        raise ValueError("want groups of: class hard-limit soft-limit soft-seconds")
    for i in range(0, len(words), 4):
        if words[i].lower() not in OUTPUT_CLASSES:
            raise ValueError(f"unknown client class {words[i]!r}")
        parse_size(words[i + 1])
        parse_size(words[i + 2])
        parse_count(words[i + 3])
    return text


@dataclass(frozen=True)
class OutputLimit:
    """Redis's client-output-buffer-limit for one client class; 0 turns a limit off."""

    hard: int
    soft: int
    soft_seconds: int


def output_limits(text: str) -> dict[str, OutputLimit]:
    words = text.split()
    return {words[i].lower(): OutputLimit(parse_size(words[i + 1]), parse_size(words[i + 2]),
                                          parse_count(words[i + 3]))
            for i in range(0, len(words), 4)}


def parse_fsync(text: str) -> str:
    if text not in ("always", "everysec", "no"):
        raise ValueError(text)
    return text


@dataclass(frozen=True)
class Property:
    """One CONFIG property: how a value is parsed, whether CONFIG GET hides it, its meaning."""

    parse: Callable[[str], Any]
    help: str
    secret: bool = False
    flag: bool = True  # gets a generated `--name` flag (the older ones have their own)


# CONFIG GET/SET properties (Tile38's names first, then the limits of docs/security.md).
PROPERTIES: dict[str, Property] = {
    "requirepass": Property(str, "password clients must AUTH with", secret=True, flag=False),
    "leaderauth": Property(str, "password this follower sends to its leader", secret=True, flag=False),
    "maxmemory": Property(parse_mem_size, "RSS above which writes that add data get OOM (0 or "
                          "empty: no limit); kb / mb / gb as Tile38, e.g. 434mb"),
    "protected-mode": Property(parse_yes_no_word, "yes: with tile38-server --protected-mode yes, "
                               "no password and no bind address, only loopback clients are "
                               "served (Tile38's protected mode)"),
    "autogc": Property(parse_count, "seconds between full garbage collections run in the "
                       "background (0: off), as Tile38's autogc"),
    "keepalive": Property(parse_count, "seconds of TCP keep-alive on client connections "
                          "(0: off), for connections opened after the change"),
    "logconfig": Property(str, "Tile38's JSON log configuration; kept and saved, the log "
                          "format is chosen with tile38-server -l json"),
    "replica-priority": Property(parse_priority, "the slave_priority a follower reports in "
                                 "INFO replication (unset: not reported)"),
    "replica_announce_ip": Property(str, "the address a follower tells its leader (REPLCONF "
                                    "ip-address), when it differs from the one the leader sees"),
    "script-time-limit": Property(parse_count, "seconds a Lua script (EVAL ...) may run before "
                                  "it is stopped with an error (0: no limit; TIMEOUT sets a "
                                  "shorter one per call)"),
    "replica_announce_port": Property(parse_count, "the port a follower tells its leader "
                                      "(REPLCONF listening-port), 0: its own port"),
    "appendfsync": Property(parse_fsync, "when the AOF is fsynced: always | everysec | no", flag=False),
    "max-request-size": Property(parse_size, "largest request in bytes (and largest bulk); "
                                 "applies to connections opened after the change", flag=False),
    "max-request-args": Property(parse_count, "most arguments in one request, checked at the "
                                 "array header before anything is allocated"),
    "max-inline-size": Property(parse_size, "longest inline (telnet) command line, and HTTP "
                                "request line plus headers"),
    "preauth-max-args": Property(parse_count, "most arguments in a request before AUTH "
                                 "(when requirepass is set)"),
    "preauth-max-bulk": Property(parse_size, "largest argument before AUTH (when requirepass is set)"),
    "client-output-buffer-limit": Property(
        parse_output_limits, "per class (normal, replica, pubsub): hard limit, soft limit, soft "
        "seconds. Over the hard limit, or over the soft one for soft seconds, a client is "
        "disconnected; a pipelined batch pauses while its unsent output is over the soft limit"),
    "timeout": Property(parse_count, "seconds an idle client may stay connected (0: forever)"),
    "auth-timeout": Property(parse_count, "seconds a client may stay connected without AUTH "
                             "when requirepass is set (0: forever)"),
    "request-timeout": Property(parse_count, "seconds a RESP or inline request may take to "
                                "arrive once its first byte is in (a slow trickle is "
                                "disconnected; 0: no limit)"),
    "http-request-timeout": Property(parse_count, "seconds an HTTP request (line, headers and "
                                     "body) may take to arrive (0: no limit)"),
    "maxclients": Property(parse_count, "most client connections; more are refused with an error"),
    "geojson-max-vertices": Property(parse_count, "most coordinates in one GeoJSON object"),
    "geojson-max-parts": Property(parse_count, "most rings, lines, polygons and members in one "
                                  "GeoJSON object"),
    "geojson-max-depth": Property(parse_count, "deepest nesting of GeometryCollections"),
    "max-pattern-length": Property(parse_count, "longest MATCH/KEYS/PDEL glob pattern"),
    "repl-timeout": Property(parse_count, "seconds of silence on the leader link after which a "
                             "follower checks the leader and reconnects"),
    "resync-min-ratio": Property(parse_ratio, "a follower refuses a full resync from a new or "
                                 "restarted leader holding fewer than this share of its objects "
                                 "(0: never refuse; RESYNC FORCE overrides)"),
    "cors-origins": Property(str, "comma-separated origins allowed to read HTTP replies "
                             "(Access-Control-Allow-Origin); empty: no CORS headers"),
    # TLS (docs/security.md#tls): on when a certificate and key are set at start; CONFIG SET
    # of these takes effect at the next reload (SIGHUP or tls-reload-interval)
    "tls-cert-file": Property(str, "PEM certificate chain presented to clients; with "
                              "tls-key-file it turns TLS on (RESP and HTTP)"),
    "tls-key-file": Property(str, "PEM private key of tls-cert-file"),
    "tls-ca-cert-file": Property(str, "PEM CA certificates that verify client certificates "
                                 "(tls-auth-clients) and the leader's (tls-replication)"),
    "tls-client-cert-file": Property(str, "PEM certificate a follower presents to its TLS "
                                     "leader (tls-replication; default: tls-cert-file)"),
    "tls-client-key-file": Property(str, "PEM private key of tls-client-cert-file"),
    "tls-auth-clients": Property(parse_auth_clients, "client certificates: yes (required), "
                                 "optional (verified when sent), no (not asked for)"),
    "tls-replication": Property(parse_yes_no, "yes: follow the leader over TLS, verifying its "
                                "certificate and host name with tls-ca-cert-file"),
    "tls-metrics": Property(parse_yes_no, "yes: the --metrics-addr listener is TLS too (same "
                            "certificate, client-certificate rule and reloads); read at start"),
    "tls-reload-interval": Property(parse_count, "seconds between checks of the TLS files for "
                                    "changes, reloaded when changed (0: only on SIGHUP)"),
    # hook delivery (docs/geofencing-endpoints.md): read at each use, CONFIG SET applies at once
    "hook-queue-max": Property(parse_count, "most events queued per hook; beyond, that hook's "
                               "oldest events are dropped, counted and logged (0: no limit)"),
    "hook-queue-max-total": Property(parse_count, "most events queued in all; beyond, the oldest "
                                     "events of the hooks holding most are dropped (0: no limit)"),
    "hook-queue-max-age": Property(parse_count, "seconds after which a queued hook event is "
                                   "dropped instead of sent (0: kept until delivered)"),
    "hook-timeout": Property(parse_timeout, "seconds one send to one hook endpoint may take "
                             "(connect included) before the next endpoint is tried"),
}


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9851
    dir: Path = Path("data")
    appendonly: bool = True
    appendfsync: str = "everysec"  # always | everysec | no
    appendfilename: str = "appendonly.aof"
    metrics_addr: str | None = None
    json_output: bool = False  # default reply mode for RESP connections (`-o json`)
    unix_socket: str = ""  # tile38-server -s: listen on this unix socket instead of host:port
    http_transport: bool = True  # tile38-server --http-transport no: HTTP requests are closed
    protected_mode_flag: bool = False  # tile38-server --protected-mode yes (docs/migration.md)
    queue_path: str = ""  # tile38-server --queuefilename: accepted, no durable queue reads it yet
    # persisted in the config file
    server_id: str = ""
    requirepass: str = ""
    leaderauth: str = ""
    follow_host: str = ""
    follow_port: int = 0
    follow_trusted: bool = False  # leaderauth may be sent to it (docs/replication.md)
    leader_id: str = ""  # SERVER id of the leader the dataset came from (resync refusal)
    read_only: bool = False
    max_request_size: int = 64 * 1024 * 1024
    maxmemory: int = 0
    protected_mode: str = "yes"
    autogc: int = 0
    keepalive: int = 300
    logconfig: str = ""
    replica_priority: int = -1
    replica_announce_ip: str = ""
    replica_announce_port: int = 0
    script_time_limit: int = 5
    # limits (docs/security.md): defaults a public-facing server can keep
    max_request_args: int = 1024 * 1024
    max_inline_size: int = 64 * 1024
    preauth_max_args: int = 10
    preauth_max_bulk: int = 16 * 1024
    client_output_buffer_limit: str = "normal 256mb 64mb 60 replica 0 0 0 pubsub 32mb 8mb 60"
    timeout: int = 0
    auth_timeout: int = 10
    request_timeout: int = 60  # Redis has none; a 64 MB request needs ~1 MB/s to make it
    http_request_timeout: int = 30
    maxclients: int = 10000
    geojson_max_vertices: int = 200_000  # ~70 ms of loop CPU to parse and build (docs/security.md)
    geojson_max_parts: int = 100_000
    geojson_max_depth: int = 32
    max_pattern_length: int = 1024
    repl_timeout: int = 10
    resync_min_ratio: float = 0.5
    cors_origins: str = ""
    tls_port: int = 0  # a TLS listener beside the plaintext --port (0: --port itself is TLS)
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_ca_cert_file: str = ""
    tls_client_cert_file: str = ""  # replication's client certificate (Redis's name)
    tls_client_key_file: str = ""
    tls_auth_clients: str = "no"
    tls_replication: str = "no"
    tls_reload_interval: int = 5
    tls_metrics: str = "no"  # the operator's kubelet probes and scrapes read it in plaintext
    hook_queue_max: int = 100_000
    hook_queue_max_total: int = 1_000_000
    hook_queue_max_age: int = 0
    hook_timeout: float = 5.0  # Tile38's HTTP request timeout
    # settings given by flag or environment (even empty): the file must not override them, so
    # a manager (the operator, `geocluster up`) that drops a password really drops it
    given: set[str] = field(default_factory=set)
    startup_follow: tuple[str, int] | None = None  # --follow's leader, always trusted

    @property
    def aof_path(self) -> Path:
        return self.dir / self.appendfilename

    @property
    def config_path(self) -> Path:
        return self.dir / "config"

    def output_limit(self, kind: str) -> OutputLimit:
        """The output buffer limit of a client class (normal, replica, pubsub)."""
        return output_limits(self.client_output_buffer_limit).get(kind, OutputLimit(0, 0, 0))

    def load_file(self) -> None:
        """Merge the persisted file (if any) into these settings. Explicit flags win: a pod
        started with `--follow leader:9851` follows that leader whatever an earlier FOLLOW
        saved; without flags, the file's values resume the last state."""
        path = self.config_path
        if self.follow_host:  # --follow: the leader this server was started for
            self.startup_follow = (self.follow_host, self.follow_port)
            self.follow_trusted = True
        if path.exists():
            try:
                data = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise SystemExit(f"geoserver: cannot parse config file {path}: {exc}") from None
            self.server_id = data.get("server_id", self.server_id)
            self.leader_id = str(data.get("leader_id", "") or "")
            if not self.follow_host:
                self.follow_host = data.get("follow_host", "") or ""
                self.follow_port = int(data.get("follow_port", 0) or 0)
                self.follow_trusted = bool(data.get("follow_trusted", False))
            self.read_only = bool(data.get("read_only", self.read_only))
            for name in PROPERTIES:
                if name in data and name not in self.given:
                    value = data[name]  # Tile38's file holds logconfig as a JSON object
                    text = value if isinstance(value, str) else orjson.dumps(value).decode()
                    try:
                        self.set_property(name, text)
                    except ValueError as exc:
                        log.warning("config file value ignored", extra={"property": name, "error": str(exc)})
        if not self.server_id:
            self.server_id = secrets.token_hex(16)

    def write_file(self) -> None:
        """Atomically persist the mutable settings (CONFIG REWRITE, FOLLOW, READONLY)."""
        data: dict[str, Any] = {
            "server_id": self.server_id,
            "follow_host": self.follow_host,
            "follow_port": self.follow_port,
            "follow_trusted": self.follow_trusted,
            "leader_id": self.leader_id,
            "read_only": self.read_only,
        }
        data.update({name: getattr(self, _attr(name)) for name in PROPERTIES})
        tmp = self.config_path.with_suffix(".tmp")
        with private_file(tmp) as out:  # owner-only, like the AOF: it holds the passwords
            out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.config_path)

    def get_property(self, name: str) -> str:
        value = getattr(self, _attr(name), "")
        if name == "replica-priority" and value < 0:
            return ""
        return format(value, "g") if isinstance(value, float) else str(value)

    def set_property(self, name: str, value: str) -> None:
        """Parse and set one property; ValueError for a value its parser refuses."""
        parsed = PROPERTIES[name].parse(value)
        if name == "client-output-buffer-limit":  # classes not named keep their limits
            merged = {**_limit_groups(self.client_output_buffer_limit), **_limit_groups(parsed)}
            parsed = " ".join(merged.values())
        setattr(self, _attr(name), parsed)


def _attr(name: str) -> str:
    return name.replace("-", "_")


def _limit_groups(text: str) -> dict[str, str]:
    words = text.split()
    return {words[i].lower(): " ".join([words[i].lower(), *words[i + 1:i + 4]])
            for i in range(0, len(words), 4)}
