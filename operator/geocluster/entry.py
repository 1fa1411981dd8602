"""The `geocluster` console script: a module that imports nothing heavy, so that a Ctrl-C in
the first moments of `geocluster up` ends the program with status 130 and no traceback.

While click, yaml, pydantic's schemas and the subcommands import, a KeyboardInterrupt can land
inside a C callback, where Python prints "Exception ignored" and carries on, so the Ctrl-C is
lost and `up` runs. SIGINT is therefore only noted during the imports and acted on after them.
"""

from __future__ import annotations

import signal
import sys


def main() -> None:
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from geocluster import cli

        cli.load_subcommands()
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        sys.exit(130)
    try:
        cli.cli()
    except KeyboardInterrupt:
        sys.exit(130)
