"""TLS (docs/security.md#tls): the server's SSLContext, kept current without a restart, and
the client context a follower dials a TLS leader with.

Invariants:
- TLS is on when `tls-cert-file` and `tls-key-file` are set at start; it is turned on or off
  only by a restart (a listener's SSLContext is fixed when it is created).
- A reload (SIGHUP, or the files' mtime/size/inode changing, checked every
  `tls-reload-interval` s) first builds a complete scratch context from the current settings;
  only if that works are the certificate and key loaded into the live context, so a half-written
  pair or a typo never leaves the server without a certificate. Connections opened after the
  reload get the new certificate; open ones keep theirs.
- The live context is changed in place: a new CA file adds its certificates to the trusted
  ones, a CA removed from the file stays trusted until a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geoserver.config import ServerConfig

log = logging.getLogger(__name__)

AUTH_MODES = {"no": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "yes": ssl.CERT_REQUIRED}
HANDSHAKE_TIMEOUT = 10.0  # seconds a connection may take to finish its TLS handshake
# Why a TLS leader may end the connection at once: under TLS 1.3 the client's handshake is done
# before the server has checked its certificate, and the refusal reaches it as a plain EOF
TLS_CLOSED_HINT = (" right after the TLS handshake: does it require client certificates "
                   "(tls-auth-clients yes)? Then this server needs tls-client-cert-file/"
                   "tls-client-key-file (or tls-cert-file/tls-key-file) signed by a CA the leader "
                   "trusts, with the clientAuth extended key usage")


def parse_auth_clients(text: str) -> str:
    """`tls-auth-clients`: yes | no | optional (Redis's values)."""
    value = text.strip().lower()
    if value not in AUTH_MODES:
        raise ValueError(f"{text!r} is not yes, no or optional")
    return value


def parse_yes_no(text: str) -> str:
    value = text.strip().lower()
    if value not in ("yes", "no"):
        raise ValueError(f"{text!r} is not yes or no")
    return value


def enabled(cfg: ServerConfig) -> bool:
    """Client connections use TLS: a certificate and its key are configured."""
    return bool(cfg.tls_cert_file or cfg.tls_key_file)


def server_context(cfg: ServerConfig) -> ssl.SSLContext:
    """A server context from the settings; OSError/ssl.SSLError/ValueError when they are wrong."""
    if not (cfg.tls_cert_file and cfg.tls_key_file):
        raise ValueError("TLS needs both tls-cert-file and tls-key-file")
    mode = AUTH_MODES[cfg.tls_auth_clients]
    if mode != ssl.CERT_NONE and not cfg.tls_ca_cert_file:
        raise ValueError(f"tls-auth-clients {cfg.tls_auth_clients} needs tls-ca-cert-file")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    if cfg.tls_ca_cert_file:
        ctx.load_verify_locations(cfg.tls_ca_cert_file)
    ctx.verify_mode = mode
    return ctx


def replication_context(cfg: ServerConfig) -> ssl.SSLContext | None:
    """The context a follower dials its leader with (`tls-replication yes`), else None.

    It verifies the leader's certificate and host name against `tls-ca-cert-file` (the
    system's CAs when none is set), and presents a certificate, for leaders that ask for
    client certificates: `tls-client-cert-file` (a certificate with the clientAuth usage, when
    the server's own has serverAuth only), else this server's `tls-cert-file`. Built per
    connection, so it always reads the current files."""
    if cfg.tls_replication != "yes":
        return None
    if bool(cfg.tls_client_cert_file) != bool(cfg.tls_client_key_file):
        raise ValueError("tls-client-cert-file and tls-client-key-file go together")
    ctx = ssl.create_default_context(cafile=cfg.tls_ca_cert_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cfg.tls_client_cert_file:
        ctx.load_cert_chain(cfg.tls_client_cert_file, cfg.tls_client_key_file)
    elif cfg.tls_cert_file and cfg.tls_key_file:
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
    return ctx


def _signature(cfg: ServerConfig) -> tuple:
    """What a reload depends on: the settings and each file's identity and contents' stamp."""
    stamps = []
    for path in (cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_ca_cert_file):
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        stamps.append((path, st and (st.st_mtime_ns, st.st_size, st.st_ino)))
    return (cfg.tls_auth_clients, *stamps)


class ServerTls:
    """The live server context, reloaded in place (module docstring)."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.config = cfg
        self._seen = _signature(cfg)
        self.context = server_context(cfg)
        self.reloads = 0
        self.last_error = ""

    def check(self) -> None:
        """Reload when a file or a setting changed since the last attempt."""
        if _signature(self.config) != self._seen:
            self.reload("files changed")

    def reload(self, reason: str) -> bool:
        """Re-read the files into the live context; on any error keep the current one."""
        cfg = self.config
        self._seen = _signature(cfg)
        try:
            server_context(cfg)  # the whole new configuration works, or nothing changes
            self.context.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
            if cfg.tls_ca_cert_file:
                self.context.load_verify_locations(cfg.tls_ca_cert_file)
            self.context.verify_mode = AUTH_MODES[cfg.tls_auth_clients]
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self.last_error = str(exc) or type(exc).__name__
            log.error("TLS reload failed; connections keep the previous certificate",
                      extra={"reason": reason, "error": self.last_error, "cert": cfg.tls_cert_file})
            return False
        self.reloads += 1
        self.last_error = ""
        log.info("TLS certificate reloaded", extra={"reason": reason, "cert": cfg.tls_cert_file,
                                                    "auth_clients": cfg.tls_auth_clients})
        return True

    async def watch(self) -> None:
        """Check the files every `tls-reload-interval` s (0: only on SIGHUP)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            interval = self.config.tls_reload_interval
            if interval and time.monotonic() - last >= interval:
                last = time.monotonic()
                self.check()
