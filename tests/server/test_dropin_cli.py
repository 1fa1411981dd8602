"""Tile38's command line (`tile38-server`, cmd/tile38-server/main.go) against real processes,
and `geoserver`'s start-up failures as one-line errors."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import redis
from helpers import GeoServer, free_port, wait_until

TILE38_SERVER = Path(sys.executable).parent / "tile38-server"


class Tile38Server(GeoServer):
    """A geoserver started through the `tile38-server` entry point with a Tile38 argv."""

    def __init__(self, data_dir: Path, argv: list[str], port: int) -> None:
        super().__init__(data_dir, port=port)
        self.argv = argv

    def start(self, wait: bool = True) -> Tile38Server:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(TILE38_SERVER), *self.argv], stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.dir.parent)
        if wait:
            self.wait_ready()
        return self


@pytest.fixture
def tile38(tmp_path: Path):
    started: list[Tile38Server] = []

    def make(*argv: str, port: int | None = None, wait: bool = True) -> Tile38Server:
        server = Tile38Server(tmp_path / "data", list(argv), port or free_port())
        started.append(server)
        return server.start(wait)

    yield make
    for server in started:
        server.kill9()


def test_helm_chart_argv_starts_and_persists(tile38, tmp_path: Path) -> None:
    """The community chart's container args, verbatim but for the port and the data path."""
    port = free_port()
    data = tmp_path / "data"
    argv = ["-h", "0.0.0.0", "-p", str(port), "-d", str(data), "--appendonly", "yes",
            "--protected-mode", "no"]
    server = tile38(*argv, port=port)
    r = redis.Redis(port=port, protocol=2, socket_timeout=5)
    assert r.execute_command("SET", "fleet", "truck1", "POINT", 33, -115) is True
    assert (data / "appendonly.aof").stat().st_size > 0
    server.stop()
    tile38(*argv, port=port)
    assert r.execute_command("GET", "fleet", "truck1", "POINT") == [b"33", b"-115"]


def test_go_flag_spellings(tile38, tmp_path: Path) -> None:
    """`--p`, `-d=path`, single-dash long flags: Go's flag package accepts them all."""
    port = free_port()
    tile38(f"--p={port}", f"-d={tmp_path / 'data'}", "-appendonly", "no", "-h", "127.0.0.1",
           port=port)
    r = redis.Redis(port=port, protocol=2, socket_timeout=5)
    assert r.execute_command("SET", "k", "i", "POINT", 1, 2) is True
    assert not (tmp_path / "data" / "appendonly.aof").exists()


def test_appendfilename_is_a_path(tile38, tmp_path: Path) -> None:
    port = free_port()
    aof = tmp_path / "elsewhere.aof"
    tile38("-p", str(port), "-d", str(tmp_path / "data"), "--appendfilename", str(aof), port=port)
    redis.Redis(port=port, protocol=2).execute_command("SET", "k", "i", "POINT", 1, 2)
    assert aof.stat().st_size > 0


def test_unix_socket(tile38, tmp_path: Path) -> None:
    sock = tmp_path / "t38.sock"
    tile38("-s", str(sock), "-d", str(tmp_path / "data"), wait=False)
    wait_until(sock.exists, message="unix socket")
    r = redis.Redis(unix_socket_path=str(sock), protocol=2, socket_timeout=5)
    wait_until(r.ping, message="PING over the unix socket")
    assert r.execute_command("SET", "k", "i", "POINT", 1, 2) is True


def test_json_logs_and_quiet(tile38, tmp_path: Path) -> None:
    port = free_port()
    server = tile38("-p", str(port), "-d", str(tmp_path / "data"), "-l", "json", port=port)
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines and all(orjson.loads(line)["level"] for line in lines)
    server.stop()
    server.log_path.unlink()
    quiet = tile38("-p", str(port), "-d", str(tmp_path / "data"), "-q", port=port)
    assert quiet.log() == ""


def test_http_transport_no_closes_http(tile38, tmp_path: Path) -> None:
    port = free_port()
    tile38("-p", str(port), "-d", str(tmp_path / "data"), "--http-transport", "no", port=port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /SERVER HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(100) == b""
    assert redis.Redis(port=port, protocol=2).ping()


def test_protected_mode_denies_other_addresses(tile38, tmp_path: Path) -> None:
    """`--protected-mode yes`, no bind address, no password: loopback 127.0.0.1 only."""
    port = free_port("0.0.0.0")
    tile38("-p", str(port), "-d", str(tmp_path / "data"), "--protected-mode", "yes", port=port)
    with socket.socket() as s:
        s.settimeout(5)
        s.bind(("127.0.0.2", 0))
        s.connect(("127.0.0.1", port))
        s.sendall(b"PING\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"-DENIED Tile38 is running in protected mode")
    assert redis.Redis(port=port, protocol=2).ping()  # 127.0.0.1 is served


@pytest.mark.parametrize(("argv", "message"), [
    (["--appendonly", "maybe"], "appendonly must be 'yes' or 'no'"),
    (["--protected-mode", "1"], "protected-mode must be 'yes' or 'no'"),
    (["-p", "x"], "invalid int value"),
])
def test_bad_flags_one_line(argv: list[str], message: str) -> None:
    done = subprocess.run([str(TILE38_SERVER), *argv], capture_output=True, timeout=30)
    assert done.returncode == 2
    assert message in done.stderr.decode() and b"Traceback" not in done.stderr


def test_help_and_version() -> None:
    done = subprocess.run([str(TILE38_SERVER), "--help"], capture_output=True, timeout=30)
    assert done.returncode == 0 and b"-h hostname : listening host" in done.stdout
    done = subprocess.run([str(TILE38_SERVER), "--version"], capture_output=True, timeout=30)
    assert done.stdout.startswith(b"tile38-server version: ")


def test_busy_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "geoserver", "--port", str(port),
                               "--dir", str(tmp_path / "d")], capture_output=True, timeout=60)
    err = done.stderr.decode()
    assert done.returncode == 1
    assert b"Traceback" not in done.stderr
    assert f"geoserver: cannot start on 127.0.0.1:{port}: " in err and "in use" in err


def test_ctrl_c_at_start_is_not_a_traceback(tmp_path: Path) -> None:
    """SIGINT while the AOF is still loading: the process ends without a traceback."""
    data = tmp_path / "d"
    data.mkdir()
    record = b"*6\r\n$3\r\nSET\r\n$5\r\nfleet\r\n$%d\r\n%s\r\n$5\r\nPOINT\r\n$2\r\n33\r\n$4\r\n-115\r\n"
    (data / "appendonly.aof").write_bytes(b"".join(
        record % (len(str(i)), str(i).encode()) for i in range(60_000)))
    log = tmp_path / "log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "geoserver", "--port", str(free_port()),
                                 "--dir", str(data)], stderr=out)
        try:
            wait_until(lambda: b"loading AOF" in log.read_bytes(), timeout=60, message="loading")
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
        finally:
            proc.kill()
    assert b"Traceback" not in log.read_bytes(), log.read_text()
    assert proc.returncode in (0, 1)
