"""The ``geocluster`` command: ``crd`` prints the CRD, ``run`` runs the kopf operator.

Other subcommands (the local runtime's up/status/shrink/resync/down) live in their own module,
``geocluster.local_cli``, which exposes ``commands`` (a list of click commands) or a
``register(group)`` function; it is imported lazily so that this module never depends on it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import random

import click
import yaml

from . import __version__


@click.group()
@click.version_option(__version__, prog_name="geocluster")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """geocluster: run and operate GeoClusters of geoserver."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command("crd")
def crd_command() -> None:
    """Print the GeoCluster CustomResourceDefinition as YAML."""
    from .crd import crd

    click.echo(yaml.safe_dump(crd(), sort_keys=False), nl=False)


@cli.command("run")
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Namespace to serve.")
@click.option("--all-namespaces", "-A", is_flag=True, help="Serve every namespace.")
@click.option("--standalone", is_flag=True, help="No peering with other operator replicas.")
@click.option("--peering", "peering_name", default=None, help="Peering object name.")
@click.option("--priority", type=int, default=None,
              help="Peering priority of this replica (default: random, so that of several "
              "replicas exactly one acts; kopf pauses all replicas that share a priority).")
@click.option("--liveness", "liveness", default=None, help="host:port for /healthz, e.g. 0.0.0.0:8080.")
@click.option("--metrics", "metrics_addr", default="0.0.0.0:9090", help="host:port of /metrics.")
def run_command(
    namespaces: tuple[str, ...],
    all_namespaces: bool,
    standalone: bool,
    peering_name: str | None,
    priority: int | None,
    liveness: str | None,
    metrics_addr: str,
) -> None:
    """Run the GeoCluster operator (kopf) against the current Kubernetes context."""
    import kopf

    from . import handlers, metrics

    if not namespaces and not all_namespaces:
        raise click.UsageError("pass --namespace/-n (repeatable) or --all-namespaces")
    host, _, port = metrics_addr.rpartition(":")
    metrics.serve(host or "0.0.0.0", int(port))
    liveness_endpoint = f"http://{liveness}/healthz" if liveness else None
    if priority is None:
        priority = random.SystemRandom().randint(1, 2**31 - 1)
        click.echo(f"geocluster: peering priority {priority}", err=True)
    asyncio.run(
        kopf.operator(
            registry=handlers.registry(),
            standalone=standalone,
            peering_name=peering_name,
            priority=priority,
            namespaces=list(namespaces),
            clusterwide=all_namespaces,
            liveness_endpoint=liveness_endpoint,
        )
    )


def load_subcommands(group: click.Group | None = None) -> None:
    """Attach subcommands from ``geocluster.local_cli`` if that module exists."""
    group = group or cli
    try:
        module = importlib.import_module(".local_cli", __package__)
    except ModuleNotFoundError as exc:
        if exc.name != f"{__package__}.local_cli":
            raise
        return
    if hasattr(module, "register"):
        module.register(group)
    for command in getattr(module, "commands", []):
        group.add_command(command)


def main() -> None:
    """Entry point (the console script is geocluster.entry, which guards Ctrl-C around this)."""
    load_subcommands()
    cli()
