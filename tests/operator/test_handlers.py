"""The timer handler's ordering and error handling, with the Kubernetes API and the members
replaced by recorders (the end-to-end behaviour is in test_operator*.py)."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import kopf
import pytest
from geocluster import handlers, kube, probe
from geocluster.policy import Member

NS, NAME = "default", "gc"
LEADER = Member("gc-0", "leader", "127.0.0.2:9851", True, 1000)
FOLLOWERS = [
    Member(f"gc-{i}", "follower", f"127.0.0.{2 + i}:9851", True, 1000, True, "127.0.0.2:9851") for i in (1, 2)
]


class Recorder:
    """kube and probe calls in order; ``fail`` names calls that raise."""

    def __init__(self, monkeypatch, fail: tuple[str, ...] = ()):
        self.calls: list[tuple[str, Any]] = []
        self.tls: list[tuple[str, Any, Any]] = []  # (call, ssl context, server name(s))
        self.status: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}  # what the API has (the tests' bodies say the same)
        self.spec: dict[str, Any] = {}
        self.fail = fail

        def rec(name: str, result: Any = None):
            def call(*args: Any, **kw: Any) -> Any:
                self.calls.append((name, args))
                if name in self.fail:
                    raise RuntimeError(f"{name} failed")
                return result() if callable(result) else result

            return call

        # pods as the operator left them: role labels, made from the current template
        pods = [{"metadata": {"name": m.name, "labels": {"geo.geocluster.io/role": m.role},
                              "annotations": {handlers.res.TEMPLATE_HASH: "current"}},
                 "status": {"podIP": m.address.split(":")[0]}}
                for m in (LEADER, *FOLLOWERS)]  # fmt: skip
        monkeypatch.setattr(handlers.res, "template_hash", lambda cluster: "current")
        monkeypatch.setattr(kube, "list_pods", rec("list_pods", pods))
        monkeypatch.setattr(kube, "read_status", lambda ns, name: dict(self.status))
        monkeypatch.setattr(kube, "read_geocluster", lambda ns, name: {
            "metadata": dict(self.meta), "spec": self.spec, "status": dict(self.status)})
        monkeypatch.setattr(kube, "read", rec("read"))  # no v1alpha1 StatefulSets, no ConfigMap yet
        monkeypatch.setattr(kube, "apply", rec("apply", "created"))
        monkeypatch.setattr(kube, "patch_pod_labels", rec("patch_pod_labels"))
        monkeypatch.setattr(handlers, "_migrated", set())
        monkeypatch.setattr(kube, "read_secret_key", rec("read_secret_key", "pw"))
        monkeypatch.setattr(kube, "patch_annotations", rec("patch_annotations"))
        monkeypatch.setattr(kube, "delete_pod", rec("delete_pod"))

        def patch_status(ns: str, name: str, status: dict[str, Any]) -> None:
            self.calls.append(("patch_status", (status,)))
            self.status = status

        monkeypatch.setattr(kube, "patch_status", patch_status)

        async def observe_all(targets, password=None, timeout=None, ca_file=None, tls=None,
                              server_names=None):
            self.calls.append(("observe_all", (password,)))
            self.tls.append(("observe_all", tls, dict(server_names or {})))
            return [LEADER, *FOLLOWERS]

        async def send(address, *args, password=None, timeout=5.0, ca_file=None, tls=None,
                       server_name=None):
            self.calls.append(("send", (address, *args)))
            self.tls.append(("send", tls, server_name))
            if "send" in self.fail:
                raise probe.ProbeError("send failed")
            return {"ok": True}

        monkeypatch.setattr(probe, "observe_all", observe_all)
        monkeypatch.setattr(probe, "send", send)
        self.events: list[tuple[str, str]] = []
        monkeypatch.setattr(kopf, "event", lambda body, *, type, reason, message: self.event(type, reason))
        monkeypatch.setattr(kopf, "warn", lambda body, *, reason, message: self.event("Warning", reason))
        monkeypatch.setattr(handlers, "_last_probe", {})

    def event(self, type_: str, reason: str) -> None:
        self.events.append((type_, reason))

    def names(self) -> list[str]:
        return [n for n, _ in self.calls]


def body(annotations: dict[str, str] | None = None, spec: dict[str, Any] | None = None, status=None):
    meta = {"name": NAME, "namespace": NS, "uid": "u1", "generation": 1,
            "creationTimestamp": "2026-01-01T00:00:00Z", "annotations": annotations or {}}  # fmt: skip
    return {"metadata": meta, "spec": {"followers": 2, "aofShrink": {"schedule": None}, **(spec or {})},
            "status": status or {}}  # fmt: skip


LOG = logging.getLogger("test")


async def tick(rec: Recorder, b: dict[str, Any]) -> None:
    """One timer tick on ``b``; the API's copy says the same (the timer reads it fresh)."""
    rec.meta, rec.spec = dict(b["metadata"]), b["spec"]
    await handlers.tick(b, LOG)


