"""``geocluster up | status | shrink | resync | promote | down``: the local runtime's commands.

``up`` runs in the foreground (a live table on a terminal, log lines otherwise) until Ctrl-C or
``geocluster down``; the other commands find it through its state dir and talk to it with
trigger files and signals (SIGUSR1: look at the triggers now; SIGTERM: stop).
Exit codes: 0 ok, 1 error (bad manifest, no cluster), 3 ``status`` of a cluster not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from click.core import ParameterSource

from . import localview
from .local import LocalCluster, port_free, stop_leftovers
from .localstate import BUILT_IN, Manifest, StateDir, find_state_dir, load_manifest, state_root
from .spec import SpecError, rfc3339

NOT_RUNNING = 3
_state_opt = click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
                          help="State directory of the cluster (default: by --name under "
                          "$XDG_STATE_HOME/geocluster).")
_name_opt = click.option("--name", "-n", help="Cluster name (metadata.name), when several exist.")


@click.command("up")
@click.option("-f", "--file", "manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="GeoCluster manifest (YAML); default: the state dir's own, else the built-in example.")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path),
              help="State directory (default: $XDG_STATE_HOME/geocluster/<metadata.name>).")
@click.option("--port", type=click.IntRange(0, 65535), default=9851, show_default=True,
              help="Leader port on a first start (0: any). Given explicitly, a busy port is an error; "
              "the default moves to a free port with a warning. A resumed cluster keeps its ports.")
@click.option("--live/--no-live", default=None, help="Live table (default: when stdout is a terminal).")
@click.option("--tls/--no-tls", default=None,
              help="Members serve TLS only, with a CA and certificates generated in <state-dir>/tls "
              "(default: as the previous run of this state dir, else --no-tls).")
@click.option("--force", is_flag=True,
              help="Run a manifest other than the one this state dir was made with (its name, spec "
              "and schedule replace the old ones; the data stays).")
@click.pass_context
def up(ctx: click.Context, manifest: Path | None, state_dir: Path | None, port: int, live: bool | None,
       tls: bool | None, force: bool) -> None:
    """Run a GeoCluster on this machine: leader + followers, schedules, repairs."""
    if manifest is None and state_dir is not None:  # the state dir's own manifest, not the example
        manifest = _remembered(StateDir(state_dir))
    try:
        m = load_manifest(manifest)
    except SpecError as exc:
        raise click.ClickException(f"invalid manifest: {exc}") from None
    state = StateDir(state_dir or state_root() / m.name)
    previous = state.read_cluster() or {}
    if previous and not force:
        _same_manifest(state, previous, m)
    if not previous.get("members") and port and not port_free(port):
        if ctx.get_parameter_source("port") is ParameterSource.COMMANDLINE:
            raise click.ClickException(f"port {port} is in use on 127.0.0.1; pick another --port "
                                       "(--port 0: any free port)")
        click.secho(f"warning: port {port} is in use: the leader will listen on another port; "
                    "the README's `-p 9851` commands need the port `geocluster status` shows",
                    fg="yellow", bold=True, err=True)
    if not state.lock():  # held by a running `up`, even one that has not recorded itself yet
        running = (state.read_cluster() or {}).get("name", state.path.name)
        pid = state.supervisor()
        raise click.ClickException(
            f"{running} is already running in {state.path}" + (f" (pid {pid})" if pid else "")
        )
    live = sys.stdout.isatty() if live is None else live
    ring = _logging(state, live)
    cluster = LocalCluster(m, state, leader_port=port or None, tls=tls)
    resume = "geocluster up" + (f" --state-dir {state.path.absolute()}" if state_dir  # from any cwd
                                else f" -f {m.path}" if m.path else "")
    try:
        asyncio.run(_up(cluster, ring if live else None))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:  # before the signal handlers were installed: nothing started yet
        click.echo(f"interrupted; {m.name} not started", err=True)
        sys.exit(130)
    click.echo(f"stopped {m.name}; data kept in {state.path} (`{resume}` resumes it)")


def _remembered(state: StateDir) -> Path | None:
    """The manifest file a state dir was last run with (None: the built-in example)."""
    info = state.read_cluster() or {}
    path = info.get("manifest")
    if path is None:  # the built-in example, or a state dir from before `manifest` was recorded
        source = info.get("source")
        return Path(source) if source and source != BUILT_IN and Path(source).is_file() else None
    if not Path(path).is_file():
        raise click.ClickException(f"{state.path} was made with {path}, which is gone; pass -f FILE "
                                   "(with --force if it is another manifest)")
    return Path(path)


def _same_manifest(state: StateDir, previous: dict, m: Manifest) -> None:
    """Refuse to run another manifest (or name) in a state dir without --force."""
    had = previous.get("manifest", previous.get("source"))
    if had == BUILT_IN:
        had = None
    now = m.path
    if previous.get("name") not in (None, m.name) or ("manifest" in previous and had != now):
        was = had or "the built-in example"
        raise click.ClickException(
            f"{state.path} holds GeoCluster {previous.get('name')!r} made with {was}, not "
            f"{m.path or 'the built-in example'} ({m.name!r}); pass that manifest, another "
            "--state-dir, or --force to replace it (the data stays)"
        )


async def _up(cluster: LocalCluster, ring: localview.RingHandler | None) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stopping.set)
    loop.add_signal_handler(signal.SIGUSR1, cluster.wake.set)
    log = logging.getLogger("geocluster.local")
    try:
        log.info("starting %s (%s) in %s", cluster.manifest.name, cluster.manifest.source, cluster.state.path)
        starting, interrupted = asyncio.create_task(cluster.start()), asyncio.create_task(stopping.wait())
        await asyncio.wait([starting, interrupted], return_when=asyncio.FIRST_COMPLETED)
        interrupted.cancel()
        if not starting.done():  # Ctrl-C while members start
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            return
        starting.result()
        log.info("up: leader %s; try `%s`; Ctrl-C stops", cluster.sup.leader.address, _redis_cli(cluster))
        if ring is None:
            await cluster.run(stopping)
        else:
            await _live(cluster, ring, stopping)
    finally:
        await cluster.stop()


async def _live(cluster: LocalCluster, ring: localview.RingHandler, stopping: asyncio.Event) -> None:
    from rich.live import Live

    port, ca = cluster.sup.leader.port, cluster.sup.ca_file
    curl = f"curl --cacert {ca} https://localhost:{port}/SERVER" if ca else f"curl localhost:{port}/SERVER"
    hint = (f"leader: {_redis_cli(cluster)} SET fleet truck1 POINT 33.5 -115.2 | "
            f"{curl} | Ctrl-C stops | state: {cluster.state.path}")

    screen = Live(refresh_per_second=4, redirect_stderr=False)

    def view():  # narrow below localview.NARROW columns: names and addresses never cut
        return localview.render(cluster.info, cluster.status, list(ring.lines), hint, screen.console.width)

    screen.update(view())
    with screen:
        runner = asyncio.create_task(cluster.run(stopping))
        while not runner.done():
            screen.update(view())
            await asyncio.wait([runner], timeout=0.5)
        screen.update(view())
        runner.result()


def _redis_cli(cluster: LocalCluster) -> str:
    ca, port = cluster.sup.ca_file, cluster.sup.leader.port
    return f"redis-cli --tls --cacert {ca} -p {port}" if ca else f"redis-cli -p {port}"


def _logging(state: StateDir, live: bool) -> localview.RingHandler:
    """Log to logs/geocluster.log always; to the live view, or else stderr as set up by the group."""
    root = logging.getLogger()
    path = state.log_file("geocluster")
    path.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(path)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ring = localview.RingHandler()
    if live:
        for h in list(root.handlers):
            root.removeHandler(h)
        root.addHandler(ring)
    root.addHandler(to_file)
    return ring


def _find(state_dir: Path | None, name: str | None) -> StateDir:
    try:
        state = find_state_dir(state_dir, name)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    if state.read_cluster() is None:
        raise click.ClickException(f"no local GeoCluster in {state.path}; start one with `geocluster up`")
    return state


def _running(state: StateDir) -> int:
    pid = state.supervisor()
    if not pid:
        raise click.ClickException(f"{state.path.name} is not running; start it with `geocluster up`")
    return pid


@click.command("status")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_state_opt
@_name_opt
def status(output: str, state_dir: Path | None, name: str | None) -> None:
    """Show a local cluster's members and conditions (its .status with -o json)."""
    state = _find(state_dir, name)
    info, st = state.read_cluster() or {}, state.read_status() or {}
    pid = state.supervisor()
    if not pid:  # its `up` is gone (even by kill -9): shown as stopped, not as it last was
        info = {**info, "supervisor": None}
    if output == "json":
        click.echo(json.dumps(st, indent=2))
    else:
        from rich.console import Console

        # a pipe gets 200 columns unless $COLUMNS says otherwise (a terminal: its width)
        console = Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200))
        narrow = console.width < localview.NARROW
        console.print(localview.table(info, st, narrow), *([localview.details(info, st)] if narrow else []),
                      localview.summary(info, st))
    if not pid:
        click.echo(f"{state.path.name} is not running (last update {info.get('updated')})", err=True)
        sys.exit(NOT_RUNNING)


