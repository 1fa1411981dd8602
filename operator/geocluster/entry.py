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
    sys.exit(run_click(cli.cli))


def run_click(command, **extra) -> int:
    """Run the CLI as click's standalone mode would, except that a Ctrl-C is status 130.

    Standalone click turns a KeyboardInterrupt into "Aborted!" and status 1, so a Ctrl-C after
    the imports but before `up` installs its signal handlers (while it reads the manifest or
    takes the state dir's lock) looked like a failure.
    """
    import click

    try:
        code = command.main(standalone_mode=False, **extra)
    except KeyboardInterrupt:
        return 130
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click already ended the ^C line
            return 130
        click.echo("Aborted!", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return code if isinstance(code, int) else 0  # commands return None, or an Exit's code
