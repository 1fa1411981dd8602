"""The environment that runs another checkout's geoserver (`--baseline-src DIR`, e.g. a
`git worktree` of an older commit) beside this one, for the side-by-side benchmarks."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def baseline_env(parser: argparse.ArgumentParser, src: Path) -> dict[str, str]:
    """PYTHONPATH putting `src`'s server first; a usage error when `src` holds none (the
    benchmark would otherwise run this checkout twice and call one of them the baseline)."""
    if not (src / "server" / "geoserver").is_dir():
        parser.error(f"--baseline-src {src}: no server/geoserver there")
    return {"PYTHONPATH": str(src / "server") + os.pathsep + os.environ.get("PYTHONPATH", "")}
