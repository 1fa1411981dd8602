"""The first hour with `geocluster up`, as a new user meets it: the real `geocluster` commands as
subprocesses over real geoserver members (nothing mocked).

Busy ports, the resume hint and a state dir that remembers its manifest, the 80-column
`status`, one log line per action, schedules with their time zone, the operator's name rules,
and the repair of a follower someone told `FOLLOW no one` (re-pointed before its RESYNC)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from geocluster import localview
from geocluster.spec import MAX_NAME_LENGTH
from local_lib import FAST, merged, pid_alive, write_manifest

pytestmark = pytest.mark.timeout(120)
GEOCLUSTER = [sys.executable, "-c", "from geocluster.entry import main; main()"]  # the console script


def geocluster(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*GEOCLUSTER, *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})})
    if check and out.returncode != 0:
        raise AssertionError(f"geocluster {' '.join(args)} -> {out.returncode}: {out.stderr}")
    return out


def start(*args: str, env: dict | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([*GEOCLUSTER, "up", "--no-live", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def status(state: Path) -> dict:
    return json.loads(geocluster("status", "-o", "json", "--state-dir", str(state)).stdout or "{}")


def wait_for(state: Path, check, what: str, timeout: float = 40.0) -> dict:
    deadline, st = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        out = geocluster("status", "-o", "json", "--state-dir", str(state), check=False)
        if out.returncode == 0 and out.stdout.strip():
            st = json.loads(out.stdout)
            if check(st):
                return st
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}: {st}")


def ready(st: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))


def info(state: Path) -> dict:
    return json.loads((state / "cluster.json").read_text())


def stop(up: subprocess.Popen[str], state: Path) -> tuple[str, str]:
    """Ctrl-C, and nothing left running."""
    known = info(state)["members"] if (state / "cluster.json").exists() else []
    pids = [m["process"]["pid"] for m in known if m["process"]]
    if up.poll() is None:
        up.send_signal(signal.SIGINT)
    try:
        out, err = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
    assert not any(pid_alive(p) for p in pids)
    return out, err


@pytest.fixture
def busy_port():
    """A port something else listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_an_explicit_busy_port_is_an_error(tmp_path, busy_port):
    m = write_manifest(tmp_path / "m.yaml", merged(FAST, followers=1), name="busy")
    out = geocluster("up", "--no-live", "-f", str(m), "--state-dir", str(tmp_path / "s"),
                     "--port", str(busy_port), check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"port {busy_port} is in use on 127.0.0.1; pick another --port" in out.stderr
    assert not (tmp_path / "s" / "cluster.json").exists()  # nothing started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One running cluster for the read-mostly checks: the leader's default port (9851) is held
    busy (or already is), a schedule in Europe/Paris, fast repairs."""
    tmp = tmp_path_factory.mktemp("firsthour")
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 9851))
        holder.listen()
    except OSError:  # busy already: just as good
        pass
    spec = merged(FAST, followers=2, aofShrink={"schedule": "0 3 * * *", "timeZone": "Europe/Paris"},
                  divergence={"gracePeriodSeconds": 1, "probeIntervalSeconds": 1, "toleranceBytes": 100,
                              "maxRepairsPerHour": 10})
    m = write_manifest(tmp / "m.yaml", spec, name="first-hour-cluster-with-a-long-name")
    state = tmp / "state"
    up = start("-f", str(m), "--state-dir", str(state))  # no --port: 9851 if free
    try:
        warning = up.stderr.readline()  # printed before anything starts
        wait_for(state, ready, "Ready")
        yield state, warning, m
    finally:
        _, err = stop(up, state)
        holder.close()
        Path(tmp / "up.stderr").write_text(err)


def test_default_busy_port_warns_and_status_shows_the_real_port(cluster):
    state, warning, _ = cluster
    assert warning.startswith("warning: port 9851 is in use: the leader will listen on another port")
    port = next(mm["port"] for mm in info(state)["members"] if mm["name"] == "leader")
    assert port != 9851
    text = geocluster("status", "--state-dir", str(state)).stdout
    assert f"leader leader on 127.0.0.1:{port}: redis-cli -p {port}" in text


def test_status_at_80_columns_cuts_no_name_or_address(cluster):
    state, _, _ = cluster
    text = geocluster("status", "--state-dir", str(state), env={"COLUMNS": "80"}).stdout
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text
    for mm in info(state)["members"]:
        assert mm["name"] in text and mm["address"] in text
    assert "follower-1: memory" in text  # the narrow layout's detail lines


def test_schedule_shown_with_its_time_zone(cluster):
    state, _, _ = cluster
    text = geocluster("status", "--state-dir", str(state)).stdout
    assert "next shrink" in text and "timeZone Europe/Paris" in text and ("CET" in text or "CEST" in text)


def test_one_log_line_per_action(cluster):
    state, _, _ = cluster
    assert "shrink started" in geocluster("shrink", "--state-dir", str(state)).stdout
    wait_for(state, lambda st: (st.get("lastShrink") or {}).get("result") == "ok", "shrink ok")
    log = (state / "logs" / "geocluster.log").read_text()
    shrink_lines = [line for line in log.splitlines() if "shrink" in line.lower() and "manual" in line]
    assert len(shrink_lines) == 1, shrink_lines  # ShrinkStarted: AOFSHRINK on leader (manual)
    assert "ShrinkStarted" in shrink_lines[0]


def test_follow_no_one_is_repaired_by_refollowing_first(cluster):
    """After `FOLLOW no one` by hand the ladder's RESYNC would only fail ("not a follower"):
    the runtime re-points the member at the leader first, so the rung succeeds."""
    state, _, _ = cluster
    # no resync in flight (the shrink above queues them): one in flight is re-pointed and
    # RESYNCed again without the ladder (tests/local/test_firsthour_resync.py)
    wait_for(state, lambda st: not st.get("pendingResyncs")
             and (st.get("lastResync") or {}).get("result") != "started", "resyncs settled")
    f1 = next(mm for mm in info(state)["members"] if mm["name"] == "follower-1")
    r = redis.Redis(port=f1["port"], protocol=2, socket_timeout=5)
    r.execute_command("FOLLOW", "no", "one")
    def repaired(st: dict) -> bool:
        return any(mm["name"] == "follower-1" and (mm.get("lastRepair") or {}).get("result")
                   for mm in st["members"])

    wait_for(state, repaired, "a repair of follower-1")
    st = wait_for(state, lambda st: ready(st) and (st.get("lastResync") or {}).get("result") == "ok",
                  "healed")
    rep = next(mm for mm in st["members"] if mm["name"] == "follower-1")["lastRepair"]
    assert rep["action"] == "resync" and not rep["result"].startswith("error"), rep
    assert (st["lastResync"]["member"], st["lastResync"]["reason"]) == ("follower-1", "repair")
    log = (state / "logs" / "geocluster.log").read_text()
    assert "follower-1 followed no one (FOLLOW no one by hand?): FOLLOW 127.0.0.1:" in log
    assert "not a follower" not in log
    row = next(line for line in geocluster("status", "--state-dir", str(state)).stdout.splitlines()
               if line.lstrip("│ ").startswith("follower-1"))
    assert "failed" not in row


def test_resume_hint_and_a_state_dir_remembers_its_manifest(tmp_path):
    m = write_manifest(tmp_path / "m.yaml", merged(FAST, followers=1), name="hint")
    other = write_manifest(tmp_path / "other.yaml", merged(FAST, followers=1), name="other")
    state = tmp_path / "state"
    up = start("-f", str(m), "--state-dir", str(state), "--port", "0")
    wait_for(state, ready, "Ready")
    out, err = stop(up, state)
    assert f"(`geocluster up --state-dir {state}` resumes it)" in out, out + err
    assert info(state)["manifest"] == str(m.resolve())

    refused = geocluster("up", "--no-live", "-f", str(other), "--state-dir", str(state), check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"holds GeoCluster 'hint' made with {m.resolve()}, not {other.resolve()} ('other')" \
        in refused.stderr

    up = start("--state-dir", str(state), "--port", "0")  # no -f: the state dir's own manifest
    try:
        wait_for(state, ready, "Ready again")
        assert info(state)["name"] == "hint" and info(state)["source"] == str(m)
    finally:
        stop(up, state)

    up = start("-f", str(other), "--state-dir", str(state), "--port", "0", "--force")
    try:
        wait_for(state, lambda st: ready(st) and info(state)["name"] == "other", "other, forced")
    finally:
        out, _ = stop(up, state)
    assert "stopped other" in out


def test_the_operators_name_rules_hold_locally(tmp_path):
    long = "n" * (MAX_NAME_LENGTH + 1)
    m = write_manifest(tmp_path / "m.yaml", merged(FAST, followers=1), name=long)
    out = geocluster("up", "--no-live", "-f", str(m), "--state-dir", str(tmp_path / "s"), check=False)
    assert out.returncode == 1
    assert f"metadata.name: at most {MAX_NAME_LENGTH} characters (is {len(long)})" in out.stderr


@pytest.mark.parametrize("after", [0.1, 0.2, 0.3, 0.4, 0.6, 0.9])
def test_ctrl_c_in_the_first_second_is_one_line(tmp_path, after):
    up = start("--state-dir", str(tmp_path / "s"), "--port", "0",
               env={"XDG_STATE_HOME": str(tmp_path / "xdg")})
    time.sleep(after)
    up.send_signal(signal.SIGINT)
    _, err = up.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert up.returncode in (0, 130, -signal.SIGINT), err


INTERRUPT_WHILE_READING_THE_MANIFEST = """
import os, signal
from geocluster import entry, local_cli
real = local_cli.load_manifest
def interrupted(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    return real(*args, **kwargs)
local_cli.load_manifest = interrupted
entry.main()
"""


def test_ctrl_c_after_the_imports_and_before_the_handlers_is_130(tmp_path):
    """The window a timed Ctrl-C hits on a loaded machine: click has started and `up` has not
    installed its handlers. Standalone click made that "Aborted!" and status 1."""
    out = subprocess.run([sys.executable, "-c", INTERRUPT_WHILE_READING_THE_MANIFEST, "up", "--no-live",
                          "--state-dir", str(tmp_path / "s"), "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (130, ""), out.stderr
    assert "Traceback" not in out.stderr and "Aborted" not in out.stderr, out.stderr
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


def test_view_says_what_happened_to_repairs():
    """Pure rendering: a failed resync later healed says so; a reset ladder is explained."""
    info_ = {"name": "v", "supervisor": {"pid": 1}, "leader": "leader", "members": [
        {"name": "leader", "role": "leader", "address": "127.0.0.1:1", "process": {"pid": 2}},
        {"name": "follower-1", "role": "follower", "address": "127.0.0.1:2", "process": {"pid": 3},
         "lastResync": "2030-01-01T00:00:10Z failed"}]}  # fmt: skip
    st = {"members": [
        {"name": "leader", "role": "leader", "reachable": True, "aofSize": 10},
        {"name": "follower-1", "role": "follower", "reachable": True, "aofSize": 10, "caughtUp": True,
         "healthySince": "2030-01-01T00:00:30Z", "repairs": 0,
         "lastRepair": {"time": "2030-01-01T00:00:10Z", "action": "restart", "result": "ok"}}]}  # fmt: skip
    from rich.console import Console

    console = Console(width=220, record=True)
    console.print(localview.table(info_, st), localview.summary(info_, st))
    text = console.export_text()
    assert f"resync {localview.clock('2030-01-01T00:00:10Z')} failed, ok since" in text
    assert "restart ok at" in text and "ladder reset" in text and "(#0)" not in text
