"""The real `geocluster` commands as subprocesses: up, status -o json, shrink, resync, Ctrl-C,
resume with data intact, down -- and no processes left behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis
from local_lib import FAST, merged, pid_alive, write_manifest

pytestmark = pytest.mark.timeout(90)
GEOCLUSTER = [sys.executable, "-c", "from geocluster.cli import main; main()"]


def geocluster(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*GEOCLUSTER, *args], capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"geocluster {' '.join(args)} -> {out.returncode}: {out.stderr}")
    return out


def wait_ready(state: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = geocluster("status", "-o", "json", "--state-dir", str(state), check=False)
        if out.returncode == 0 and out.stdout.strip():
            st = json.loads(out.stdout)
            if any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", [])):
                return st
        time.sleep(0.3)
    raise AssertionError(f"not Ready in {timeout}s: {out.stdout} {out.stderr}")


def start_up(manifest: Path, state: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([*GEOCLUSTER, "up", "-f", str(manifest), "--state-dir", str(state),
                             "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def member_pids(state: Path) -> list[int]:
    info = json.loads((state / "cluster.json").read_text())
    return [m["process"]["pid"] for m in info["members"] if m["process"]]


def leader(state: Path) -> redis.Redis:
    info = json.loads((state / "cluster.json").read_text())
    r = redis.Redis(port=info["members"][0]["port"], protocol=2, socket_timeout=5)
    r.response_callbacks.clear()
    return r


def test_up_status_shrink_resync_ctrl_c_resume_down(tmp_path):
    manifest = write_manifest(tmp_path / "geocluster.yaml", merged(FAST, followers=1), name="cli")
    state = tmp_path / "state"
    up = start_up(manifest, state)
    try:
        st = wait_ready(state)
        assert st["phase"] == "Running" and [m["name"] for m in st["members"]] == ["leader", "follower-1"]
        pids = member_pids(state)
        leader(state).execute_command("SET", "fleet", "kept", "POINT", 33, -115)

        again = geocluster("up", "-f", str(manifest), "--state-dir", str(state), check=False)
        assert again.returncode == 1 and "already running" in again.stderr

        table = geocluster("status", "--state-dir", str(state)).stdout
        assert "follower-1" in table and "Ready=True" in table
        assert "shrink started" in geocluster("shrink", "--state-dir", str(state)).stdout
        bad = geocluster("resync", "nobody", "--state-dir", str(state), check=False)
        assert bad.returncode == 1 and "not a follower" in bad.stderr
        wait_ready(state)
        geocluster("resync", "follower-1", "--state-dir", str(state))

        up.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = up.communicate(timeout=30)
        assert up.returncode == 0, out
        assert "stopping all members" in out and "stopped cli" in out
        assert not any(pid_alive(p) for p in pids)
        assert geocluster("status", "--state-dir", str(state), check=False).returncode == 3

        up = start_up(manifest, state)  # resume: same ports, data intact
        wait_ready(state)
        assert leader(state).execute_command("EXISTS", "fleet", "kept") == 1
        pids = member_pids(state)
        assert "stopped" in geocluster("down", "--state-dir", str(state)).stdout
        up.wait(30)
        assert up.returncode == 0
        assert not any(pid_alive(p) for p in pids)
        assert json.loads((state / "cluster.json").read_text())["supervisor"] is None
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for p in member_pids(state) if (state / "cluster.json").exists() else []:
            subprocess.run(["kill", "-9", str(p)], check=False)


def test_up_after_a_killed_supervisor_stops_its_orphans(tmp_path):
    manifest = write_manifest(tmp_path / "geocluster.yaml", merged(FAST, followers=1), name="orphans")
    state = tmp_path / "state"
    up = start_up(manifest, state)
    try:
        wait_ready(state)
        orphans = member_pids(state)
        up.kill()  # kill -9: members keep running, in their own session
        up.wait()
        assert all(pid_alive(p) for p in orphans)
        out = geocluster("down", "--state-dir", str(state))
        assert "leftover" in out.stdout
        assert not any(pid_alive(p) for p in orphans)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_one_up_per_state_dir_and_requests_not_taken_are_withdrawn(tmp_path):
    """Found in review: after a killed `up`, a second `up` could start before the first had
    recorded itself and run a second set of members on the same data; a `shrink` the loop did
    not take (paused) timed out but fired in a later run. Now `up` locks the state dir, and a
    request not taken in time is withdrawn."""
    from geocluster.localstate import StateDir

    manifest = write_manifest(tmp_path / "geocluster.yaml", merged(FAST, followers=1, paused=True), name="lk")
    state = tmp_path / "state"
    holder = StateDir(state)
    assert holder.lock()  # as a just-started `up` holds it before recording anything
    out = geocluster("up", "-f", str(manifest), "--state-dir", str(state), "--port", "0", check=False)
    assert out.returncode != 0 and "already running" in out.stderr
    holder._lock.close()  # that `up` is gone (the kernel drops the lock, even on kill -9)
    up = start_up(manifest, state)
    try:
        deadline = time.monotonic() + 30
        while not json.loads(geocluster("status", "-o", "json", "--state-dir", str(state),
                                        check=False).stdout or "{}").get("members"):  # fmt: skip
            assert time.monotonic() < deadline, "no status"
            time.sleep(0.3)
        out = geocluster("shrink", "--state-dir", str(state), "--timeout", "2", check=False)
        assert out.returncode != 0 and "withdrawn" in out.stderr
        assert not (state / "triggers" / "shrink").exists()
        out = geocluster("resync", "nobody", "--state-dir", str(state), check=False)
        assert out.returncode != 0 and "followers: follower-1" in out.stderr
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=30)
