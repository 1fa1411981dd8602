"""The `geocluster` console script: a module that imports nothing heavy, so that a Ctrl-C in
the first moments (while click, yaml, kopf and the subcommands import) ends with status 130
and no traceback."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from geocluster.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        sys.exit(130)
