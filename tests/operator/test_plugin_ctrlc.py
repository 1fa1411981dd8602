"""Ctrl-C on `kubectl geocluster` in its first moments (while its modules import, ~0.2 s) ends
it without a traceback: the real console script as a subprocess, SIGINT at several moments."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLUGIN = shutil.which("kubectl-geocluster", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize("after", [0.1, 0.12, 0.15, 0.2, 0.3])  # earlier: site.py, none of ours
def test_ctrl_c_while_starting_is_no_traceback(tmp_path, after):
    assert PLUGIN, "kubectl-geocluster is not installed in this venv: pip install -e ."
    proc = subprocess.Popen([PLUGIN, "--kubeconfig", str(tmp_path / "none"), "status"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    assert len(err.splitlines()) <= 2, err  # nothing, click's "Aborted!", or the kubeconfig error
    assert proc.returncode in (1, 130, -signal.SIGINT)
