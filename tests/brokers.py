"""Real brokers on 127.0.0.1 for the hook delivery tests, each on free ports in its own tmp dir:
redis-server, nats-server (JetStream on), mosquitto, rabbitmq-server (its own mnesia, logs,
node name, epmd port and HOME, so parallel runs never share a node), and an HTTP receiver.

The fixtures are session-scoped (rabbitmq takes seconds to boot) and skip with the reason when a
binary is missing. A test file uses them by importing them (`from brokers import
redis_broker_fixture  # noqa: F401`); the fixture names drop the `_fixture`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from helpers import free_port, wait_until

RABBITMQ = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # the Debian wrapper in /usr/sbin switches user
EPMD = "epmd"


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Broker:
    """One broker process (and its process group) started by a fixture."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_broker(name: str, cmd: list[str], port: int, workdir: Path, env: dict[str, str] | None = None,
                 timeout: float = 20.0) -> Broker:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=workdir,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    broker = Broker(name, port, proc, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        return _port_open(port)

    try:
        wait_until(up, timeout, 0.05, f"{name} on port {port}")
    except BaseException:
        broker.stop()
        raise
    return broker


def _need(binary: str) -> str:
    path = shutil.which(binary) or (binary if os.path.exists(binary) else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (apt-get install the Debian package)")
    return path


def redis_server(workdir: Path) -> Broker:
    port = free_port()
    return start_broker("redis", [_need("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", str(workdir)], port, workdir)


def nats_server(workdir: Path) -> Broker:
    port = free_port()
    return start_broker("nats", [_need("nats-server"), "-a", "127.0.0.1", "-p", str(port), "-js",
                                 "-sd", str(workdir / "js")], port, workdir)


def mosquitto(workdir: Path) -> Broker:
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    return start_broker("mosquitto", [_need("mosquitto"), "-c", str(conf)], port, workdir)


def rabbitmq(workdir: Path) -> Broker:
    _need(RABBITMQ)
    epmd_port, port, dist = free_port(), free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "enabled_plugins").write_text("[].\n")
    (workdir / "rabbitmq.conf").write_text("")
    # our own epmd, in the foreground, so the daemon rabbit would start is not left behind
    epmd = start_broker("epmd", [_need(EPMD), "-port", str(epmd_port), "-address", "127.0.0.1"],
                        epmd_port, workdir)
    env = {
        "HOME": str(workdir), "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_NODENAME": f"geotest-{secrets.token_hex(4)}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist), "RABBITMQ_MNESIA_BASE": str(workdir / "mnesia"),
        "RABBITMQ_LOG_BASE": str(workdir / "log"), "RABBITMQ_PID_FILE": str(workdir / "rabbit.pid"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(workdir / "enabled_plugins"),
        "RABBITMQ_CONFIG_FILE": str(workdir / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(workdir / "advanced.config"),
    }
    try:
        broker = start_broker("rabbitmq", [RABBITMQ], port, workdir, env, timeout=90.0)
    except BaseException:
        epmd.stop()
        raise
    broker.extra["epmd"] = epmd
    broker.extra["url"] = f"amqp://guest:guest@127.0.0.1:{port}"
    return broker


def stop_rabbitmq(broker: Broker) -> None:
    broker.stop(30.0)
    epmd = broker.extra.get("epmd")
    if isinstance(epmd, Broker):
        epmd.stop()


class Receiver:
    """An aiohttp HTTP endpoint in a thread: records each POST body in order; `status` and
    `delay` (seconds) change how it answers; `hold` makes it hang until released."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bodies: list[bytes] = []
        self.status = 200
        self.delay = 0.0
        self.requests = 0
        self.hold = threading.Event()
        self.hold.set()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        while not self.hold.is_set():
            await asyncio.sleep(0.01)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status in (200, 201, 202):
            self.bodies.append(body)
        return web.Response(status=self.status, text="ok")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def url(self, path: str = "hook") -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def start(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        self.hold.set()
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session", name="redis_broker")
def redis_broker_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = redis_server(tmp_path_factory.mktemp("redis"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session", name="nats_broker")
def nats_broker_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = nats_server(tmp_path_factory.mktemp("nats"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session", name="mqtt_broker")
def mqtt_broker_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    broker = mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield broker
    broker.stop()


@pytest.fixture(scope="session", name="amqp_broker")
def amqp_broker_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    started = time.monotonic()
    broker = rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    broker.extra["boot_seconds"] = time.monotonic() - started
    yield broker
    stop_rabbitmq(broker)


@pytest.fixture(name="receiver")
def receiver_fixture() -> Iterator[Receiver]:
    r = Receiver().start()
    yield r
    r.stop()
