"""Who may talk to the members, end to end through the real kopf operator (kmock API, live
member processes): the generated password Secret, the NetworkPolicy, and extraArgs that try to
override the flags the operator owns.

The tests play the StatefulSet controller as opharness does, and start each member with the
password the pod template's secretKeyRef env would give it (read from the emulated Secret).
"""

from __future__ import annotations

import base64

import pytest
from geocluster import probe
from geocluster.spec import GROUP, VERSION
from opharness import (
    GC_KEY,
    GC_URL,
    LEADER_IP,
    NAME,
    NS,
    SPEC,
    KopfEmulator,
    Operator,
    condition,
    events,
    eventually,
    gc_status,
    requests,
    start_member,
)

pytestmark = [pytest.mark.kmock(cls=KopfEmulator), pytest.mark.timeout(60)]

SECRET = ("v1/secrets", NS, f"{NAME}-auth")
NETPOL = ("networking.k8s.io/v1/networkpolicies", NS, NAME)
STS = "apps/v1/statefulsets"
# SPEC without its opt-out: the default, a generated password
AUTH_SPEC = {k: v for k, v in SPEC.items() if k != "server"}


@pytest.fixture
async def operator():
    op = await Operator().start()
    yield op
    await op.stop()


def exists(api, key: tuple[str, str, str]) -> bool:  # kmock 0.8: `in` misses string keys
    try:
        return not getattr(api.objects[key], "deleted", False)
    except KeyError:
        return False


def password_of(api) -> str:
    return base64.b64decode(api.objects[SECRET]["data"]["password"]).decode()


async def create_gc(api, spec: dict) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GeoCluster",
            "metadata": {"name": NAME, "namespace": NS}, "spec": spec}  # fmt: skip
    await api.post(GC_URL, json=body)


async def start_members(api, members, password: str, followers: int = 2, spec=None) -> None:
    """Pods as the StatefulSet describes them: the password in their environment."""
    for k in range(followers + 1):
        await start_member(api, members, f"{NAME}-{k}", password=password, spec=spec or AUTH_SPEC)


def env_of(api, sts: str) -> dict:
    (container,) = api.objects[STS, NS, sts]["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


async def test_generated_password_is_created_once_and_used(api, members, operator):
    await create_gc(api, AUTH_SPEC)
    await eventually(lambda: exists(api, SECRET), what="the generated Secret")
    secret = api.objects[SECRET]
    owner = secret["metadata"]["ownerReferences"][0]
    assert owner["uid"] == api.objects[GC_KEY]["metadata"]["uid"] and owner["controller"] is True
    assert secret["type"] == "Opaque"
    password = password_of(api)
    assert len(password) >= 32 and password.isascii()

    # the pods take it from the Secret, never as a literal or an argument
    await eventually(lambda: exists(api, (STS, NS, NAME)), what="StatefulSet")
    ref = {"secretKeyRef": {"name": f"{NAME}-auth", "key": "password"}}
    env = env_of(api, NAME)
    assert env["GEOSERVER_REQUIREPASS"] == {"name": "GEOSERVER_REQUIREPASS", "valueFrom": ref}
    assert env["GEOSERVER_LEADERAUTH"]["valueFrom"] == ref
    assert set(env) == {"GEOSERVER_REQUIREPASS", "GEOSERVER_LEADERAUTH", "GEOCLUSTER_LEADER"}
    for sts in (NAME,):
        template = api.objects[STS, NS, sts]["spec"]["template"]["spec"]
        assert template["automountServiceAccountToken"] is False
        assert password not in str(template)

    # members that require it: the operator's probes get through only with the password
    await start_members(api, members, password)
    with pytest.raises(probe.ProbeError):
        async with probe.Client(f"{LEADER_IP}:9851") as c:
            await c.command("SERVER")
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    assert gc_status(api)["readyFollowers"] == 2
    posts = [str(r.url) for r in api if r.method.value.upper() == "POST"]
    first = lambda part: next(i for i, url in enumerate(posts) if part in url)  # noqa: E731
    assert first("/secrets") < first("/statefulsets")  # no pod ever starts before its Secret
    assert not events(api, "AuthSecretUnavailable")  # the timer never ran ahead of the Secret

    # later reconciles (a spec change) neither create nor rewrite it: no rotation
    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"followers": 1}})
    await eventually(lambda: api.objects[STS, NS, NAME]["spec"]["replicas"] == 2)
    assert password_of(api) == password
    # reconcile and the first tick may both have tried to create it (one got a 409): one
    # version ever stored, and nothing after the first reconcile tried again
    assert len(api.objects[SECRET].history) == 1
    assert len(requests(api, "POST", "/secrets")) <= 2
    assert not requests(api, "PATCH", "/secrets") and not requests(api, "PUT", "/secrets")


