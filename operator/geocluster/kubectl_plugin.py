"""``kubectl geocluster``: day-two commands for GeoClusters, as ``kubectl cnpg`` is for CloudNativePG.

``status`` reads the GeoCluster, its ``.status`` and its Events; ``shrink``, ``resync``,
``promote``, ``backup``, ``restart``, ``detach``, ``pause`` and ``resume`` only set or remove the
annotations the operator consumes (the operator acts and removes the one-shot ones; none of
these talks to members); ``report`` writes a support bundle (a tarball of YAML, Secrets' values
redacted; each member's SERVER and INFO through the API server's pod proxy when the members
have no password, else through a port-forward (:mod:`.portforward`): the proxy drops the
Authorization header that would carry the password).

It uses the user's kubeconfig (``--kubeconfig``, ``--context``, ``-n``; kubectl passes none of
its own flags to a plugin), through the kubernetes client's ApiClient with plain JSON dicts, so
every kind (the GeoCluster included) is read the same way. The rendering functions are pure
(dicts in, text out) and fit 80 columns: nothing is cut, long names get a line of their own.
"""

from __future__ import annotations

import signal
import sys
import threading

# A Ctrl-C while the modules below import (~0.2 s) is only noted, and main() exits with 130:
# raised inside an import it was a 30-line traceback (entry.py does the same for `geocluster`).
_interrupted: list[int] = []
_previous = (signal.signal(signal.SIGINT, lambda signum, frame: _interrupted.append(signum))
             if threading.current_thread() is threading.main_thread() else None)

import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import tarfile  # noqa: E402
import textwrap  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402
import yaml  # noqa: E402

from . import resources as res  # noqa: E402
from .entry import run_click  # noqa: E402
from .spec import GEOSERVER_PORT, GROUP, PLURAL, VERSION, MetricsSpec, SecretKeyRef, parse_spec  # noqa: E402

if _previous is not None:
    signal.signal(signal.SIGINT, _previous)

SHRINK = f"{GROUP}/shrink-now"
RESYNC = f"{GROUP}/resync"
PROMOTE = f"{GROUP}/promote"
BACKUP = f"{GROUP}/backup-now"
PAUSED = f"{GROUP}/paused"
RESTART = f"{GROUP}/restart"  # any value; the operator moves it to restart-since when it starts
RESTARTING = f"{GROUP}/restart-since"
DETACH = f"{GROUP}/detach"  # "force": detach even if the old leader cannot be made read-only
BOOTSTRAP_DONE = ("restored", "detached", "skipped")  # status.bootstrap.phase: nothing to detach
WIDTH = 80
EVENTS_SHOWN = 8
LAST_RECORDS = ("lastShrink", "lastResync", "lastBackup", "lastFailover")
# What `report` collects besides the GeoCluster: (API path prefix, plural), namespaced
OWNED_KINDS = (
    ("/apis/apps/v1", "statefulsets"),
    ("/api/v1", "services"),
    ("/api/v1", "configmaps"),
    ("/api/v1", "secrets"),
    ("/apis/policy/v1", "poddisruptionbudgets"),
    ("/apis/networking.k8s.io/v1", "networkpolicies"),
    ("/api/v1", "pods"),
)
OPERATOR_SELECTOR = "app.kubernetes.io/part-of=geocluster,app.kubernetes.io/component=operator"
MEMBER_COMMANDS = ("SERVER", "INFO")  # read-only, GET-able over HTTP; never CONFIG (secret values)
SECRET_KEY = re.compile(r"pass|auth|secret|token|(^|_)key$", re.IGNORECASE)  # not expired_keys


