"""Server settings: command-line flags plus the persistent JSON config file (`<dir>/config`),
which keeps what CONFIG SET / FOLLOW / READONLY change so a restart resumes the same role."""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from geoserver.aof.log import private_file

log = logging.getLogger(__name__)

# CONFIG GET/SET properties and their types (Tile38 names).
PROPERTIES: dict[str, type] = {
    "requirepass": str,
    "leaderauth": str,
    "maxmemory": int,  # bytes of RSS; 0 = no limit. Above it SET/FSET get OOM errors
    "max-request-size": int,  # applies to connections opened after the change
    "appendfsync": str,
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
    # persisted in the config file
    server_id: str = ""
    requirepass: str = ""
    leaderauth: str = ""
    follow_host: str = ""
    follow_port: int = 0
    read_only: bool = False
    max_request_size: int = 64 * 1024 * 1024
    maxmemory: int = 0
    # settings given by flag or environment (even empty): the file must not override them, so
    # a manager (the operator, `geocluster up`) that drops a password really drops it
    given: set[str] = field(default_factory=set)

    @property
    def aof_path(self) -> Path:
        return self.dir / self.appendfilename

    @property
    def config_path(self) -> Path:
        return self.dir / "config"

    def load_file(self) -> None:
        """Merge the persisted file (if any) into these settings. Explicit flags win: a pod
        started with `--follow leader:9851` follows that leader whatever an earlier FOLLOW
        saved; without flags, the file's values resume the last state."""
        path = self.config_path
        if path.exists():
            try:
                data = orjson.loads(path.read_bytes())
            except orjson.JSONDecodeError as exc:
                raise SystemExit(f"geoserver: cannot parse config file {path}: {exc}") from None
            self.server_id = data.get("server_id", self.server_id)
            if not self.follow_host:
                self.follow_host = data.get("follow_host", "") or ""
                self.follow_port = int(data.get("follow_port", 0) or 0)
            self.read_only = bool(data.get("read_only", self.read_only))
            if "requirepass" not in self.given:
                self.requirepass = data.get("requirepass", "") or ""
            if "leaderauth" not in self.given:
                self.leaderauth = data.get("leaderauth", "") or ""
            if "appendfsync" not in self.given:  # CONFIG SET appendfsync + REWRITE survives a restart
                self.appendfsync = data.get("appendfsync", self.appendfsync) or self.appendfsync
            if "max-request-size" not in self.given:
                self.max_request_size = int(data.get("max-request-size", self.max_request_size))
            self.maxmemory = int(data.get("maxmemory", self.maxmemory))
        if not self.server_id:
            self.server_id = secrets.token_hex(16)

    def write_file(self) -> None:
        """Atomically persist the mutable settings (CONFIG REWRITE, FOLLOW, READONLY)."""
        data = {
            "server_id": self.server_id,
            "follow_host": self.follow_host,
            "follow_port": self.follow_port,
            "read_only": self.read_only,
            "requirepass": self.requirepass,
            "leaderauth": self.leaderauth,
            "max-request-size": self.max_request_size,
            "maxmemory": self.maxmemory,
            "appendfsync": self.appendfsync,
        }
        tmp = self.config_path.with_suffix(".tmp")
        with private_file(tmp) as out:  # owner-only, like the AOF: it holds the passwords
            out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(tmp, self.config_path)

    def get_property(self, name: str) -> str:
        return str(getattr(self, name.replace("-", "_"), ""))

    def set_property(self, name: str, value: str) -> None:
        kind = PROPERTIES[name]
        setattr(self, name.replace("-", "_"), kind(value))
