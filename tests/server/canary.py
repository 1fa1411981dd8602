"""A canary client: its own connection sends PING every few milliseconds from a thread and
records every round trip, so a test (or bench/attack_canary.py) can tell whether an attack on
another connection stalled the server for everyone."""

from __future__ import annotations

import socket
import threading
import time


class Canary:
    def __init__(self, port: int, interval: float = 0.005, password: str | None = None) -> None:
        self.port = port
        self.interval = interval
        self.password = password
        self.rtts: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Canary:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        if self.password is not None:
            auth = self.password.encode()
            self._sock.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(auth), auth))
            assert self._sock.recv(64).startswith(b"+OK")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(90)
        self._sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                self._sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                reply = self._sock.recv(64)
            except OSError as exc:
                self.errors.append(repr(exc))
                return
            if reply != b"+PONG\r\n":
                self.errors.append(f"unexpected reply {reply!r}")
                return
            self.rtts.append(time.perf_counter() - started)
            time.sleep(self.interval)

    @property
    def worst(self) -> float:
        return max(self.rtts, default=0.0)

    def p99(self) -> float:
        ordered = sorted(self.rtts)
        return ordered[int(len(ordered) * 0.99)] if ordered else 0.0