class Api:
    """GET/PATCH of plain JSON paths with the user's kubeconfig credentials."""

    def __init__(self, kubeconfig: str | None, context: str | None, namespace: str | None):
        from kubernetes import config

        try:
            self.client = config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as exc:
            raise click.ClickException(f"kubeconfig: {exc}") from None
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        self.namespace = namespace or (chosen or {}).get("context", {}).get("namespace") or "default"

    def call(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
             content_type: str = "application/json", raw: bool = False) -> Any:
        try:
            request = self.client.param_serialize(
                method, path, query_params=list((query or {}).items()), body=body,
                header_params={"Accept": "application/json", "Content-Type": content_type},
                auth_settings=["BearerToken"],
            )  # fmt: skip
            resp = self.client.call_api(*request[:4], post_params=request[4], _request_timeout=30)
            data = (resp.read() or b"").decode(errors="replace")
        except Exception as exc:  # urllib3: connection refused, TLS, DNS, timeout
            raise ApiError(0, f"cannot reach the API server: {exc}") from None
        if not 200 <= resp.status < 300:
            raise ApiError(resp.status, _api_message(data, resp.reason))
        return data if raw else json.loads(data or "{}")

    def gc_path(self, name: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        return f"{path}/{name}" if name else path

    def annotate(self, name: str, annotations: dict[str, str | None]) -> None:
        """Merge-patch annotations (None removes one), as ``kubectl annotate`` does."""
        self.call("PATCH", self.gc_path(name), {"metadata": {"annotations": annotations}},
                  content_type="application/merge-patch+json")


class ApiError(click.ClickException):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status} {message}" if status else message)
        self.status = status


def _api_message(body: str, reason: str) -> str:
    """The message of a Kubernetes Status body, else the HTTP reason."""
    try:
        return json.loads(body).get("message") or reason
    except (TypeError, ValueError, AttributeError):
        return reason


# --- pure: a GeoCluster and its Events -> a summary -> text ----------------------------------


def summarize(gc: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """The plugin's view of one GeoCluster (what ``-o json|yaml`` prints)."""
    meta, spec, st = gc.get("metadata") or {}, gc.get("spec") or {}, gc.get("status") or {}
    annotations = meta.get("annotations") or {}
    leader_size = st.get("leaderAofSize")
    members = []
    for m in st.get("members") or []:
        follower = m.get("role") == "follower"
        size = m.get("aofSize")
        lag = max(0, leader_size - size) if follower and None not in (leader_size, size) else None
        members.append({
            "name": m.get("name"), "role": m.get("role"), "reachable": m.get("reachable", False),
            "aofSize": size, "lagBytes": lag, "caughtUp": m.get("caughtUp") if follower else None,
            "state": _member_state(m), "repairs": m.get("repairs", 0),
        })  # fmt: skip
    pending = {k: annotations[v] for k, v in
               (("shrink", SHRINK), ("resync", RESYNC), ("promote", PROMOTE), ("backup", BACKUP),
                ("restart", RESTART), ("detach", DETACH))
               if v in annotations}  # fmt: skip
    return {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "phase": st.get("phase") or "Pending",
        "generation": meta.get("generation"),
        "observedGeneration": st.get("observedGeneration"),
        "leader": st.get("leader"),
        "paused": bool(spec.get("paused")) or annotations.get(PAUSED, "").lower() in ("true", "1", "yes"),
        "schedule": (spec.get("aofShrink") or {}).get("schedule"),
        "timeZone": (spec.get("aofShrink") or {}).get("timeZone") or "UTC",
        "requested": pending,
        "restartingSince": annotations.get(RESTARTING),
        "members": members,
        **{k: st.get(k) for k in LAST_RECORDS},
        "hooks": st.get("hooks"),
        "pendingEvents": st.get("pendingEvents"),
        "conditions": [{k: c.get(k) for k in ("type", "status", "reason", "message")}
                       for c in st.get("conditions") or []],
        "events": [_event(e) for e in sorted(events, key=_event_time)][-EVENTS_SHOWN:],
    }


def _member_state(m: dict[str, Any]) -> str:
    if m.get("gaveUp"):
        return "gave up: " + (m.get("divergence") or "")
    if not m.get("reachable"):
        return m.get("divergence") or "unreachable"
    return m.get("divergence") or "ok"


def _event_time(e: dict[str, Any]) -> str:
    return e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp") or ""


def _event(e: dict[str, Any]) -> dict[str, Any]:
    return {"time": _event_time(e), "type": e.get("type"), "reason": e.get("reason"),
            "object": (e.get("involvedObject") or {}).get("name"), "message": e.get("message", "")}


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1024 or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def _record_line(kind: str, rec: dict[str, Any] | None) -> str:
    if not rec:
        return "-"
    parts = [rec.get("time", "?"), rec.get("result") or "?"]
    if kind == "lastShrink":
        parts.append(f"({rec.get('reason', '')}) {human_size(rec.get('sizeBefore'))} -> "
                     f"{human_size(rec.get('sizeAfter'))}")
    elif kind == "lastResync":
        parts.append(f"{rec.get('member', '?')} ({rec.get('reason', '')})")
    elif kind == "lastFailover":
        parts.append(f"{rec.get('kind', '')} {rec.get('old', '?')} -> {rec.get('new', '?')}, "
                     f"{rec.get('behindBytes', '?')} bytes behind")
    else:  # lastBackup and records this plugin does not know yet: their other fields
        parts += [f"{k}={v}" for k, v in rec.items() if k not in ("time", "result")]
    return " ".join(str(p) for p in parts)


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=True) or [indent]


