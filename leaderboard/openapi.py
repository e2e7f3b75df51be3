"""The OpenAPI 3 document of API v1, built from Flask's URL map and the ``endpoint``
declarations in ``iugc.leaderboard.api`` (nothing here is written per endpoint)."""
from __future__ import annotations

import re

from iugc.leaderboard.api import ENDPOINTS

_PARAM = re.compile(r"<(?:(?P<conv>[a-z]+):)?(?P<name>[a-z_]+)>")


def _path(rule: str) -> tuple[str, list[dict]]:
    params = [{"name": m["name"], "in": "path", "required": True,
               "schema": {"type": "integer" if m["conv"] == "int" else "string"}} for m in _PARAM.finditer(rule)]
    return _PARAM.sub(lambda m: "{" + m["name"] + "}", rule), params


def build(app) -> dict:
    """The document for every rule of the ``api`` blueprint."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        app_version = version("iugc-platform")
    except PackageNotFoundError:
        app_version = "unknown"
    paths: dict = {}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api."):
            continue
        spec = ENDPOINTS[rule.endpoint.removeprefix("api.")]
        path, params = _path(rule.rule)
        method = next(m for m in rule.methods if m not in ("HEAD", "OPTIONS")).lower()
        operation = {
            "operationId": rule.endpoint.removeprefix("api."), "summary": spec["summary"], "description": spec["description"],
            "parameters": params,
            "responses": {str(code): ({"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                                      if code >= 400 else {"description": text, "content": {"application/json": {}}})
                          for code, text in sorted(spec["responses"].items())},
        }
        if not spec["auth"]:
            operation["security"] = []
        if spec["body"]:
            multipart = any(v.get("format") == "binary" for v in spec["body"].values())
            kind = "multipart/form-data" if multipart else "application/json"
            operation["requestBody"] = {"required": True, "content": {kind: {"schema": {"type": "object", "properties": spec["body"]}}}}
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.0.3",
        "info": {"title": "IUGC challenge platform API", "version": app_version},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "string"}, "retry_after": {"type": "string", "format": "date-time"},
                "field": {"type": "string", "description": "the input at fault, when one is"}}}},
        },
        "paths": dict(sorted(paths.items())),
    }
