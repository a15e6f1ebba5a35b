"""OpenAPI 3.1 descriptions, built from the same route rows the server registers.

Request body schemas are the very dicts the server validates with, so the
published contract is what is enforced. A unit test compares the aiohttp
router with these documents in both directions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cloudlet.manager.protocol import API_VERSION, SCHEME
from cloudlet.manager.web import Route

__all__ = ["ERROR_SCHEMA", "build"]

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "type": {"type": "string"},
                "message": {"type": "string"},
                "hint": {"type": "string"},
            },
        }
    },
}

_SECURITY_SCHEMES = {
    "peer-mtls": {
        "type": "mutualTLS",
        "description": "Client certificate issued by a paired cloudlet's CA.",
    },
    "device-proof": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": (
            f"'{SCHEME} <base64 proof>': a Cha-Cheon signature with the device's identity "
            "key over audience, time, nonce, method, path and body digest "
            "(cloudlet.manager.protocol)."
        ),
    },
}

_ERRORS = {
    "400": "Malformed request; nothing was changed.",
    "401": "Missing, invalid, expired or replayed credentials.",
    "403": "Authenticated but not allowed (unpaired or revoked).",
    "404": "No such object.",
    "409": "Conflicts with stored state; nothing was changed.",
    "413": "Body too large; nothing was changed.",
    "415": "Body is not application/json.",
}


def _operation(route: Route) -> dict:
    op: dict = {
        "operationId": route.handler.__module__.rsplit(".", 1)[-1] + "_" + route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag] if route.tag else [],
        "responses": {
            "200": {
                "description": "OK",
                "content": {"application/json": {"schema": route.response or {"type": "object"}}},
            },
            **{
                code: {
                    "description": text,
                    "content": {"application/json": {"schema": ERROR_SCHEMA}},
                }
                for code, text in _ERRORS.items()
            },
        },
    }
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    params += [
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
        for name in route.query
    ]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {
            "required": route.method != "POST" or bool(route.body.get("required")),
            "content": {"application/json": {"schema": route.body}},
        }
    if route.security in _SECURITY_SCHEMES:
        op["security"] = [{route.security: []}]
    elif route.security == "admin-socket":
        op["description"] = "Only on the local admin unix socket (file permissions)."
    return op


def build(routes: Iterable[Route], title: str, extra_paths: Iterable[str] = ()) -> dict:
    """The OpenAPI document for ``routes`` (plus GET-only ``extra_paths`` such as itself)."""
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    for path in extra_paths:
        paths.setdefault(path, {})["get"] = {
            "operationId": "openapi" + path.replace("/", "_").replace(".", "_"),
            "summary": "This OpenAPI description.",
            "responses": {"200": {"description": "OpenAPI 3.1 document"}},
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": API_VERSION},
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": _SECURITY_SCHEMES},
    }