def render(s: dict[str, Any], width: int = WIDTH) -> str:
    """``status`` as text, no line longer than ``width`` (long names wrap, never cut)."""
    out: list[str] = []
    gen = f"generation {s['generation']}, observed {s['observedGeneration']}"
    out += _wrap(f"GeoCluster {s['namespace']}/{s['name']}: {s['phase']}"
                 + (" (paused)" if s["paused"] else "") + f"; leader {s['leader'] or '-'}; {gen}", width)
    for c in s["conditions"]:
        why = f": {c['message']}" if c["message"] else ""
        out += _wrap(f"{c['type']}={c['status']} {c['reason']}{why}", width, "  ")
    out.append("")
    cells = [(m["name"], m["role"], human_size(m["aofSize"]),
              "-" if m["lagBytes"] is None else human_size(m["lagBytes"]),
              "-" if m["caughtUp"] is None else ("yes" if m["caughtUp"] else "no"),
              m["state"] + (f" (repairs {m['repairs']})" if m["repairs"] else ""))
             for m in s["members"]]  # fmt: skip
    head = ("MEMBER", "ROLE", "AOF", "LAG", "CAUGHT-UP", "STATE")
    rest = "{:<9} {:>8} {:>8} {:<9} {}"
    name_w = max([len(head[0])] + [len(c[0]) for c in cells])
    fixed = len(rest.format(*head[1:])) + 1
    if name_w + 1 + fixed <= width:  # one row per member
        out.append(f"{head[0]:<{name_w}} {rest.format(*head[1:])}")
        for c in cells:
            line = f"{c[0]:<{name_w}} {rest.format(*c[1:])}"
            out += _wrap(line, width) if len(line) > width else [line]
    else:  # names too long for one row: each on its own line, its figures under it
        out.append(f"{head[0]}\n  {rest.format(*head[1:])}")
        for c in cells:
            out += _wrap(c[0], width) + _wrap(rest.format(*c[1:]), width, "  ")
    out.append("")
    labels = {"lastShrink": "last shrink", "lastResync": "last resync", "lastBackup": "last backup",
              "lastFailover": "last failover"}
    for key in LAST_RECORDS:
        out += _wrap(f"{labels[key] + ':':<15}{_record_line(key, s.get(key))}", width)
    schedule = f"{s['schedule']} ({s['timeZone']})" if s["schedule"] else "none"
    out += _wrap(f"{'shrink cron:':<15}{schedule}", width)
    hooks, pending = ("-" if s.get(k) is None else s[k] for k in ("hooks", "pendingEvents"))
    out += _wrap(f"{'hooks:':<15}{hooks} on the leader (hooks and channels), "
                 f"{pending} events not yet delivered", width)
    if s.get("restartingSince"):
        out += _wrap(f"{'restarting:':<15}since {s['restartingSince']} (followers first, the leader "
                     "last)", width)
    if s["requested"]:
        out += _wrap("requested (not yet taken): "
                     + ", ".join(f"{k}={v}" for k, v in s["requested"].items()), width)
    out.append("")
    out.append(f"Events (last {EVENTS_SHOWN}):" if s["events"] else "Events: none")
    for e in s["events"]:
        out += _wrap(f"{e['time']} {e['type']} {e['reason']} {e['object']}: {e['message']}", width, "  ")
    return "\n".join(out)


