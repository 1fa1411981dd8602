"""The chart's Grafana dashboard and PrometheusRule: rendered with ci/observability-values.yaml,
every metric name in their expressions exists (scraped from a real leader and follower geoserver,
and the operator's metric registry), `promtool check rules` passes, `promtool test rules` shows
each alert firing on the series it watches, and every runbook_url names a runbook section."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from shipping_lib import CHART, ROOT, helm_template

sys.path.insert(0, str(ROOT / "tests"))
from helpers import GeoServer, wait_until

VALUES = CHART / "ci" / "observability-values.yaml"
DASHBOARD = CHART / "dashboards" / "geocluster.json"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "le", "sum", "min", "max", "avg", "count", "topk", "bottomk", "quantile",
    "stddev", "stdvar", "count_values", "group",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not functions (followed
    by "("), keywords, label names in by/without/on/ignoring (...), matchers, ranges or strings."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", s)
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or m.group() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def test_metric_names_parser():
    assert metric_names('sum by (le, cmd) (rate(tile38_cmd_duration_seconds_bucket{pod=~"a-.*"}[5m]))') == {
        "tile38_cmd_duration_seconds_bucket"}
    assert metric_names("a > 1048576 and delta(b[5m]) > 0") == {"a", "b"}
    assert metric_names('count(x{k="by (y)"} == 1)') == {"x"}


@pytest.fixture(scope="module")
def rendered(helm):
    return helm_template(helm, VALUES)


def _one(docs, kind, suffix=""):
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    return doc


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return [re.sub(r"label_values\((.*?)(,\s*\w+)?\)$", r"\1", e) for e in exprs]


def rule_exprs(rendered) -> list[dict]:
    return [r for g in _one(rendered, "PrometheusRule")["spec"]["groups"] for r in g["rules"]]


def test_dashboard_configmap_for_the_sidecar(rendered):
    cm = _one(rendered, "ConfigMap", "-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "GeoCluster"}
    assert json.loads(cm["data"]["geocluster.json"]) == json.loads(DASHBOARD.read_text())
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "geocluster" and all(p.get("datasource", {}).get("uid", "${datasource}")
                                                == "${datasource}" for p in dash["panels"])


def test_off_by_default(helm):
    docs = helm_template(helm)
    assert not [d for d in docs if d["kind"] == "PrometheusRule"]
    assert not [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboards")]


def test_every_alert_links_its_runbook_section(rendered):
    headings = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.M)}
    rules = rule_exprs(rendered)
    assert {r["alert"] for r in rules} >= {"GeoClusterRepairGaveUp", "GeoClusterFollowerNotCaughtUp",
                                           "GeoClusterReplicationLagGrowing", "GeoClusterShrinkFailed"}
    for r in rules:
        url = r["annotations"]["runbook_url"]
        assert url.startswith("https://github.com/geocluster/geocluster/blob/v"), url
        assert url.endswith("/docs/runbook.md#" + r["alert"].lower()) and r["alert"].lower() in headings


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found (Debian package prometheus; .ci/run installs it)")
    return path


def test_promtool_check_rules(rendered, promtool, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(_one(rendered, "PrometheusRule")["spec"]))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rule_exprs(rendered))} rules found" in proc.stdout


LAG = 'geoserver_replication_lag_bytes{namespace="geo", pod="gc-follower-0"}'
F0 = {"namespace": "geo", "pod": "gc-follower-0"}
REPAIR = {"namespace": "geo", "cluster": "gc", "action": "giveUp", "result": "gaveUp"}
SHRINK = {"namespace": "geo", "pod": "gc-leader-0", "result": "error"}
CLUSTER = {"namespace": "geo", "cluster": "gc"}


def series(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


FIRING = {  # alert -> (input series, minute it must fire at, labels it fires with)
    "GeoClusterReplicationLagGrowing": ([(LAG, "2097152+65536x30")], "25m", F0),
    "GeoClusterFollowerNotCaughtUp": ([(series("tile38_caught_up", F0), "0x20")], "15m", F0),
    "GeoClusterRepairGaveUp": ([(series("geocluster_repairs_total", REPAIR), "0 0 0 1 1 1")], "4m", REPAIR),
    "GeoClusterShrinkFailed": ([(series("geoserver_aof_shrinks_total", SHRINK), "0 0 1 1 1")], "3m", SHRINK),
    # the last good backup taken at t=0 and none since: stale after 49 h (+15 m of `for`)
    "GeoClusterBackupStale": ([(series("geocluster_backup_last_success_timestamp_seconds", CLUSTER),
                                "0x3100")], "50h", CLUSTER),
}


def test_alerts_fire_on_what_they_watch(rendered, promtool, tmp_path):
    """promtool's rule unit tests: a lag that grows fires GeoClusterReplicationLagGrowing (and a
    flat one does not), and so on for each alert of the runbook. (Annotations are left out of
    this copy of the rules: promtool compares them whole; `check rules` has parsed their templates.)"""
    spec = _one(rendered, "PrometheusRule")["spec"]
    for group in spec["groups"]:
        group["rules"] = [{k: v for k, v in r.items() if k != "annotations"} for r in group["rules"]]
    severity = {r["alert"]: r["labels"]["severity"] for g in spec["groups"] for r in g["rules"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    tests = [{"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series],
              "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                   "exp_alerts": [{"exp_labels": {**labels, "severity": severity[alert]}}]}]}
             for alert, (series, at, labels) in FIRING.items()]  # fmt: skip
    flat = [{"series": LAG, "values": "4194304x30"}]  # a lag that does not grow: no alert
    tests.append({"interval": "1m", "input_series": flat,
                  "alert_rule_test": [{"eval_time": "25m", "alertname": "GeoClusterReplicationLagGrowing",
                                       "exp_alerts": []}]})  # fmt: skip
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump({"rule_files": ["rules.yaml"], "tests": tests}))
    proc = subprocess.run([promtool, "test", "rules", "tests.yaml"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def scraped_names(tmp_path_factory) -> set[str]:
    """Every metric name a real leader and follower expose after some commands and a shrink,
    plus the operator's registry (geocluster.metrics)."""
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    tmp = tmp_path_factory.mktemp("obs")
    leader = GeoServer(tmp / "leader").start()
    follower = GeoServer(tmp / "follower", args=["--follow", f"{leader.host}:{leader.port}"]).start()
    try:
        leader.json("SET", "fleet", "truck1", "POINT", "33.5", "-115.2")
        leader.json("AOFSHRINK")
        wait_until(lambda: follower.stats().get("caught_up"), message="follower caught up")
        texts = [_http(s, "/metrics") for s in (leader, follower)]
    finally:
        follower.stop()
        leader.stop()
    import geocluster.metrics  # noqa: F401 - registers the operator's metrics

    texts.append(generate_latest(REGISTRY).decode())
    names = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            names.add(fam.name)
            names.update(fam.name + s for s in suffixes.get(fam.type, ()))
            names.update(s.name for s in fam.samples)
    return names