async def test_trigger_is_removed_after_the_intent_and_before_acting(monkeypatch):
    """An operator that dies while acting must not find the trigger again once the action settled."""
    rec = Recorder(monkeypatch)
    await tick(rec, body({handlers.SHRINK_ANNOTATION: "1"}))
    names = rec.names()
    assert names.index("patch_status") < names.index("patch_annotations") < names.index("send")
    assert ("send", ("127.0.0.2:9851", "AOFSHRINK")) in rec.calls


@pytest.mark.parametrize(
    "trigger", [{handlers.SHRINK_ANNOTATION: "1"}, {handlers.RESYNC_ANNOTATION: "gc-2"}]
)
async def test_trigger_that_cannot_be_removed_is_not_acted_on(monkeypatch, trigger):
    """If the annotation cannot be removed, acting would repeat the action later: record it failed."""
    rec = Recorder(monkeypatch, fail=("patch_annotations",))
    await tick(rec, body(trigger))
    assert "send" not in rec.names()
    rec_key = "lastShrink" if handlers.SHRINK_ANNOTATION in trigger else "lastResync"
    assert rec.status[rec_key]["result"].startswith("error: could not remove the trigger")
    assert ("Warning", "ActionFailed") in rec.events


AUTH = {"server": {"authSecretRef": {"name": "gc-auth"}}}


