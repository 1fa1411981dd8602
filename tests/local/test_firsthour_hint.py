"""The resume hint `geocluster up` prints after Ctrl-C works from any directory: a relative
--state-dir is printed absolute (the real `geocluster` console code as a subprocess)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from local_lib import FAST, merged, write_manifest

pytestmark = pytest.mark.timeout(120)
GEOCLUSTER = [sys.executable, "-c", "from geocluster.entry import main; main()"]


def test_resume_hint_of_a_relative_state_dir_is_absolute(tmp_path):
    m = write_manifest(tmp_path / "m.yaml", merged(FAST, followers=1), name="rel")
    args = ["up", "--no-live", "-f", "m.yaml", "--state-dir", "st", "--port", "0"]
    up = subprocess.Popen([*GEOCLUSTER, *args], cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "st" / "status.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    up.send_signal(signal.SIGINT)
    out, err = up.communicate(timeout=60)
    assert m.exists() and f"(`geocluster up --state-dir {tmp_path / 'st'}` resumes it)" in out, out + err
