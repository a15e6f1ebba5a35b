"""OpenAPI 3.1 descriptions, built from the same route rows the server registers.

Request body and parameter schemas are the very dicts the server validates
with, and every response, success or error, is described with its schema, so
the published contract is what is enforced. Unit tests compare the aiohttp
router with these documents in both directions, and test the running server
against them (schemathesis).
"""

from __future__ import annotations

from collections.abc import Iterable

from cloudlet.manager.protocol import API_VERSION, SCHEME
from cloudlet.manager.web import Route

__all__ = ["build", "error_schema", "statuses"]


def error_schema(status: int) -> dict:
    """The one JSON error shape (web._error), with its status filled in."""
    text = {"type": "string"}
    return {
        "type": "object",
        "required": ["error"],
        "additionalProperties": False,
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "type", "message", "hint"],
                "additionalProperties": False,
                "properties": {
                    "status": {"type": "integer", "const": status},
                    "type": text,
                    "message": text,
                    "hint": text,
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

# Why each error status is answered; every one carries error_schema(status).
_REASONS = {
    400: "A parameter or the body is malformed or not allowed; nothing was changed.",
    401: "Missing, damaged, expired or replayed device proof; nothing was changed.",
    403: "Authenticated but not allowed (no or unpaired client certificate; a device "
    "that is not paired here, revoked, or outside its validity); nothing was changed.",
    404: "No such object; nothing was changed.",
    408: "The request body did not arrive in time; nothing was changed.",
    409: "Conflicts with stored state; nothing was changed.",
    413: "Body too large; nothing was changed.",
    415: "Body is not application/json; nothing was changed.",
    429: "Too many failed device proofs from this address; retry after Retry-After seconds.",
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until requests from this address are served again.",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def statuses(route: Route) -> list[int]:
    """Every error status ``route`` can answer: its own plus what its row implies.

    Bodies go through ``web.json_body`` (400, 408, 413, 415), except on device
    routes, where ``device.authenticate`` reads every body, of any type, for
    the proof (408, 413) and counts failed proofs per address (429).
    """
    out = set(route.errors)
    if route.params:
        out.add(400)
    if route.body is not None:
        out |= {400, 408, 413}
        if route.security != "device-proof":
            out.add(415)
    if route.security == "peer-mtls":
        out.add(403)
    elif route.security == "device-proof":
        out |= {401, 403, 408, 413, 429}
    return sorted(out)


def _parameters(route: Route) -> list[dict]:
    in_path = route.path_params()
    missing = [name for name in in_path if name not in route.params]
    if missing:
        raise ValueError(f"{route.method} {route.path}: no schema for path parameter(s) {missing}")
    return [
        {
            "name": name,
            "in": "path" if name in in_path else "query",
            "required": name in in_path,
            "schema": sub,
        }
        for name, sub in route.params.items()
    ]


def _responses(route: Route) -> dict:
    if route.response is None:
        raise ValueError(f"{route.method} {route.path}: no response schema")
    out = {
        str(route.status): {
            "description": "OK" if route.status == 200 else "Created",
            "content": {route.media: {"schema": route.response}},
        }
    }
    for status in statuses(route):
        out[str(status)] = {
            "description": _REASONS[status],
            "content": {"application/json": {"schema": error_schema(status)}},
        }
        if status == 429:
            out[str(status)]["headers"] = _RETRY_AFTER
    return out


def _operation(route: Route) -> dict:
    op: dict = {
        "operationId": route.handler.__module__.rsplit(".", 1)[-1] + "_" + route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag] if route.tag else [],
        "responses": _responses(route),
    }
    if route.params:
        op["parameters"] = _parameters(route)
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
    """The OpenAPI document for ``routes`` (plus GET-only ``extra_paths`` such as itself).

    Raises ValueError for a row that the document could not describe fully
    (no response schema, a path parameter without a schema): a programming
    error that stops the Manager from starting rather than publishing less.
    """
    paths: dict[str, dict] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    for path in extra_paths:
        paths.setdefault(path, {})["get"] = {
            "operationId": "openapi" + path.replace("/", "_").replace(".", "_"),
            "summary": "This OpenAPI description.",
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1 document",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": API_VERSION,
            "description": (
                "Every error is the JSON object of the error responses. A method a path "
                "does not list is answered 405 with an Allow header."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {"securitySchemes": _SECURITY_SCHEMES},
    }