def redact(obj: dict[str, Any]) -> dict[str, Any]:
    """A Secret's values replaced by their length; other objects unchanged."""
    if obj.get("kind") != "Secret":
        return obj
    out = {**obj, "metadata": {**(obj.get("metadata") or {})}}
    annotations = dict(out["metadata"].get("annotations") or {})
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)  # holds the values too
    out["metadata"]["annotations"] = annotations
    for field in ("data", "stringData"):
        if field in out:
            out[field] = {k: f"<redacted: {len(v or '')} chars>" for k, v in (out[field] or {}).items()}
    return out


def owned_by(obj: dict[str, Any], gc: dict[str, Any]) -> bool:
    """Whether ``obj`` belongs to the GeoCluster: its ownerReference or its instance label."""
    meta, gmeta = obj.get("metadata") or {}, gc.get("metadata") or {}
    refs = {r.get("uid") for r in meta.get("ownerReferences") or []}
    labels = meta.get("labels") or {}
    return gmeta.get("uid") in refs or (
        labels.get("app.kubernetes.io/instance") == gmeta.get("name")
        and labels.get("app.kubernetes.io/name") == "geoserver"
    )


@dataclass(frozen=True)
class MemberAccess:
    """How ``report`` reaches the members' client port (see :func:`member_access`)."""

    via: str  # "proxy" (HTTP GETs through the pod proxy) or "port-forward" (RESP)
    scheme: str = ""  # the pod proxy's "https:" prefix with TLS
    auth: SecretKeyRef | None = None  # the Secret key holding the password
    tls_secret: str | None = None  # the Secret with ca.crt (and tls.crt/tls.key)
    client_cert: bool = False  # the members require client certificates
    cluster: res.Cluster | None = None


def member_access(gc: dict[str, Any], via: str = "auto") -> MemberAccess:
    """The pod proxy for members without a password, else (or with ``via`` port-forward) a
    port-forward: a member with a password answers "authentication required" without it, and
    the API server removes the caller's Authorization header once it has authenticated them,
    so the password cannot get through the proxy (and putting it there would hand it to the
    API server as a credential). Required client certificates cannot go through it either."""
    try:
        spec = parse_spec(gc.get("spec"))
    except Exception:  # an invalid spec (the operator reports it): try; an auth error is kept
        return MemberAccess("port-forward" if via == "port-forward" else "proxy")
    cluster = res.Cluster.from_body(gc, spec)
    auth = res.auth_ref(cluster)
    client_cert = spec.tls is not None and spec.tls.client_auth == "required"
    if via == "auto":
        via = "port-forward" if auth is not None or client_cert else "proxy"
    return MemberAccess(via, "https:" if spec.tls is not None else "", auth,
                        res.tls_secret_name(cluster), client_cert, cluster)


def redact_reply(text: str) -> str:
    """A member's JSON reply, pretty-printed, any field named like a credential replaced."""

    def scrub(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: "<redacted>" if SECRET_KEY.search(str(k)) else scrub(x) for k, x in v.items()}
        return [scrub(x) for x in v] if isinstance(v, list) else v

    try:
        return json.dumps(scrub(json.loads(text)), indent=2) + "\n"
    except ValueError:
        return "<not JSON: not kept>\n"  # whatever answered is not geoserver; its text could be anything


