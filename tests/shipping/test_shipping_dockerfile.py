"""Static checks of the Dockerfile (no Docker engine here): multi-stage, non-root,
read-only-root friendly, both entry points, default CMD runs the operator."""

from __future__ import annotations

import json
import re
import tomllib

import yaml
from shipping_lib import CHART, MANIFESTS, ROOT, load_all

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions(text):
    """(INSTRUCTION, args) pairs with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages():
    result, current = [], None
    for ins, rest in instructions(DOCKERFILE):
        if ins == "FROM":
            current = {"from": rest, "ins": []}
            result.append(current)
        elif current is not None:
            current["ins"].append((ins, rest))
    return result


def test_multi_stage_on_python_311_slim():
    st = stages()
    assert len(st) >= 2
    assert re.match(r"(python:3\.11-slim|\$\{PYTHON_IMAGE\}) AS builder", st[0]["from"])
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in DOCKERFILE
    final = st[-1]
    assert final["from"] in ("python:3.11-slim", "${PYTHON_IMAGE}")
    copies = [r for i, r in final["ins"] if i == "COPY"]
    assert copies == ["--from=builder /opt/geocluster /opt/geocluster"], copies
    # no build tools or package installs in the final stage
    runs = " ".join(r for i, r in final["ins"] if i == "RUN")
    assert not re.search(r"apt-get install|pip install|gcc|build-essential", runs)


def test_builder_compiles_the_core():
    """The project's wheel builds geoserver._core from setup.py and src/core (g++ in the builder
    only), and the build fails if it came out without it (the image would run the slow twin)."""
    builder = stages()[0]["ins"]
    copies = " ".join(r for i, r in builder if i == "COPY")
    assert "setup.py" in copies and re.search(r"\bsrc ./src\b", copies), copies
    runs = " ".join(r for i, r in builder if i == "RUN")
    assert "g++" in runs and "fastpath.ENABLED" in runs


def final_user():
    users = [r for i, r in stages()[-1]["ins"] if i == "USER"]
    assert users, "final stage has no USER"
    return users[-1]


def test_user_is_non_root_65532():
    user = final_user()
    uid = user.split(":")[0]
    assert uid not in ("root", "0") and uid.isdigit(), f"USER {user}: use a numeric non-root uid"
    assert int(uid) == 65532
    # The chart and the manifests run the pod as the same uid.
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)
    dep = next(d for d in load_all((MANIFESTS / "operator.yaml").read_text()) if d["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_read_only_root_friendly():
    final = stages()[-1]["ins"]
    env = " ".join(r for i, r in final if i == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert ("VOLUME", '["/data"]') in final
    assert ("WORKDIR", "/data") in final


def test_entry_points_and_cmd():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"geoserver", "geocluster"} <= set(scripts)
    cmd = [json.loads(r) for i, r in stages()[-1]["ins"] if i == "CMD"]
    assert cmd[-1] == ["geocluster", "run", "--all-namespaces"]
    assert not [r for i, r in stages()[-1]["ins"] if i == "ENTRYPOINT"], "keep both entry points usable"
    assert "ENV PATH=/opt/geocluster/bin:$PATH" in DOCKERFILE


def test_dockerignore_keeps_the_build_context_small():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".tools", "tests"} <= ignored
    assert not {"server", "operator", "pyproject.toml"} & ignored
