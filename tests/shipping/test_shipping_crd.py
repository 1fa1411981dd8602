"""The CRD shipped in charts/ and manifests/ is exactly what `geocluster crd` generates, and
the example GeoClusters are valid against it (and against the operator's own spec parser)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from shipping_lib import CHART, MANIFESTS, ROOT, SPEC_PY, cr_validator, load_all

SHIPPED_CRDS = [CHART / "crds" / "geoclusters.yaml", MANIFESTS / "crd.yaml"]
REGENERATE = (
    "regenerate with: .venv/bin/geocluster crd > charts/geocluster/crds/geoclusters.yaml"
    " && cp charts/geocluster/crds/geoclusters.yaml manifests/crd.yaml"
)


@pytest.fixture(scope="module")
def generated() -> str:
    if not SPEC_PY.exists():
        pytest.skip("operator/geocluster/spec.py does not exist yet: no CRD to compare with")
    proc = subprocess.run(
        [sys.executable, "-c", "from geocluster.cli import main; main()", "crd"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 0, f"`geocluster crd` failed:\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("path", SHIPPED_CRDS, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_crd_is_generated_output(generated, path):
    assert path.exists(), f"{path.relative_to(ROOT)} missing; {REGENERATE}"
    if path.read_text() != generated:
        # Say whether only formatting differs or the schema itself drifted.
        same = yaml.safe_load(path.read_text()) == yaml.safe_load(generated)
        pytest.fail(
            f"{path.relative_to(ROOT)} differs from `geocluster crd` "
            f"({'formatting only' if same else 'the CRD changed'}); {REGENERATE}"
        )


def example_geoclusters():
    for path in sorted((MANIFESTS / "examples").glob("*.yaml")):
        for doc in load_all(path.read_text()):
            if doc["kind"] == "GeoCluster":
                yield pytest.param(doc, id=f"{path.name}:{doc['metadata']['name']}")


@pytest.mark.parametrize("doc", list(example_geoclusters()))
def test_example_matches_crd_schema(doc):
    errors = list(cr_validator("GeoCluster").iter_errors(doc))
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("doc", list(example_geoclusters()))
def test_example_accepted_by_operator(doc):
    if not SPEC_PY.exists():
        pytest.skip("operator/geocluster/spec.py does not exist yet")
    from geocluster.spec import parse_spec

    parse_spec(doc["spec"])


def test_examples_cover_the_production_checklist():
    """production.yaml shows what operator users ask for from day one (issue 6)."""
    docs = load_all((MANIFESTS / "examples" / "production.yaml").read_text())
    kinds = {d["kind"] for d in docs}
    assert kinds == {"Secret", "GeoCluster"}
    (gc,) = [d for d in docs if d["kind"] == "GeoCluster"]
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    spec = gc["spec"]
    assert spec["scheduling"]["antiAffinity"] == "required"
    assert spec["scheduling"]["podDisruptionBudget"]["enabled"] is True
    assert spec["resources"]["requests"] and spec["resources"]["limits"]
    assert spec["storage"]["storageClassName"]
    assert spec["aofShrink"]["schedule"] and spec["followerResync"]["schedule"]
    ref = spec["server"]["authSecretRef"]
    assert ref["name"] == secret["metadata"]["name"]
    assert ref["key"] in secret["stringData"]


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"followers": -1}, "followers"),
        ({"folowers": 2}, "folowers"),
        ({"server": {"appendfsync": "sometimes"}}, "appendfsync"),
        ({"scheduling": {"antiAffinity": "always"}}, "antiAffinity"),
    ],
)
def test_schema_check_rejects_bad_specs(patch, where):
    """The jsonschema approximation of the CRD is not vacuous."""
    doc = {
        "apiVersion": "geo.geocluster.io/v1alpha1",
        "kind": "GeoCluster",
        "metadata": {"name": "bad"},
        "spec": patch,
    }
    errors = list(cr_validator("GeoCluster").iter_errors(doc))
    assert errors and any(where in (".".join(map(str, e.path)) + e.message) for e in errors)
