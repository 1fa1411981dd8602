"""The chart's CRD upgrade story: NOTES.txt and Chart.yaml give a command a chart user can run
(`helm show crds` of the version upgraded to, or the release's URL), server-side with
--force-conflicts as docs/upgrade.md says, and NOTES points at files of the chart's version."""

from __future__ import annotations

import re

import yaml
from shipping_lib import CHART, MANIFESTS, ROOT, load_all, run
from test_shipping_chart import render_notes

RAW = "https://raw.githubusercontent.com/geocluster/geocluster/"


def chart() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_notes_upgrade_commands(helm, tmp_path):
    notes = render_notes(helm, tmp_path)
    app = chart()["appVersion"]
    assert ("helm show crds CHART --version VERSION | kubectl apply --server-side --force-conflicts -f -"
            in notes)
    assert f"kubectl apply --server-side --force-conflicts -f {RAW}vAPP_VERSION/manifests/crd.yaml" in notes
    assert "kubectl apply --server-side -f manifests/crd.yaml" not in notes  # a path chart users lack
    for url in re.findall(re.escape(RAW) + r"\S+", notes):  # the chart's own version, and files that exist
        if "APP_VERSION" in url:
            continue
        assert url.startswith(f"{RAW}v{app}/"), url
        assert (ROOT / url.removeprefix(f"{RAW}v{app}/").rstrip(".")).is_file(), url
    assert "/main/" not in notes


def test_chart_annotation_matches_its_version(helm):
    meta = chart()
    command = meta["annotations"]["geocluster.io/crd-upgrade"]
    assert command == (f"helm show crds REPO/geocluster --version {meta['version']} | "
                       "kubectl apply --server-side --force-conflicts -f -")


def test_helm_show_crds_prints_the_shipped_crds(helm):
    """Helm joins the crds/ files without a separator: each must start a document of its own,
    or the piped stream is one CRD with the next one's keys on top."""
    shown = {d["metadata"]["name"] for d in load_all(run([helm, "show", "crds", str(CHART)]).stdout)}
    shipped = {d["metadata"]["name"] for p in (CHART / "crds").glob("*.yaml")
               for d in load_all(p.read_text())}
    assert shown == shipped and "geoclusters.geo.geocluster.io" in shown
    assert (MANIFESTS / "crd.yaml").read_text() == (CHART / "crds" / "geoclusters.yaml").read_text()


def test_upgrade_doc_has_the_same_command():
    text = (ROOT / "docs" / "upgrade.md").read_text()
    assert ("helm show crds REPO/geocluster --version NEW_VERSION | "
            "kubectl apply --server-side --force-conflicts -f -") in text