def _http(server: GeoServer, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://{server.host}:{server.port}{path}", timeout=10) as resp:
        return resp.read().decode()


def test_every_metric_name_exists(rendered, scraped_names):
    used = {n for e in dashboard_exprs() for n in metric_names(e)}
    used |= {n for r in rule_exprs(rendered) for n in metric_names(r["expr"])}
    assert {"geoserver_replication_lag_bytes", "geocluster_repairs_total",
            "tile38_cmd_duration_seconds_bucket"} <= used
    missing = sorted(used - scraped_names)
    assert not missing, f"not exposed by geoserver or the operator: {missing}"


def test_replication_metrics_are_documented(scraped_names):
    """What a follower exposes about replication is in docs/metrics.md, and the lag's HELP text
    says what the docs say (the leader's size as last known, not only at the handshake)."""
    doc = (ROOT / "docs" / "metrics.md").read_text()
    family = re.compile(r"^(geoserver_(replication|resync|full_resync|is_follower|clients)|tile38_caught_up)")
    names = {n for n in scraped_names  # counters by their sample name (..._total)
             if family.match(n) and not n.endswith("_created") and f"{n}_total" not in scraped_names}
    assert "geoserver_replication_lag_bytes" in names
    assert not sorted(n for n in names if f"`{n}`" not in doc)
    from geoserver import metrics

    source = Path(metrics.__file__).read_text()
    assert "the leader's aof_size as last known" in source and "the leader's `aof_size` as last known" in doc


def test_docs_link_the_dashboard():
    text = (ROOT / "docs" / "dashboards.md").read_text()
    assert "charts/geocluster/dashboards/geocluster.json" in text and "prometheusRule" in text
    assert Path(ROOT / "charts/geocluster/dashboards/geocluster.json").is_file()