async def test_existing_secret_is_used_as_it_is(api, members, operator):
    """A `<name>-auth` that already exists (the operator made it before a restart, or a person
    did) is kept: not re-created, patched or adopted, and its password is the one probed with."""
    await api.post(f"/api/v1/namespaces/{NS}/secrets", json={
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{NAME}-auth", "namespace": NS},
        "data": {"password": base64.b64encode(b"chosen-by-a-person").decode()}})  # fmt: skip
    await start_members(api, members, "chosen-by-a-person")
    await create_gc(api, AUTH_SPEC)
    await eventually(lambda: condition(api, "Ready")["status"] == "True", what="Ready")
    assert len(requests(api, "POST", "/secrets")) == 1  # only the test's own
    assert not requests(api, "PATCH", "/secrets")
    assert "ownerReferences" not in api.objects[SECRET]["metadata"]


async def test_opt_out_runs_without_a_secret(api, members, operator):
    await create_gc(api, SPEC)  # server.generatePassword: false
    await eventually(lambda: exists(api, (STS, NS, NAME)), what="StatefulSets")
    assert env_of(api, NAME)["GEOSERVER_REQUIREPASS"] == {"name": "GEOSERVER_REQUIREPASS",
                                                                      "value": ""}  # fmt: skip
    assert not requests(api, "POST", "/secrets") and not exists(api, SECRET)


async def test_network_policy_is_created_and_removed_when_turned_off(api, members, operator):
    await create_gc(api, SPEC)
    await eventually(lambda: exists(api, NETPOL), what="NetworkPolicy")
    policy = api.objects[NETPOL]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == api.objects[GC_KEY]["metadata"]["uid"]
    selected = policy["spec"]["podSelector"]["matchLabels"]
    await eventually(lambda: exists(api, (STS, NS, NAME)), what="StatefulSet")
    pods = api.objects[STS, NS, NAME]["spec"]["template"]["metadata"]["labels"]
    assert selected.items() <= pods.items()
    await api.patch(f"{GC_URL}/{NAME}", json={"spec": {"networkPolicy": {"enabled": False}}})
    await eventually(lambda: not exists(api, NETPOL), what="NetworkPolicy deleted")
    assert exists(api, (STS, NS, NAME))


@pytest.mark.parametrize("arg", ["--follow=10.0.0.9:9851", "--requirepass", "-p1", "--dir=/tmp"])
async def test_extra_args_cannot_override_owned_flags(api, members, operator, arg):
    await create_gc(api, {**SPEC, "server": {"generatePassword": False, "extraArgs": [arg]}})
    await eventually(lambda: condition(api, "Degraded")["reason"] == "InvalidSpec", what="InvalidSpec")
    message = condition(api, "Degraded")["message"]
    assert "spec.server.extraArgs" in message and "flags the operator owns" in message
    assert gc_status(api)["phase"] == "Invalid"
    assert not requests(api, "POST", "/statefulsets") and not requests(api, "POST", "/secrets")


async def test_deleted_generated_secret_is_created_again(api, members, operator):
    """The timer reads the password every probe: a deleted `<name>-auth` is made again (a new
    password, which the pods pick up when they restart) instead of Degraded for good."""
    await create_gc(api, AUTH_SPEC)
    await eventually(lambda: exists(api, SECRET), what="the generated Secret")
    old = password_of(api)
    await api.delete(f"/api/v1/namespaces/{NS}/secrets/{NAME}-auth")
    await eventually(lambda: exists(api, SECRET) and password_of(api) != old, what="a new Secret")
    assert len(password_of(api)) >= 32
