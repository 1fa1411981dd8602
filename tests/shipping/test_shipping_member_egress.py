"""Member egress in the per-GeoCluster NetworkPolicy (issue 9: "members should only reach DNS,
the leader/other members, and configured hook endpoints").

resources.build_network_policy(c, egress_to=...) restricts egress to DNS, the other members'
geoserver port and the given peers; without egress_to (what build_all passes: no spec field asks
for it yet) egress stays open, because the leader delivers hooks to whatever URL a client sets
at run time. Offline: the objects validate against the Kubernetes 1.33 schemas (strict), and the
rules are checked as tables.
"""

from __future__ import annotations

import pytest
from shipping_lib import SPEC_PY, validate_object

pytestmark = pytest.mark.skipif(not SPEC_PY.exists(), reason="operator/geocluster not there yet")


def cluster(**spec):
    from geocluster import resources
    from geocluster.spec import parse_spec

    return resources.Cluster("fleet", "geo", "uid-1", parse_spec(spec), "geocluster-system")


def peers(*raw):
    from geocluster.spec import NetworkPolicyPeer

    return [NetworkPolicyPeer.model_validate(p) for p in raw]


def test_egress_open_by_default():
    from geocluster import resources

    for c in (cluster(), cluster(metrics={"enabled": False})):
        policy = resources.build_network_policy(c)
        assert policy["spec"]["policyTypes"] == ["Ingress"] and "egress" not in policy["spec"]
        assert resources.build_network_policy(c) in resources.build_all(c)


def test_restricted_egress_dns_members_and_given_peers():
    from geocluster import resources

    c = cluster()
    hooks = peers({"ipBlock": {"cidr": "203.0.113.0/24"}},
                  {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "brokers"}},
                   "podSelector": {"matchLabels": {"app": "nats"}}})
    policy = resources.build_network_policy(c, egress_to=hooks)
    validate_object(policy)
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == resources.build_network_policy(c)["spec"]["ingress"]  # unchanged
    assert spec["egress"] == [
        {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
        {"to": [{"podSelector": {"matchLabels": resources.selector(c)}}],
         "ports": [{"protocol": "TCP", "port": 9851}]},
        {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}},
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "brokers"}},
                 "podSelector": {"matchLabels": {"app": "nats"}}}]},
    ]  # fmt: skip
    # the members rule selects exactly the pods the policy applies to (followers dial the leader)
    assert spec["egress"][1]["to"][0]["podSelector"] == spec["podSelector"]


def test_restricted_egress_without_peers_is_dns_and_members_only():
    from geocluster import resources

    policy = resources.build_network_policy(cluster(), egress_to=[])
    validate_object(policy)
    assert [rule.get("to") for rule in policy["spec"]["egress"]] == [
        None, [{"podSelector": {"matchLabels": resources.selector(cluster())}}]]
    assert all(rule.get("ports") for rule in policy["spec"]["egress"])  # no rule opens every port


def test_disabled_policy_stays_absent():
    from geocluster import resources

    assert resources.build_network_policy(cluster(networkPolicy={"enabled": False}), egress_to=[]) is None