# --- I/O ---------------------------------------------------------------------------------------


def _items(api: Api, path: str, query: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return list(api.call("GET", path, query=query).get("items") or [])


def _get_cluster(api: Api, name: str | None) -> dict[str, Any]:
    if name:
        try:
            return api.call("GET", api.gc_path(name))
        except ApiError as exc:
            if exc.status == 404:
                raise click.ClickException(f"no GeoCluster {name!r} in namespace {api.namespace}") from None
            raise
    found = _items(api, api.gc_path())
    if len(found) == 1:
        return found[0]
    names = ", ".join(g["metadata"]["name"] for g in found)
    raise click.ClickException(f"{len(found)} GeoClusters in namespace {api.namespace}"
                               + (f" ({names}): name one" if found else ""))


def _events(api: Api, gc: dict[str, Any]) -> list[dict[str, Any]]:
    """Events of the GeoCluster and its pods (filtered here: not every API filters fields)."""
    name = gc["metadata"]["name"]

    member = re.compile(rf"^{re.escape(name)}-((leader|follower)-)?\d+$")  # <name>-k, or older layouts

    def ours(e: dict[str, Any]) -> bool:
        obj = (e.get("involvedObject") or {}).get("name") or ""
        return obj == name or bool(member.match(obj))

    return [e for e in _items(api, f"/api/v1/namespaces/{api.namespace}/events") if ours(e)]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group()
@click.option("--kubeconfig", envvar="KUBECONFIG", type=click.Path(dir_okay=False),
              help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config).")
@click.option("--context", help="Kubeconfig context (default: the current one).")
@click.option("-n", "--namespace", help="Namespace (default: the context's, else default).")
@click.pass_context
def cli(ctx: click.Context, kubeconfig: str | None, context: str | None, namespace: str | None) -> None:
    """kubectl geocluster: status, manual actions and support bundles for GeoClusters."""
    if kubeconfig and ":" in kubeconfig:  # $KUBECONFIG may list several; the client reads one
        kubeconfig = kubeconfig.split(":")[0]
    ctx.obj = lambda: Api(kubeconfig, context, namespace)


@cli.command("status")
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Choice(["text", "json", "yaml"]), default="text")
@click.pass_obj
def status(api_factory: Any, name: str | None, output: str) -> None:
    """Members, roles, AOF sizes, lag, conditions, last actions and recent Events."""
    api = api_factory()
    gc = _get_cluster(api, name)
    summary = summarize(gc, _events(api, gc))
    if output == "json":
        click.echo(json.dumps(summary, indent=2))
    elif output == "yaml":
        click.echo(yaml.safe_dump(summary, sort_keys=False), nl=False)
    else:
        click.echo(render(summary, WIDTH))


def _followers(gc: dict[str, Any]) -> list[str]:
    return [m["name"] for m in (gc.get("status") or {}).get("members") or [] if m.get("role") == "follower"]


def _request(api: Api, gc: dict[str, Any], key: str, value: str, what: str) -> None:
    api.annotate(gc["metadata"]["name"], {key: value})
    click.echo(f"{what} requested ({key}={value}) on {api.namespace}/{gc['metadata']['name']}; "
               "the operator takes it on its next probe: see `kubectl geocluster status`")


@cli.command("shrink")
@click.argument("name", required=False)
@click.pass_obj
def shrink(api_factory: Any, name: str | None) -> None:
    """AOFSHRINK the leader now (followers are resynced after it)."""
    api = api_factory()
    _request(api, _get_cluster(api, name), SHRINK, _now(), "shrink")


