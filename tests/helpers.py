"""Run real geoserver processes for tests: free ports on 127.0.0.x, readiness waits,
clean stop, kill -9 and restart on the same data directory."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import redis

REPO = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextmanager
def s3_server(bucket: str, key: str = "test", secret: str = "test") -> Iterator[str]:
    """A real S3 API (moto's server) on a free port of 127.0.0.1 with `bucket` created; yields
    its endpoint URL. For the backup tests: boto3 talks to it as to any S3-compatible store."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                     aws_secret_access_key=secret).create_bucket(Bucket=bucket)
        yield url
    finally:
        server.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}" + (f": {last_exc!r}" if last_exc else ""))


class GeoServer:
    """One geoserver process. `client()` gives redis-py (RESP2), `json()` runs a command in JSON."""

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int | None = None,
                 args: list[str] | None = None, env: dict[str, str] | None = None,
                 preexec: Callable[[], None] | None = None, tls: ssl.SSLContext | None = None) -> None:
        self.dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.args = list(args or [])
        self.env = {**os.environ, **(env or {})}
        self.preexec = preexec  # runs in the child before exec (e.g. resource limits)
        self.tls = tls  # json() and wait_ready() connect with it (a TLS-only port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir.parent / f"{self.dir.name}-{self.port}.log"

    @property
    def aof_path(self) -> Path:
        return self.dir / "appendonly.aof"

    def start(self, wait: bool = True) -> GeoServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "geoserver", "--host", self.host, "--port", str(self.port),
               "--dir", str(self.dir), *self.args]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     preexec_fn=self.preexec)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"geoserver exited with {self.proc.returncode}: {self.log()}")
            return self.json("PING")["ok"]

        wait_until(ready, timeout, message=f"geoserver on {self.host}:{self.port}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def client(self, **kw: Any) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, protocol=2, socket_timeout=10, **kw)

    def json(self, *args: Any, password: str | None = None) -> dict[str, Any]:
        """One command in JSON mode on a fresh connection; returns the parsed reply."""
        with self._connect() as sock:
            payload = b""
            if password is not None:
                payload += _encode([b"AUTH", password])
            payload += _encode([b"OUTPUT", b"json"]) + _encode(list(args))
            sock.sendall(payload)
            reader = __import__("hiredis").Reader()
            replies: list[Any] = []
            want = 3 if password is not None else 2
            while len(replies) < want:
                data = sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("closed")
                reader.feed(data)
                while (item := reader.gets()) is not False:
                    replies.append(item)
            last = replies[-1]
            if isinstance(last, Exception):
                raise last
            return orjson.loads(last)

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=10)
        if self.tls is None:
            return sock
        try:
            return self.tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def stats(self) -> dict[str, Any]:
        return self.json("SERVER")["stats"]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._close_log()

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._close_log()

    def _close_log(self) -> None:
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()


def _encode(args: list[Any]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(parts)
