"""``bootstrap.fromLeader`` over TLS is not supported yet: a spec that asks for it is refused with
one clear line, by the operator's spec validation and by the local runtime's manifest loader (the
same models), and the CRD carries the field so the API server does not prune it silently."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from geocluster.crd import crd
from geocluster.localstate import load_manifest
from geocluster.spec import SpecError, parse_spec

WHY = "spec.bootstrap.fromLeader.tls: TLS to the old leader is not supported yet"
TLS = {"caSecretRef": {"name": "old-ca", "key": "ca.crt"}}


def test_the_spec_refuses_tls_to_the_old_leader():
    with pytest.raises(SpecError) as err:
        parse_spec({"bootstrap": {"fromLeader": {"address": "old:9851", "tls": TLS}}})
    assert str(err.value).startswith(WHY)
    assert "plaintext port" in str(err.value)
    plain = parse_spec({"bootstrap": {"fromLeader": {"address": "old:9851"}}})
    assert plain.bootstrap.from_leader.tls is None


def test_the_local_manifest_refuses_it_too(tmp_path: Path):
    path = tmp_path / "migrate.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "geo.geocluster.io/v1alpha1", "kind": "GeoCluster",
                                    "metadata": {"name": "geo"},
                                    "spec": {"bootstrap": {"fromLeader": {"address": "127.0.0.1:9851",
                                                                          "tls": {"caFile": "/ca.crt"}}}}}))
    with pytest.raises(SpecError) as err:
        load_manifest(path)
    assert "fromLeader.tls: TLS to the old leader is not supported yet" in str(err.value)


def test_the_crd_keeps_the_field_for_the_operator_to_refuse():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    tls = schema["properties"]["bootstrap"]["properties"]["fromLeader"]["properties"]["tls"]
    assert tls["type"] == "object" and {"caSecretRef", "caFile"} <= set(tls["properties"])
    assert "not supported" in tls["description"].lower()