def _member_command(verb: str, key: str, help_text: str) -> click.Command:
    @click.argument("member")
    @click.argument("name", required=False)
    @click.pass_obj
    def command(api_factory: Any, member: str, name: str | None) -> None:
        api = api_factory()
        gc = _get_cluster(api, name)
        followers = _followers(gc)
        if followers and member not in followers:  # no status yet: the operator judges it
            raise click.ClickException(f"{member!r} is not a follower of {gc['metadata']['name']}; "
                                       f"followers: {', '.join(followers)}")
        _request(api, gc, key, member, f"{verb} {member}")

    command.__doc__ = help_text
    return cli.command(verb)(command)


_member_command("resync", RESYNC, "Full resync of follower MEMBER from the leader.")
_member_command("promote", PROMOTE, "Make follower MEMBER the leader (a switchover).")


@cli.command("backup")
@click.argument("name", required=False)
@click.pass_obj
def backup(api_factory: Any, name: str | None) -> None:
    """Take a backup now (spec.backup must be set up)."""
    api = api_factory()
    _request(api, _get_cluster(api, name), BACKUP, _now(), "backup")


@cli.command("restart")
@click.argument("name", required=False)
@click.pass_obj
def restart(api_factory: Any, name: str | None) -> None:
    """Rolling restart of every member: followers first, then a switchover, then the old leader."""
    api = api_factory()
    _request(api, _get_cluster(api, name), RESTART, _now(), "rolling restart")


@cli.command("detach")
@click.argument("name", required=False)
@click.option("--force", is_flag=True, help="Detach even if the old leader cannot be made read-only "
              "or does not answer (writes it acknowledged after the last byte copied are lost).")
@click.pass_obj
def detach(api_factory: Any, name: str | None, force: bool) -> None:
    """End a live migration (spec.bootstrap.fromLeader): the old leader is made read-only, the
    new one catches up with every byte and takes writes."""
    api = api_factory()
    gc = _get_cluster(api, name)
    cname = gc["metadata"]["name"]
    if not ((gc.get("spec") or {}).get("bootstrap") or {}).get("fromLeader"):
        raise click.ClickException(f"{cname} is not migrating: detach ends a spec.bootstrap.fromLeader")
    phase = ((gc.get("status") or {}).get("bootstrap") or {}).get("phase")
    if phase in BOOTSTRAP_DONE:
        raise click.ClickException(f"{cname} is not migrating: status.bootstrap.phase is {phase}")
    _request(api, gc, DETACH, "force" if force else _now(), "detach" + (" (forced)" if force else ""))


@cli.command("pause")
@click.argument("name", required=False)
@click.pass_obj
def pause(api_factory: Any, name: str | None) -> None:
    """Stop the operator's actions (status stays fresh; requests wait)."""
    api = api_factory()
    gc = _get_cluster(api, name)
    api.annotate(gc["metadata"]["name"], {PAUSED: "true"})
    click.echo(f"paused {api.namespace}/{gc['metadata']['name']} ({PAUSED}=true)")


@cli.command("resume")
@click.argument("name", required=False)
@click.pass_obj
def resume(api_factory: Any, name: str | None) -> None:
    """Undo ``pause`` (spec.paused, set in Git, stays as it is)."""
    api = api_factory()
    gc = _get_cluster(api, name)
    api.annotate(gc["metadata"]["name"], {PAUSED: None})
    still = " (still paused: spec.paused is true)" if (gc.get("spec") or {}).get("paused") else ""
    click.echo(f"resumed {api.namespace}/{gc['metadata']['name']}{still}")


@cli.command("report")
@click.argument("name", required=False)
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False),
              help="Tarball to write (default: geocluster-report-<name>-<time>.tar.gz).")
@click.option("--operator-namespace", default="geocluster-system", show_default=True,
              help="Where the operator's pods run (their logs go in the bundle).")
@click.option("--log-lines", type=click.IntRange(1, 100000), default=2000, show_default=True)
@click.option("--via", type=click.Choice(["auto", "proxy", "port-forward"]), default="auto",
              show_default=True, help="How members' SERVER/INFO are read: auto = the pod proxy "
              "without a password, a port-forward (RESP with AUTH) with one or with required "
              "client certificates.")
