"""Pure tests of the GeoCluster models: defaults, aliases, and errors that name the field."""

from __future__ import annotations

import pathlib

import pytest
import yaml
from geocluster.spec import GeoClusterSpec, SpecError, dump, parse_spec

EXAMPLES = pathlib.Path(__file__).parent / "examples"


def test_defaults_are_complete():
    spec = parse_spec({})
    assert spec.followers == 2
    assert spec.server.appendfsync == "everysec"
    assert spec.divergence.ladder == ["resync", "restart"]
    assert spec.aof_shrink.schedule == "0 3 * * *"


def test_camel_case_and_python_names_both_accepted():
    assert parse_spec({"aofShrink": {"timeZone": "Europe/Berlin"}}).aof_shrink.time_zone == ("Europe/Berlin")
    assert GeoClusterSpec(followers=1, paused=True).paused


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_parse_and_round_trip(path):
    body = yaml.safe_load(path.read_text())
    spec = parse_spec(body["spec"])
    assert parse_spec(dump(spec)) == spec


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"folowers": 1}, "spec.folowers: unknown field"),
        ({"followers": -1}, "spec.followers: Input should be greater than or equal to 0"),
        ({"aofShrink": {"schedule": "61 * * * *"}}, "spec.aofShrink.schedule: not a valid"),
        ({"aofShrink": {"schedule": "0 3 * * * *"}}, "spec.aofShrink.schedule"),
        ({"aofShrink": {"timeZone": "Mars/Olympus"}}, "spec.aofShrink.timeZone: unknown time"),
        ({"aofShrink": {"sizeTrigger": {"growthFactor": 1}}}, "growthFactor: Input should be"),
        ({"server": {"appendfsync": "sometimes"}}, "spec.server.appendfsync"),
        ({"divergence": {"ladder": ["resync", "nuke"]}}, "spec.divergence.ladder[1]"),
        ({"scheduling": {"antiAffinity": "maybe"}}, "spec.scheduling.antiAffinity"),
        ({"followerResync": {"maxConcurrent": 2}}, "spec.followerResync.maxConcurrent"),
        ({"server": {"authSecretRef": {"key": "x"}}}, "spec.server.authSecretRef.name"),
        ({"metrics": {"port": 9851}}, "spec.metrics.port: 9851 is geoserver's own port"),
        ({"networkPolicy": {"clients": [{}]}}, "spec.networkPolicy.clients[0]: give podSelector"),
        ({"networkPolicy": {"clients": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}},
         "spec.networkPolicy.clients[0]: ipBlock cannot be combined"),
        ({"networkPolicy": {"metricsFrom": [{"ipBlock": {"cidr": "10.0.0.300/8"}}]}},
         "spec.networkPolicy.metricsFrom[0].ipBlock.cidr: not a CIDR"),
        ({"networkPolicy": {"clients": [
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Is"}]}}]}},
         "spec.networkPolicy.clients[0].podSelector.matchExpressions[0].operator"),
    ],
)
def test_bad_specs_name_the_field(raw, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "args",
    [
        ["--follow", "10.0.0.9:9851"], ["--follow=10.0.0.9:9851"], ["--foll", "x"],  # argparse abbreviates
        ["--requirepass", ""], ["--requirepass="], ["--leaderauth=x"],
        ["--port", "1"], ["--port=1"], ["-p", "1"], ["-p1"], ["-qp1"],
        ["--dir", "/tmp"], ["-d/tmp"], ["--host", "0"], ["-H0"],
        ["--appendfsync=no"], ["--metrics-addr", "0.0.0.0:9851"],
        ["--max-request-size", "1mb", "--port", "2"],
    ],
)  # fmt: skip
def test_extra_args_cannot_override_owned_flags(args):
    with pytest.raises(SpecError) as info:
        parse_spec({"server": {"extraArgs": args}})
    message = str(info.value)
    assert message.startswith("spec.server.extraArgs: flags the operator owns cannot be overridden")
    assert "sets --" in message


def test_extra_args_that_own_nothing_pass():
    args = ["--max-request-size", "1mb", "-q", "-v", "-ojson", "--output=json", "--appendonly", "yes"]
    assert parse_spec({"server": {"extraArgs": args}}).server.extra_args == args


def test_generated_password_and_network_policy_by_default():
    spec = parse_spec({})
    assert spec.server.auth_secret_ref is None and spec.server.generate_password is True
    assert spec.network_policy.enabled is True
    assert dump(spec.network_policy) == {"enabled": True, "clients": [{"podSelector": {}}], "metricsFrom": []}


def test_an_empty_schedule_turns_schedules_off():
    """`""` is the merge-patch-safe off switch: a merge-patch null deletes the field and the
    API server puts the CRD default back."""
    spec = parse_spec({"aofShrink": {"schedule": ""}, "followerResync": {"schedule": ""}})
    assert spec.aof_shrink.schedule is None and spec.follower_resync.schedule is None


def test_names_whose_children_kubernetes_would_refuse_are_rejected():
    """`<name>-follower` pods carry `controller-revision-hash: <name>-follower-<10 chars>`,
    a label value of at most 63 characters."""
    from geocluster import resources as res
    from geocluster.spec import MAX_NAME_LENGTH, check_name

    check_name("g" * MAX_NAME_LENGTH)
    cluster = res.Cluster("g" * MAX_NAME_LENGTH, "ns", "uid", parse_spec({}))
    longest = max(len(o["metadata"]["name"]) for o in res.build_all(cluster))
    assert longest + len("-0123456789") <= 63
    with pytest.raises(SpecError, match=r"metadata\.name: at most 43"):
        check_name("g" * (MAX_NAME_LENGTH + 1))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"tls": {}}, "spec.tls: give exactly one of secretName and issuerRef"),
        ({"tls": {"secretName": "a", "issuerRef": {"name": "b"}}}, "spec.tls: give exactly one"),
        ({"tls": {"secretName": ""}}, "spec.tls.secretName"),
        ({"tls": {"issuerRef": {}}}, "spec.tls.issuerRef.name"),
        ({"tls": {"issuerRef": {"name": "b", "kind": "Vault"}}}, "spec.tls.issuerRef.kind"),
        ({"tls": {"issuerRef": {"name": "b", "group": "example.com"}}}, "spec.tls.issuerRef.group"),
        ({"tls": {"secretName": "a", "clientAuth": "yes"}}, "spec.tls.clientAuth"),
        ({"tls": {"secretName": "a", "ca": "x"}}, "spec.tls.ca: unknown field"),
    ],
)
def test_bad_tls_names_the_field(raw, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert expected in str(info.value)


def test_tls_defaults():
    assert parse_spec({}).tls is None
    tls = parse_spec({"tls": {"issuerRef": {"name": "ca"}}}).tls
    assert (tls.issuer_ref.kind, tls.issuer_ref.group) == ("Issuer", "cert-manager.io")
    assert tls.client_auth == "none"
    required = parse_spec({"tls": {"secretName": "certs", "clientAuth": "required"}})
    assert required.tls.client_auth == "required"


@pytest.mark.parametrize("arg", ["--tls-cert-file=/x", "--tls-auth-clients", "--tls-replication=no",
                                 "--tls-port", "--tls-reload-interval=0", "--tls-ca"])  # fmt: skip
def test_extra_args_cannot_set_tls_flags(arg):
    with pytest.raises(SpecError) as info:
        parse_spec({"server": {"extraArgs": [arg]}})
    assert "flags the operator owns" in str(info.value) and "spec.tls" in str(info.value)
