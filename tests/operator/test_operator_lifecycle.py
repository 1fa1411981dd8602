"""Scaling, deletion and invalid specs, end to end.

The real kopf operator (tests/operator/opharness.py) runs against kmock's emulated Kubernetes
API — the only thing mocked; it has no controllers, so the tests play the StatefulSet
controller (Pod objects + real geoserver processes on 127.a.b.x:9851) and the garbage collector
is represented only by the owner references it would follow.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from opharness import (
    GC_KEY,
    GC_URL,
    GROUP,
    NAME,
    NS,
    SPEC,
    VERSION,
    KopfEmulator,
    Operator,
    condition,
    events,
    eventually,
    gc_status,
    requests,
    start_cluster,
    start_member,
)

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]

STS = "apps/v1/statefulsets"
CHILDREN = [
    ("v1/configmaps", f"{NAME}-config"),
    ("v1/services", NAME),
    ("v1/services", f"{NAME}-readonly"),
    ("v1/services", f"{NAME}-members"),
    (STS, NAME),
    ("policy/v1/poddisruptionbudgets", NAME),
]


@pytest.fixture
async def operator():
    op = await Operator().start()
    yield op
    await op.stop()


def followers_in_status(api) -> list[str]:
    return [m["name"] for m in gc_status(api)["members"] if m["role"] == "follower"]


async def test_scale_followers_2_3_1(api, members, operator):
    await start_cluster(api, members)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")

    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"followers": 3}})
    await eventually(lambda: api.objects[STS, NS, NAME]["spec"]["replicas"] == 4, what="4")
    # the new pod does not exist yet: listed, not reachable, waited for (not repaired)
    await eventually(lambda: len(followers_in_status(api)) == 3, what="3 followers in status")
    await eventually(lambda: condition(api, "Progressing")["reason"] == "Scaling", what="Scaling")
    assert condition(api, "Ready")["status"] == "False"
    await start_member(api, members, f"{NAME}-3")
    await eventually(lambda: gc_status(api)["readyFollowers"] == 3, what="3 ready followers")
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready at 3")
    assert gc_status(api)["observedGeneration"] == 2

    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"followers": 1}})
    await eventually(lambda: api.objects[STS, NS, NAME]["spec"]["replicas"] == 2, what="2")
    for i in (2, 3):  # the StatefulSet controller removes the highest ordinals
        members.stop(f"{NAME}-{i}")
        await api.delete(f"/api/v1/namespaces/{NS}/pods/{NAME}-{i}")
    await eventually(lambda: followers_in_status(api) == [f"{NAME}-1"], what="1 follower")
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready at 1")
    assert gc_status(api)["readyFollowers"] == 1 and gc_status(api)["observedGeneration"] == 3
    assert not events(api, "RepairStarted")
    assert [r.url.path.rsplit("/", 1)[-1] for r in requests(api, "DELETE", "/pods/")] == [
        f"{NAME}-2",
        f"{NAME}-3",
    ]  # only the test's (the controller's) deletes; the operator deleted no pod


def _gone(api) -> bool:
    try:
        return api.objects[GC_KEY].deleted
    except KeyError:
        return True


async def test_delete_completes_promptly_and_children_are_owned(api, members, operator, caplog):
    await start_cluster(api, members)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    uid = api.objects[GC_KEY]["metadata"]["uid"]
    assert api.objects[GC_KEY]["metadata"]["finalizers"] == [f"{GROUP}/finalizer"]
    for resource, name in CHILDREN:
        (ref,) = api.objects[resource, NS, name]["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["kind"] == "GeoCluster" and ref["controller"] is True, name
        assert ref["apiVersion"] == f"{GROUP}/{VERSION}" and ref["name"] == NAME

    caplog.clear()
    started = time.monotonic()
    await api.delete(f"{GC_URL}/{NAME}")
    await eventually(lambda: _gone(api), timeout=10, what="the GeoCluster to go")
    assert time.monotonic() - started < 5, time.monotonic() - started
    seen = len(list(api))
    await asyncio.sleep(1.5)  # > the probe interval: a live timer would have written status
    late = [r for r in list(api)[seen:] if f"/{NAME}" in r.url.path and "geoclusters" in r.url.path]
    assert not late, [(r.method, r.url.path) for r in late]
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and "Connector is closed" not in r.message
    ]
    assert not errors, [r.getMessage() for r in errors]


async def test_invalid_specs_one_warning_per_generation_and_no_children(api, members, operator):
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GeoCluster",
            "metadata": {"name": NAME, "namespace": NS},
            "spec": {**SPEC, "aofShrink": {"schedule": "61 * * * *"}}}  # fmt: skip
    await api.post(GC_URL, json=body)
    steps = [
        (1, None, "spec.aofShrink.schedule"),
        (2, {"aofShrink": {"schedule": None}, "followers": -1}, "spec.followers"),
        (3, {"followers": 2, "replicas": 3}, "spec.replicas: unknown field"),
    ]
    for generation, patch, field in steps:
        if patch:
            await api.patch(f"{GC_URL}/{NAME}", json={"spec": patch})
        await eventually(
            lambda g=generation: gc_status(api)["observedGeneration"] == g, what=f"generation {generation}"
        )
        degraded = condition(api, "Degraded")
        assert (degraded["status"], degraded["reason"]) == ("True", "InvalidSpec")
        assert field in degraded["message"] and gc_status(api)["phase"] == "Invalid"
        assert condition(api, "Ready")["reason"] == "InvalidSpec"
        warnings = await eventually(
            lambda g=generation: len(events(api, "InvalidSpec")) >= g and events(api, "InvalidSpec")
        )
        assert len(warnings) == generation and warnings[-1]["type"] == "Warning"
        assert field in warnings[-1]["message"]
    await asyncio.sleep(1.5)  # several timer ticks and probe intervals later: no event storm
    assert len(events(api, "InvalidSpec")) == 3
    assert events(api, type_="Warning") == events(api, "InvalidSpec")  # and no other Warnings
    for resource, _ in CHILDREN:
        assert not requests(api, "POST", f"/{resource.rsplit('/', 1)[-1]}"), resource
    assert not requests(api, "PATCH", "/statefulsets/")


async def test_turning_the_pdb_off_deletes_it(api, members, operator):
    """`scheduling.podDisruptionBudget.enabled: false` after creation removes the PDB (a
    budget left behind would keep blocking node drains)."""
    await start_cluster(api, members)
    pdb = ("policy/v1/poddisruptionbudgets", NS, NAME)

    def exists(key: tuple[str, str, str]) -> bool:  # kmock 0.8: `in` misses string keys
        try:
            return not getattr(api.objects[key], "deleted", False)
        except KeyError:
            return False

    await eventually(lambda: exists(pdb), what="PDB created")
    await api.patch(f"{GC_URL}/{NAME}",
                    json={"spec": {"scheduling": {"podDisruptionBudget": {"enabled": False}}}})
    await eventually(lambda: not exists(pdb), what="PDB deleted")
    assert requests(api, "DELETE", f"/poddisruptionbudgets/{NAME}")
    assert exists((STS, NS, NAME))  # nothing else removed


async def test_storage_change_is_reported_not_patched_forever(api, members, operator):
    """volumeClaimTemplates are immutable: a new storage.size leaves the StatefulSets as they
    are (no PATCH carrying it) and says so with an ImmutableFieldChanged Warning."""
    await start_cluster(api, members)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    patches_before = len(requests(api, "PATCH", "/statefulsets/"))
    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"storage": {"size": "5Gi"}}})
    await eventually(lambda: events(api, "ImmutableFieldChanged"), what="Warning")
    (warning, *_) = events(api, "ImmutableFieldChanged")
    assert "volumeClaimTemplates" in warning["message"]
    template = api.objects[STS, NS, NAME]["spec"]["volumeClaimTemplates"][0]
    assert template["spec"]["resources"]["requests"]["storage"] != "5Gi"
    assert len(requests(api, "PATCH", "/statefulsets/")) == patches_before  # nothing else changed


async def test_scheduling_taken_back_leaves_the_statefulsets(api, members, operator):
    """A merge-patch keeps what it does not mention: a required anti-affinity, nodeSelector,
    tolerations, topology spread and a securityContext override taken out of the spec must be
    sent as nulls, or they stay on the StatefulSets for good while the operator reports them
    unchanged."""
    spec = {**SPEC, "scheduling": {
        "antiAffinity": "required", "topologySpread": True, "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "geo", "operator": "Exists", "effect": "NoSchedule"}],
    }, "securityContext": {"pod": {"supplementalGroups": [5]}}}  # fmt: skip
    await start_cluster(api, members, spec)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")

    def pod_spec(name: str) -> dict:
        return api.objects[STS, NS, name]["spec"]["template"]["spec"]

    for name in (NAME,):
        pod = pod_spec(name)
        assert pod["nodeSelector"] == {"disk": "ssd"}
        assert pod["tolerations"] and pod["topologySpreadConstraints"]
        assert "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
        assert pod["securityContext"]["supplementalGroups"] == [5]
    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"scheduling": None, "securityContext": None}})

    def taken_back(name: str) -> bool:
        pod = pod_spec(name)
        kept = {"nodeSelector", "tolerations", "topologySpreadConstraints"} & set(pod)
        anti = list(pod["affinity"]["podAntiAffinity"])
        return not kept and anti == ["preferredDuringSchedulingIgnoredDuringExecution"]

    for name in (NAME,):
        await eventually(lambda name=name: taken_back(name), what=f"{name} without the old scheduling")
        assert "supplementalGroups" not in pod_spec(name)["securityContext"]
        assert pod_spec(name)["securityContext"]["runAsNonRoot"] is True  # the defaults stay
    patches = len(requests(api, "PATCH", "/statefulsets/"))
    await api.patch(f"{GC_URL}/{NAME}", json={"metadata": {"labels": {"touch": "1"}}})  # a resume-like pass
    await eventually(lambda: gc_status(api)["observedGeneration"] >= 2, what="the update applied")
    await asyncio.sleep(1)
    assert len(requests(api, "PATCH", "/statefulsets/")) == patches  # converged: no patch loop


async def test_a_child_name_owned_by_someone_else_is_left_alone(api, members, operator):
    """A Service named like one of ours but controlled by another owner (GeoCluster `gc` next to
    one whose name makes the same child names) is not patched over: a NameConflict Warning."""
    foreign = {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": f"{NAME}-readonly", "namespace": NS, "labels": {"app": "theirs"},
        "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "GeoCluster",
                             "name": "other", "uid": "other-uid", "controller": True}],
    }, "spec": {"ports": [{"port": 1}]}}  # fmt: skip
    await api.post(f"/api/v1/namespaces/{NS}/services", json=foreign)
    await start_cluster(api, members)
    await eventually(lambda: events(api, "NameConflict"), what="NameConflict")
    assert "GeoCluster/other" in events(api, "NameConflict")[0]["message"]
    svc = api.objects["v1/services", NS, f"{NAME}-readonly"]
    assert svc["metadata"]["labels"] == {"app": "theirs"} and svc["spec"]["ports"] == [{"port": 1}]
    assert api.objects["v1/services", NS, NAME]["metadata"]["labels"]  # the rest was applied