@click.pass_obj
def report(api_factory: Any, name: str | None, path: str | None, operator_namespace: str,
           log_lines: int, via: str) -> None:
    """Write a support bundle: the GeoCluster, its objects, Events, operator logs and each
    member's metrics, SERVER and INFO (through the pod proxy, or a port-forward when the
    members have a password), Secrets' values and credential-named fields redacted; what
    could not be collected is in skipped.txt."""
    api = api_factory()
    gc = _get_cluster(api, name)
    cname = gc["metadata"]["name"]
    path = path or f"geocluster-report-{cname}-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz"
    files: dict[str, str] = {}
    skipped: list[str] = []
    files["geocluster.yaml"] = yaml.safe_dump(gc, sort_keys=False)
    events = _events(api, gc)
    files["events.yaml"] = yaml.safe_dump(events, sort_keys=False)
    files["status.txt"] = render(summarize(gc, events), WIDTH) + "\n"
    pods: list[dict[str, Any]] = []
    for prefix, plural in OWNED_KINDS:
        try:
            listed = _items(api, f"{prefix}/namespaces/{api.namespace}/{plural}")
        except ApiError as exc:
            skipped.append(f"{plural}: {exc.message}")
            continue
        objs = [o for o in listed if owned_by(o, gc)]
        pods += objs if plural == "pods" else []
        for o in objs:
            text = yaml.safe_dump(redact(o), sort_keys=False)
            files[f"objects/{plural}/{o['metadata']['name']}.yaml"] = text
    _operator_logs(api, operator_namespace, log_lines, files, skipped)
    _members(api, gc, pods, files, skipped, via)
    files["skipped.txt"] = "".join(f"{s}\n" for s in skipped)
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{cname}/{rel}")
            info.size, info.mtime = len(data), int(time.time())
            tar.addfile(info, io.BytesIO(data))
    click.echo(f"wrote {path} ({len(files)} files; skipped: {len(skipped)}, see skipped.txt)")


def _members(api: Api, gc: dict[str, Any], pods: list[dict[str, Any]], files: dict[str, str],
             skipped: list[str], via: str = "auto") -> None:
    """Each member's /metrics (its metrics listener has no password) through the API server's
    pod proxy, and its SERVER/INFO: through the pod proxy (HTTP GETs on the client port) when
    the members have no password, else through a port-forward (RESP with AUTH)."""
    try:
        metrics = MetricsSpec.model_validate((gc.get("spec") or {}).get("metrics") or {})
    except ValueError:  # pydantic's ValidationError: an invalid spec, the defaults then
        metrics = MetricsSpec()
    access = member_access(gc, via)
    proxy = f"/api/v1/namespaces/{api.namespace}/pods"
    forward = _Forwarder(api, access) if access.via == "port-forward" else None
    for pod in pods:
        pname = pod["metadata"]["name"]
        try:
            if not metrics.enabled:
                skipped.append(f"{pname} metrics: spec.metrics.enabled is false")
            else:
                files[f"members/{pname}.metrics.txt"] = api.call(
                    "GET", f"{proxy}/{pname}:{metrics.port}/proxy/metrics", raw=True)
        except ApiError as exc:
            skipped.append(f"{pname} metrics: {exc.message}")
        if access.via == "proxy" and access.auth is not None:
            skipped.append(f"{pname} SERVER/INFO: {PROXY_NO_PASSWORD}")
            continue
        if forward is not None:
            replies, why = forward.ask(pname)
            if why:
                skipped.append(f"{pname} SERVER/INFO: {why}")
            for command, text in replies.items():
                files[f"members/{pname}.{command.lower()}.json"] = redact_reply(text)
            continue
        for command in MEMBER_COMMANDS:
            try:
                text = api.call("GET", f"{proxy}/{access.scheme}{pname}:{GEOSERVER_PORT}/proxy/{command}",
                                raw=True)
            except ApiError as exc:
                skipped.append(f"{pname} {command}: {exc.message}")
                continue
            files[f"members/{pname}.{command.lower()}.json"] = redact_reply(text)


