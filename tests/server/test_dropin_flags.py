"""The `tile38-server` flags whose effect is only seen from outside the process: `-v`/`-vv`,
`--pidfile`, `--nohup`, `--dev` (cmd/tile38-server/main.go), each against a real process.

What Tile38 does: `-v` logs at debug level, `-vv` also HTTP-level lines; `--pidfile` writes
"<pid>\\n" and removes it on SIGTERM, SIGINT, SIGQUIT and SIGHUP; without `--nohup` SIGHUP exits
with status 1; `--dev` enables MASSINSERT, SLEEP and SHUTDOWN. Where geoserver differs the test
pins geoserver's behaviour and docs/migration.md says why.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from helpers import GeoServer, free_port, wait_until

TILE38_SERVER = Path(sys.executable).parent / "tile38-server"


class Tile38Server(GeoServer):
    """A geoserver started through `tile38-server -p <port> -d <dir> <flags>`."""

    def __init__(self, data_dir: Path, flags: list[str]) -> None:
        super().__init__(data_dir, port=free_port())
        self.flags = flags

    def start(self, wait: bool = True) -> Tile38Server:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        argv = [str(TILE38_SERVER), "-h", self.host, "-p", str(self.port), "-d", str(self.dir), *self.flags]
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready()
        return self

    def exit_code(self) -> int:
        assert self.proc is not None
        code = self.proc.wait(15)
        self._close_log()
        return code


@pytest.fixture
def tile38(tmp_path: Path):
    started: list[Tile38Server] = []

    def make(*flags: str, name: str = "data") -> Tile38Server:
        server = Tile38Server(tmp_path / name, list(flags))
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.kill9()


def autogc_runs(server: Tile38Server, runs: int = 2) -> None:
    """Make the server log at debug level: autogc every second, watched through SERVER EXT."""
    assert server.json("CONFIG", "SET", "autogc", "1")["ok"]
    seen: set[float] = set()

    def ran() -> bool:
        seen.add(server.json("SERVER", "EXT")["stats"]["last_gc_time_seconds"])
        return len(seen) > runs

    wait_until(ran, 20, message="autogc runs")


@pytest.mark.parametrize("flag", ["-v", "-vv", "--v", "-vvv"])
def test_verbose_flags_log_debug_lines(tile38, flag: str) -> None:
    server = tile38(flag)
    autogc_runs(server)
    wait_until(lambda: " DEBUG " in server.log() and " autogc rss_before=" in server.log(), 15,
               message="a DEBUG autogc line")


def test_default_logs_info_but_no_debug(tile38) -> None:
    server = tile38()
    autogc_runs(server)  # the runs happened: their debug lines were dropped
    assert " INFO " in server.log()
    assert " DEBUG " not in server.log() and "autogc" not in server.log()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 0), (signal.SIGQUIT, 3)])
def test_pidfile_written_and_removed_at_exit(tile38, tmp_path: Path, sig: signal.Signals, code: int) -> None:
    pidfile = tmp_path / "run" / "tile38.pid"
    pidfile.parent.mkdir()
    server = tile38("--pidfile", str(pidfile))
    assert server.proc is not None
    assert pidfile.read_text() == f"{server.proc.pid}\n"  # as Tile38: the pid and a newline
    os.kill(server.proc.pid, sig)
    assert server.exit_code() == code
    assert not pidfile.exists()


def test_pidfile_go_spelling(tile38, tmp_path: Path) -> None:
    pidfile = tmp_path / "t.pid"
    server = tile38(f"-pidfile={pidfile}")
    assert server.proc is not None and pidfile.read_text() == f"{server.proc.pid}\n"


def test_unwritable_pidfile_warns_and_serves(tile38, tmp_path: Path) -> None:
    """As Tile38 (main.go ignores the write error): no pid file, a warning, the server runs."""
    server = tile38("--pidfile", str(tmp_path / "no-such-dir" / "t.pid"))
    assert server.json("PING")["ok"]
    assert "WARNING" in server.log() and "pidfile: cannot write it" in server.log()


def test_sigquit_without_pidfile_exits_3(tile38) -> None:
    server = tile38()
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGQUIT)
    assert server.exit_code() == 3


@pytest.mark.parametrize("flags", [["--nohup"], []], ids=["nohup", "default"])
def test_sighup_keeps_serving(tile38, tmp_path: Path, flags: list[str]) -> None:
    """With `--nohup` as Tile38. Without it Tile38 exits 1; geoserver keeps serving either way
    (SIGHUP reloads TLS files here; docs/migration.md)."""
    pidfile = tmp_path / "p.pid"
    server = tile38("--pidfile", str(pidfile), *flags)
    assert server.proc is not None
    client = redis.Redis(host=server.host, port=server.port, protocol=2, socket_timeout=5)
    assert client.execute_command("SET", "fleet", "t1", "POINT", 1, 2) is True
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_until(lambda: "SIGHUP" in server.log(), 10, message="the SIGHUP log line")
    assert client.execute_command("GET", "fleet", "t1") == b'{"type":"Point","coordinates":[2,1]}'
    assert server.proc.poll() is None and pidfile.exists()


@pytest.mark.parametrize("flags", [["--dev"], ["-dev"], []], ids=["--dev", "-dev", "default"])
def test_dev_is_accepted_and_dev_commands_are_not_built(tile38, flags: list[str]) -> None:
    """Tile38's `--dev` turns on MASSINSERT, SLEEP and SHUTDOWN; geoserver has none of them, so
    with or without `--dev` they are unknown commands, as in Tile38 without `--dev`."""
    server = tile38(*flags)
    client = redis.Redis(host=server.host, port=server.port, protocol=2, socket_timeout=5)
    for cmd in (("MASSINSERT", 1, 1), ("SLEEP", 0), ("SHUTDOWN",)):
        with pytest.raises(redis.ResponseError, match=f"unknown command '{cmd[0]}'"):
            client.execute_command(*cmd)
    assert client.ping()
