"""spec.tls as shipped: what the operator builds for a TLS GeoCluster validates offline (the
StatefulSets strictly against Kubernetes 1.33; the cert-manager Certificate, a CRD kind with no
schema here, against the shape of the cert-manager.io/v1 fields it uses), the chart renders a
TLS example GeoCluster valid against the CRD, and the RBAC has what the Certificate needs."""

from __future__ import annotations

import copy

import pytest
from shipping_lib import CHART, MANIFESTS, SPEC_PY, helm_template, load_all, validate_object

pytestmark = pytest.mark.skipif(not SPEC_PY.exists(), reason="no operator yet")


def _objects(spec: dict) -> list[dict]:
    from geocluster import resources
    from geocluster.spec import parse_spec

    c = resources.Cluster("secure", "geo", "uid-1", parse_spec(spec))
    cert = resources.build_certificate(c)
    return resources.build_all(c) + ([cert] if cert else [])


@pytest.mark.parametrize(
    "tls",
    [
        {"issuerRef": {"name": "internal-ca", "kind": "ClusterIssuer"}},
        {"secretName": "secure-certs", "clientAuth": "optional"},
        {"secretName": "secure-certs", "clientAuth": "required"},
    ],
    ids=["issuer", "secret-optional", "secret-required"],
)
@pytest.mark.parametrize("metrics", [True, False], ids=["metrics", "no-metrics"])
def test_operator_objects_for_tls_validate(tls, metrics):
    objs = _objects({"tls": tls, "metrics": {"enabled": metrics}})
    kinds = [o["kind"] for o in objs]
    assert kinds.count("StatefulSet") == 1 and kinds.count("Certificate") == ("issuerRef" in tls)
    for obj in objs:
        validate_object(obj)


def test_certificate_shape_check_is_not_vacuous():
    (cert,) = [o for o in _objects({"tls": {"issuerRef": {"name": "ca"}}}) if o["kind"] == "Certificate"]
    for broken in ({"usages": ["server"]}, {"dnsName": ["x"]}, {"privateKey": {"algorithm": "DSA"}}):
        bad = copy.deepcopy(cert)
        bad["spec"].update(broken)
        with pytest.raises(pytest.fail.Exception):
            validate_object(bad)
    bad = copy.deepcopy(cert)
    del bad["spec"]["issuerRef"]
    with pytest.raises(pytest.fail.Exception, match="issuerRef"):
        validate_object(bad)


def test_chart_renders_a_tls_geocluster(helm):
    docs = helm_template(helm, CHART / "ci" / "tls-values.yaml")
    (gc,) = [d for d in docs if d["kind"] == "GeoCluster"]
    assert gc["spec"]["tls"]["issuerRef"] == {"name": "internal-ca", "kind": "ClusterIssuer"}
    validate_object(gc)  # against the shipped CRD
    from geocluster.spec import parse_spec

    assert parse_spec(gc["spec"]).tls.client_auth == "optional"


def test_tls_example_manifest_has_a_ca_issuer_and_a_geocluster_naming_it():
    docs = load_all((MANIFESTS / "examples" / "tls.yaml").read_text())
    issuers = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Issuer"}
    (gc,) = [d for d in docs if d["kind"] == "GeoCluster"]
    ref = gc["spec"]["tls"]["issuerRef"]
    assert ref["kind"] == "Issuer" and "ca" in issuers[ref["name"]]["spec"]  # a CA issuer fills ca.crt
    (root,) = [d for d in docs if d["kind"] == "Certificate"]
    assert root["spec"]["isCA"]
    assert issuers[ref["name"]]["spec"]["ca"]["secretName"] == root["spec"]["secretName"]
    for doc in docs:
        validate_object(doc)
