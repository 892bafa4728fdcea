"""Checking an API response against the schema the server documents for it in its OpenAPI spec."""

from __future__ import annotations

import json

import jsonschema_rs


def schema_violations(spec: dict, path: str, method: str, status: int, body: object) -> list[str] | None:
    """How ``body`` (a ``status`` answer of ``method path``) violates its documented JSON schema
    (JSON Schema 2020-12, which OpenAPI 3.1 uses; components inlined as ``$defs``): ``[]`` when it
    conforms, ``None`` when the spec documents no JSON body for that status."""
    documented = spec["paths"][path][method.lower()]["responses"]
    content = documented.get(str(status), {}).get("content", {}).get("application/json")
    if content is None:
        return None
    as_defs = json.loads(json.dumps({"$defs": spec["components"]["schemas"], **content["schema"]})
                         .replace("#/components/schemas/", "#/$defs/"))
    return [f"{e.instance_path}: {e.message}" for e in jsonschema_rs.validator_for(as_defs).iter_errors(body)]
