"""Request bodies: strict JSON parsing and a small JSON Schema checker.

The same schema dicts are published in the OpenAPI document, so what the
spec says and what the server enforces cannot drift apart. Only the subset
of JSON Schema the Manager uses is implemented (object with required
properties and no unknown ones, string with length and pattern, integer with
bounds, boolean, array with bounds and unique items); using anything else is
a programming error and raises at import time in the tests.

Parsing refuses duplicate keys, NaN and Infinity: two parsers reading the
same bytes differently is how validation gets bypassed.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from cloudlet.errors import RequestError

__all__ = ["DEVICE_NAME", "ID", "SHA256", "check", "parse_json", "validate"]

# Reusable fragments.
ID = {"type": "string", "pattern": "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$", "maxLength": 63}
# A device's name on a cloudlet: its id, plus "@<home cloudlet>" for a visitor.
DEVICE_NAME = {
    "type": "string",
    "pattern": "^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)?$",
    "maxLength": 127,
}
HOST = {"type": "string", "pattern": "^[A-Za-z0-9.:-]{1,253}$", "maxLength": 253}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$", "maxLength": 64}
BASE64 = {"type": "string", "pattern": "^[A-Za-z0-9+/]*={0,2}$", "maxLength": 65536}
PERIOD = {
    "type": "string",
    "pattern": "^[0-9]{4}-[0-9]{2}(?:-[0-9]{2})?$",
    "maxLength": 10,
}

_KNOWN = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "description",
}


def _reject_constant(name: str) -> Any:
    raise RequestError(f"The JSON body contains {name}, which is not allowed.")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(f"The JSON body repeats the key {key!r}.")
        out[key] = value
    return out


def parse_json(body: bytes) -> Any:
    """Decode a request body strictly; any problem is a RequestError (400)."""
    try:
        text = body.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise RequestError("The body is not UTF-8 text.") from None
    except (ValueError, RecursionError) as exc:
        raise RequestError(f"The body is not valid JSON ({exc}).") from None


@functools.cache
def _pattern(pattern: str) -> re.Pattern[str]:
    # ECMA-262 "$" is the end of the string; Python's also matches before a
    # final newline, which would let "tablet-07\n" pass as an id.
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


def _type_ok(kind: str, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    raise ValueError(f"schema type {kind!r} is not supported")


def _errors(schema: dict, value: Any, where: str) -> list[str]:
    kind = schema["type"]
    if not _type_ok(kind, value):
        return [f"{where} must be of type {kind}"]
    out: list[str] = []
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                out.append(f"{where}.{name} is required")
        if schema.get("additionalProperties", True) is False:
            out += [f"{where}.{k} is not a known field" for k in value if k not in props]
        for name, sub in props.items():
            if name in value:
                out += _errors(sub, value[name], f"{where}.{name}")
    elif kind == "string":
        if len(value) < schema.get("minLength", 0):
            out.append(f"{where} is shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{where} is longer than {schema['maxLength']} characters")
        if "pattern" in schema and not _pattern(schema["pattern"]).search(value):
            out.append(f"{where} does not match {schema['pattern']}")
    elif kind == "integer":
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where} is below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{where} is above {schema['maximum']}")
    elif kind == "array":
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where} needs at least {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{where} has more than {schema['maxItems']} items")
        if schema.get("uniqueItems"):
            seen = [json.dumps(v, sort_keys=True) for v in value]
            if len(set(seen)) != len(seen):
                out.append(f"{where} has repeated items")
        for i, item in enumerate(value):
            out += _errors(schema["items"], item, f"{where}[{i}]")
            if len(out) > 20:
                break
    return out


def validate(schema: dict, value: Any) -> Any:
    """Return ``value`` if it matches ``schema``; else RequestError listing why."""
    problems = _errors(schema, value, "$")
    if problems:
        raise RequestError("The request body is not valid: " + "; ".join(problems[:10]) + ".")
    return value


def check(schema: dict) -> None:
    """Fail loudly if a schema uses keywords this checker would silently ignore."""
    unknown = set(schema) - _KNOWN
    if unknown:
        raise ValueError(f"unsupported schema keywords {sorted(unknown)}")
    _type_ok(schema["type"], None)  # raises for unsupported types
    for sub in schema.get("properties", {}).values():
        check(sub)
    if "items" in schema:
        check(schema["items"])
