"""Runs tests/e2e/kind.sh on a machine with Docker and kind; skips (with the reason) otherwise.

The script itself also exits 0 with "SKIP: ..." when a tool is missing, so it is safe to call
directly: bash tests/e2e/kind.sh
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "kind.sh"


def _missing() -> str | None:
    if shutil.which("docker") is None:
        return "docker not available (no docker CLI)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"docker not available ({exc})"
    if info.returncode != 0:
        return "docker not available (no running engine: `docker info` failed)"
    if shutil.which("kind") is None:
        return "kind not available"
    path = os.pathsep.join([str(ROOT / ".tools" / "bin"), os.environ.get("PATH", "")])
    for tool in ("kubectl", "helm"):
        if shutil.which(tool, path=path) is None:
            return f"{tool} not available (bash .ci/install-tools)"
    return None


def test_script_is_valid_bash():
    """Cheap check that runs everywhere: the script parses and is strict."""
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    assert "set -euo pipefail" in SCRIPT.read_text()


def test_script_skips_cleanly_without_tools(tmp_path):
    """With no docker on PATH the script says why and exits 0."""
    env = {**os.environ, "PATH": f"{tmp_path}:/usr/bin:/bin"}
    if shutil.which("docker", path=env["PATH"]):
        pytest.skip("docker is in /usr/bin; cannot hide it")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("SKIP: docker not available")


@pytest.mark.timeout(1800)
def test_kind_end_to_end():
    reason = _missing()
    if reason:
        pytest.skip(reason)
    proc = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, text=True, timeout=1800)
    assert proc.returncode == 0, "tests/e2e/kind.sh failed (see its output above)"
