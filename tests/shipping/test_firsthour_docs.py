"""Claims of the docs a user copies from: every `redis-cli` command of the runbook and the
README names its port (redis-cli's default is 6379, geoserver's 9851) and, aimed at a pod or
Service (`-h`), the password the operator generates (`-a`); docs/gitops.md's CRD size (for
client-side apply: the whole object goes into the last-applied annotation) is the real one."""

from __future__ import annotations

import json
import re

import yaml
from shipping_lib import MANIFESTS, ROOT

ANNOTATIONS_LIMIT = 256 * 1024  # the API server's limit on all annotations of an object


def redis_cli_commands(text: str) -> list[str]:
    """redis-cli commands in code spans (which may wrap) and at the start of code-block lines."""
    spans = [" ".join(s.split()) for s in re.findall(r"`(redis-cli\b[^`]*)`", text)]
    blocks = "\n".join(re.findall(r"^```sh\n(.*?)^```", text, flags=re.M | re.S))
    lines = [line.split("#")[0].strip() for line in blocks.splitlines()
             if line.strip().startswith("redis-cli")]
    return spans + lines


def test_the_parser_finds_wrapped_spans_and_block_lines():
    text = "a `redis-cli -h x\n  -p 9851 SERVER` b\n```sh\nredis-cli -p 1 PING   # hi\n```\n"
    assert redis_cli_commands(text) == ["redis-cli -h x -p 9851 SERVER", "redis-cli -p 1 PING"]


def test_runbook_and_readme_redis_cli_commands_have_port_and_password():
    found = 0
    for path in (ROOT / "docs" / "runbook.md", ROOT / "README.md"):
        for cmd in redis_cli_commands(path.read_text()):
            found += 1
            words = cmd.split()
            assert "-p" in words, f"{path.name}: {cmd!r} has no -p (redis-cli would use 6379)"
            if "-h" in words:
                assert "-a" in words, f"{path.name}: {cmd!r} has no -a (the generated password)"
    assert found >= 7


def test_gitops_crd_size_is_the_real_one():
    doc = (ROOT / "docs" / "gitops.md").read_text()
    (claimed,) = re.findall(r"last-applied annotation: ~(\d+) KB of JSON", doc)
    crd = yaml.safe_load((MANIFESTS / "crd.yaml").read_text())
    actual = len(json.dumps(crd, separators=(",", ":")))
    assert actual < ANNOTATIONS_LIMIT
    assert abs(actual / 1000 - int(claimed)) <= 0.15 * actual / 1000, (claimed, actual)