def _trigger(state: StateDir, kind: str, value: str, timeout: float = 30.0) -> str:
    """Leave a request for the loop, wake it, and wait until it is taken. Returns the time it
    was made (records at or after it are this request's). A request not taken in time is
    withdrawn, so it never fires later by surprise."""
    pid = _running(state)
    made = rfc3339(datetime.now(UTC))  # whole seconds, as the records' times
    state.request(kind, value)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while kind in state.triggers():
        if time.monotonic() > deadline or not state.supervisor():
            state.consume(kind, value)
            raise click.ClickException(
                f"{kind} not taken within {timeout:.0f}s (paused, leader unreachable, or another "
                "action in flight: see `geocluster status` and the log); request withdrawn"
            )
        time.sleep(0.1)
    return made


_wait_opt = click.option("--timeout", type=click.FloatRange(0.5, 3600), default=30.0, show_default=True,
                         help="Seconds to wait for the control loop to take the request.")


@click.command("shrink")
@_state_opt
@_name_opt
@_wait_opt
def shrink(state_dir: Path | None, name: str | None, timeout: float) -> None:
    """AOFSHRINK the leader now (followers are resynced after it)."""
    state = _find(state_dir, name)
    made = _trigger(state, "shrink", "", timeout)
    rec = (state.read_status() or {}).get("lastShrink") or {}
    if rec.get("time", "") < made:
        raise click.ClickException("shrink not started (see `geocluster status` and the log)")
    click.echo(f"shrink {rec.get('result', 'requested')} at {rec.get('time', '?')} ({rec.get('reason', '')})")