PROXY_NO_PASSWORD = ("the members require a password and the API server's pod proxy drops the "
                     "Authorization header that would carry it (use --via port-forward)")
PORT_FORWARD_RBAC = ("the report needs `get` and `create` on pods/portforward (docs/security.md); "
                     f"without them: `kubectl port-forward pod/<member> {GEOSERVER_PORT}` and "
                     "`redis-cli -a`")  # fmt: skip


class _Forwarder:
    """SERVER/INFO of members through port-forwards, the password and TLS material read once
    from the Secrets the user can read."""

    def __init__(self, api: Api, access: MemberAccess):
        self.api, self.access = api, access
        self.password: str | None = None
        self.tls: Any = None
        self.why: str | None = None
        try:
            if access.auth is not None:
                self.password = self._secret(access.auth.name, (access.auth.key,))[access.auth.key]
            if access.tls_secret is not None:
                keys = ("ca.crt", "tls.crt", "tls.key") if access.client_cert else ("ca.crt",)
                pem = self._secret(access.tls_secret, keys)
                from .probe import tls_context

                self.tls = tls_context(pem["ca.crt"], pem.get("tls.crt"), pem.get("tls.key"))
        except (ApiError, KeyError, ValueError, OSError) as exc:
            self.why = str(exc)

    def _secret(self, name: str, keys: tuple[str, ...]) -> dict[str, str]:
        import base64

        try:
            data = self.api.call("GET", f"/api/v1/namespaces/{self.api.namespace}/secrets/{name}").get("data")
        except ApiError as exc:
            raise ApiError(0, f"cannot read Secret {name!r}: {exc.message}") from None
        missing = [k for k in keys if k not in (data or {})]
        if missing:
            raise KeyError(f"Secret {name!r} has no key {', '.join(map(repr, missing))}")
        return {k: base64.b64decode(data[k]).decode() for k in keys}

    def ask(self, pod: str) -> tuple[dict[str, str], str | None]:
        """(replies, None) or ({}, why not)."""
        from .portforward import ForwardError, ask_member

        if self.why:
            return {}, self.why
        cluster = self.access.cluster
        try:
            return ask_member(self.api.client, self.api.namespace, pod, GEOSERVER_PORT, MEMBER_COMMANDS,
                              password=self.password, tls=self.tls,
                              server_name=res.pod_dns(cluster, pod) if cluster else None), None
        except ForwardError as exc:
            hint = f"; {PORT_FORWARD_RBAC}" if exc.status == 403 else ""
            return {}, f"port-forward: {exc}{hint}"


def _operator_logs(api: Api, namespace: str, lines: int, files: dict[str, str], skipped: list[str]) -> None:
    try:
        pods = _items(api, f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": OPERATOR_SELECTOR})
        wanted = dict(s.split("=") for s in OPERATOR_SELECTOR.split(","))
        pods = [p for p in pods if wanted.items() <= ((p.get("metadata") or {}).get("labels") or {}).items()]
    except ApiError as exc:
        skipped.append(f"operator logs: cannot list pods in {namespace}: {exc.message}")
        return
    if not pods:
        skipped.append(f"operator logs: no operator pod in {namespace} ({OPERATOR_SELECTOR})")
    for pod in pods:
        pname = pod["metadata"]["name"]
        try:
            log_path = f"/api/v1/namespaces/{namespace}/pods/{pname}/log"
            files[f"operator/{pname}.log"] = api.call("GET", log_path, query={"tailLines": lines}, raw=True)
        except ApiError as exc:
            skipped.append(f"operator logs {pname}: {exc.message}")


def main() -> None:
    """Console-script entry point (``kubectl-geocluster``, found by kubectl on $PATH)."""
    if _interrupted:  # Ctrl-C while this module imported
        sys.exit(130)
    sys.exit(run_click(cli, prog_name="kubectl geocluster"))