async def test_missing_auth_secret_is_reported_in_status_not_raised(monkeypatch):
    rec = Recorder(monkeypatch, fail=("read_secret_key",))
    await tick(rec, body({handlers.SHRINK_ANNOTATION: "1"}, spec=AUTH))  # must not raise
    degraded = next(c for c in rec.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "AuthSecretUnavailable"
    assert "gc-auth" in degraded["message"]
    assert next(c for c in rec.status["conditions"] if c["type"] == "Ready")["status"] == "False"
    assert "observe_all" not in rec.names() and "send" not in rec.names()  # nobody probed or acted on
    assert ("Warning", "AuthSecretUnavailable") in rec.events


async def test_password_is_read_once_per_tick_and_used_for_probes_and_actions(monkeypatch):
    rec = Recorder(monkeypatch)
    await tick(rec, body({handlers.SHRINK_ANNOTATION: "1"}, spec=AUTH))
    assert rec.names().count("read_secret_key") == 1
    assert ("observe_all", ("pw",)) in rec.calls and "send" in rec.names()


async def test_timer_never_writes_observed_generation(monkeypatch):
    """Only reconcile sets observedGeneration (after applying that generation); the timer's body
    may be older, and a failing reconcile must not look reconciled."""
    rec = Recorder(monkeypatch)
    b = body({handlers.SHRINK_ANNOTATION: "1"}, status={"observedGeneration": 1})
    b["metadata"]["generation"] = 2
    await tick(rec, b)
    writes = [args[0] for name, args in rec.calls if name == "patch_status"]
    assert writes and all("observedGeneration" not in w for w in writes)


# --- spec.tls: the TLS Secret's ca.crt is read per tick; probes verify pod DNS names ----------

TLS = {"tls": {"secretName": "gc-certs"}}


def tls_secret(monkeypatch, tmp_path, rec: Recorder, keys=("ca.crt",)) -> None:
    """kube.read_secret_keys answering from a real throw-away CA (and leaf)."""
    from tlscerts import CA

    ca = CA(tmp_path)
    leaf = ca.issue("gc", (f"*.gc-members.{NS}.svc.cluster.local",))
    files = {"ca.crt": ca.path, "tls.crt": leaf.cert, "tls.key": leaf.key}

    def read(ns: str, name: str, wanted: tuple[str, ...]) -> dict[str, str]:
        rec.calls.append(("read_secret_keys", (name, wanted)))
        return {k: files[k].read_text() for k in wanted if k in keys}

    monkeypatch.setattr(kube, "read_secret_keys", read)


async def test_tls_probes_and_actions_verify_the_pod_dns_names(monkeypatch, tmp_path):
    rec = Recorder(monkeypatch)
    tls_secret(monkeypatch, tmp_path, rec)
    await tick(rec, body({handlers.SHRINK_ANNOTATION: "1"}, spec=TLS))
    assert ("read_secret_keys", ("gc-certs", ("ca.crt",))) in rec.calls  # no key without clientAuth
    (_, context, names), (_, send_context, send_name) = rec.tls
    assert isinstance(context, ssl.SSLContext) and context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED and send_context is context
    assert names == {f"gc-{m}": f"gc-{m}.gc-members.{NS}.svc.cluster.local" for m in (0, 1, 2)}
    assert send_name == f"gc-0.gc-members.{NS}.svc.cluster.local"  # the shrink on the leader


async def test_tls_required_client_auth_presents_the_secret_certificate(monkeypatch, tmp_path):
    rec = Recorder(monkeypatch)
    tls_secret(monkeypatch, tmp_path, rec, keys=("ca.crt", "tls.crt", "tls.key"))
    spec = {"tls": {"secretName": "gc-certs", "clientAuth": "required"}}
    await tick(rec, body(spec=spec))
    assert ("read_secret_keys", ("gc-certs", ("ca.crt", "tls.crt", "tls.key"))) in rec.calls
    assert isinstance(rec.tls[0][1], ssl.SSLContext)


@pytest.mark.parametrize("keys", [(), ("tls.crt",)], ids=["no-secret", "no-ca.crt"])
async def test_unreadable_tls_secret_is_degraded_and_nobody_is_probed(monkeypatch, tmp_path, keys):
    rec = Recorder(monkeypatch)
    tls_secret(monkeypatch, tmp_path, rec, keys=keys)
    spec = {"tls": {"issuerRef": {"name": "ca"}}}  # the Secret is cert-manager's gc-tls
    await tick(rec, body({handlers.SHRINK_ANNOTATION: "1"}, spec=spec))
    degraded = next(c for c in rec.status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True" and degraded["reason"] == "TLSSecretUnavailable"
    assert "'gc-tls'" in degraded["message"] and "Certificate gc-tls" in degraded["message"]
    assert "observe_all" not in rec.names() and "send" not in rec.names()  # never in plaintext
    assert ("Warning", "TLSSecretUnavailable") in rec.events


def test_reconcile_without_rights_on_certificates_still_applies_a_plaintext_cluster(monkeypatch):
    """A cluster that never used issuerRef asks for its Certificate's removal; RBAC from before
    spec.tls (403) must not stop the reconcile (a 404, no cert-manager, is "absent" anyway)."""
    applied: list[str] = []
    monkeypatch.setattr(kube, "apply", lambda obj: applied.append(obj["kind"]) or "created")
    monkeypatch.setattr(kube, "create_if_absent", lambda obj: "created")
    monkeypatch.setattr(kube, "patch_status", lambda ns, name, status: None)
    monkeypatch.setattr(kube, "read_status", lambda ns, name: {"phase": "Running"})

    def remove(kind: str, ns: str, name: str) -> str:
        if kind == "Certificate":
            raise kube.ApiException(status=403, reason="Forbidden")
        return "absent"

    monkeypatch.setattr(kube, "remove", remove)
    handlers.reconcile(body(), LOG)  # must not raise
    assert applied.count("StatefulSet") == 1 and "Certificate" not in applied
