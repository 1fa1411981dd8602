"""Generate the GeoCluster CustomResourceDefinition from the pydantic models in :mod:`.spec`.

Pydantic emits JSON Schema (draft 2020-12); Kubernetes wants a *structural* OpenAPI v3 schema:
every node typed, no ``$ref``/``anyOf`` for optionals (``nullable`` instead), no
``additionalProperties`` beside ``properties``, boolean ``exclusiveMinimum``, and free-form
objects marked ``x-kubernetes-preserve-unknown-fields``. Defaults come from the models
themselves, so the API server materializes the same defaults the operator would apply.
"""

from __future__ import annotations

import copy
from typing import Any

from .spec import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    GeoClusterSpec,
    GeoClusterStatus,
    dump,
)

_DROP = {"title", "additionalProperties", "$defs"}


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of GeoCluster."""
    spec_schema = openapi(GeoClusterSpec.model_json_schema(by_alias=True))
    _add_defaults(spec_schema, dump(GeoClusterSpec()))
    status_schema = openapi(GeoClusterStatus.model_json_schema(by_alias=True), defaults=False)
    status_schema["properties"]["kopf"] = {
        "type": "object",
        "description": "kopf's own bookkeeping.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    spec_schema["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
                "categories": ["all", "geocluster"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A leader and N followers of geoserver, kept healthy.",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.followers",
                            "statusReplicasPath": ".status.readyFollowers",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": _columns(),
                }
            ],
        },
    }


def _columns() -> list[dict[str, Any]]:
    def col(name: str, type_: str, path: str, desc: str, priority: int = 0) -> dict[str, Any]:
        out = {"name": name, "type": type_, "jsonPath": path, "description": desc}
        if priority:
            out["priority"] = priority
        return out

    return [
        col("Leader", "string", ".status.leader", "Leader member."),
        col("Followers", "integer", ".spec.followers", "Desired followers."),
        col("Ready", "integer", ".status.readyFollowers", "Caught-up followers."),
        col("AOF", "integer", ".status.leaderAofSize", "Leader AOF size in bytes."),
        col("Phase", "string", ".status.phase", "Phase.", priority=1),
        col("Age", "date", ".metadata.creationTimestamp", "Age."),
    ]


def openapi(schema: dict[str, Any], *, defaults: bool = True) -> dict[str, Any]:
    """Convert a pydantic JSON schema into a structural OpenAPI v3 schema."""
    defs = schema.get("$defs", {})
    return _convert(schema, defs, defaults)


def _convert(node: dict[str, Any], defs: dict[str, Any], defaults: bool) -> dict[str, Any]:
    node = copy.deepcopy(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**target, **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express union as a structural schema: {options}")
        outer = {k: v for k, v in node.items() if k not in _DROP}
        if outer.get("default", "") is None or not defaults:
            outer.pop("default", None)
        return {**_convert(options[0], defs, defaults), **outer, "nullable": True}
    extra = node.get("additionalProperties")
    out: dict[str, Any] = {k: v for k, v in node.items() if k not in _DROP}
    if not defaults:
        out.pop("default", None)
    if "const" in out:  # a one-value Literal: OpenAPI v3.0 has no const
        out["enum"] = [out.pop("const")]
    if "exclusiveMinimum" in out:
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out:
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if "properties" in out:
        out["type"] = "object"
        out["properties"] = {k: _convert(v, defs, defaults) for k, v in out["properties"].items()}
    elif out.get("type") == "object":
        if isinstance(extra, dict) and extra.get("type"):
            out["additionalProperties"] = _convert(extra, defs, defaults)
        else:
            out["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in out:
        out["items"] = _convert(out["items"], defs, defaults)
    if "type" not in out:
        raise ValueError(f"schema node without a type: {node}")
    return out


def _add_defaults(schema: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Fill in defaults that pydantic leaves out (default_factory): objects get ``{}``."""
    for name, prop in schema.get("properties", {}).items():
        if name not in defaults or "default" in prop:
            continue
        value = defaults[name]
        if prop.get("type") == "object" and "properties" in prop:
            prop["default"] = {}
            _add_defaults(prop, value)
        else:
            prop["default"] = value