@click.command("resync")
@click.argument("member")
@_state_opt
@_name_opt
@_wait_opt
def resync(member: str, state_dir: Path | None, name: str | None, timeout: float) -> None:
    """Full resync of one follower from the leader (RESYNC)."""
    state = _find(state_dir, name)
    members = (state.read_cluster() or {}).get("members", [])
    followers = [m["name"] for m in members if m["role"] == "follower"]
    if member not in followers:
        listed = ", ".join(followers) or "none"
        raise click.ClickException(f"{member!r} is not a follower; followers: {listed}")
    made = _trigger(state, "resync", member, timeout)
    rec = (state.read_status() or {}).get("lastResync") or {}
    if rec.get("member") != member or rec.get("time", "") < made:
        raise click.ClickException(f"resync {member} not started (e.g. not reachable: see the log)")
    click.echo(f"resync {member}: {rec.get('result')} at {rec.get('time')}")


@click.command("promote")
@click.argument("member")
@_state_opt
@_name_opt
@_wait_opt
def promote(member: str, state_dir: Path | None, name: str | None, timeout: float) -> None:
    """Make MEMBER the leader: a switchover (writes paused, nothing lost), or with the leader
    down a forced failover to MEMBER."""
    state = _find(state_dir, name)
    info = state.read_cluster() or {}
    followers = [m["name"] for m in info.get("members", []) if m["role"] == "follower"]
    if member not in followers:
        listed = ", ".join(followers) or "none"
        raise click.ClickException(f"{member!r} is not a follower (leader: {info.get('leader')}); "
                                   f"followers: {listed}")
    made = _trigger(state, "promote", member, timeout)
    deadline = time.monotonic() + timeout
    while True:  # the loop took it; the switchover itself takes a moment more
        rec = (state.read_status() or {}).get("lastFailover") or {}
        mine = rec.get("new") == member and rec.get("time", "") >= made
        if mine and rec.get("result") != "started":
            break
        if time.monotonic() > deadline or not state.supervisor():
            raise click.ClickException(f"promote {member} not carried out (e.g. not caught up: "
                                       "see `geocluster status` and the log)")
        time.sleep(0.1)
    if rec["result"] != "ok":
        raise click.ClickException(f"{rec['kind']} to {member} failed: {rec['result']}")
    click.echo(f"{rec['kind']} {rec['old']} -> {member}: ok at {rec['time']}; writes paused "
               f"{rec.get('writePauseMs')} ms, {rec.get('behindBytes')} bytes behind")


@click.command("down")
@_state_opt
@_name_opt
@click.option("--purge", is_flag=True, help="Also delete the state dir (all data).")
def down(state_dir: Path | None, name: str | None, purge: bool) -> None:
    """Stop a local cluster (the running `up`, or processes it left behind)."""
    state = _find(state_dir, name)
    pid = state.supervisor()
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while state.supervisor():
            if time.monotonic() > deadline:
                raise click.ClickException(f"`geocluster up` (pid {pid}) did not stop within 60s")
            time.sleep(0.1)
    left = stop_leftovers(state.read_cluster())
    click.echo(f"stopped {state.path.name}" + (f" ({len(left)} leftover processes)" if left else ""))
    if purge:
        shutil.rmtree(state.path)
        click.echo(f"deleted {state.path}")


from .backup_cli import commands as _backup_commands  # noqa: E402 - it uses the helpers above

commands = [up, status, shrink, resync, promote, down, *_backup_commands]
