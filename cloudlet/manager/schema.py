"""Request bodies and parameters: strict JSON parsing and a small JSON Schema checker.

The same schema dicts are published in the OpenAPI document, so what the
spec says and what the server enforces cannot drift apart. Messages quote
what the client sent (``quote``), since they are logged as well as answered. Only the subset
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

__all__ = [
    "DEVICE_NAME",
    "ID",
    "MESSAGE_ID",
    "PERIOD",
    "SHA256",
    "check",
    "parse_json",
    "quote",
    "validate",
]

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
# Canonical padded base64, as base64.b64decode(validate=True) reads it ("abc" is not).
BASE64 = {
    "type": "string",
    "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    "maxLength": 65536,
}
MESSAGE_ID = {"type": "string", "pattern": "^[0-9a-f]{32}$", "maxLength": 32}

# A validity period exactly as cloudlet.crypto.identity.Period accepts it: a
# month YYYY-MM or a day YYYY-MM-DD that exists, from the year 2000 on, and
# ending before the year 10000 (so 9999-12 and 9999-12-31 are out). The spec
# publishes this pattern, so a client can tell a real period from 0000-00.
_MONTH = "(?:0[1-9]|1[0-2])"
_DAY_1_28 = "(?:0[1-9]|1[0-9]|2[0-8])"
_DAY_OF_ANY_YEAR = f"(?:{_MONTH}-{_DAY_1_28}|(?:0[13-9]|1[0-2])-(?:29|30)|(?:0[13578]|1[02])-31)"
_YEAR_2000_9998 = "(?:[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
_LEAP_YEAR = "(?:[2-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[3579][26])00)"
_IN_9999 = (
    f"9999-(?:0[1-9]|1[01])(?:-{_DAY_1_28})?"
    "|9999-(?:0[13-9]|1[01])-(?:29|30)|9999-(?:0[13578]|10)-31"
    "|9999-12-(?:0[1-9]|[12][0-9]|30)"
)
PERIOD = {
    "type": "string",
    "pattern": (
        f"^(?:{_YEAR_2000_9998}-{_MONTH}|{_YEAR_2000_9998}-{_DAY_OF_ANY_YEAR}"
        f"|{_LEAP_YEAR}-02-29|{_IN_9999})$"
    ),
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


def quote(text: str, limit: int = 64) -> str:
    """Client-supplied text as a JSON string literal, for messages and the log.

    Every control character comes out escaped (so a key cannot start a new
    log line), and long text is cut: an error message echoes, never stores.
    """
    return json.dumps(text[:limit]) + ("..." if len(text) > limit else "")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise RequestError(f"The JSON body repeats the key {quote(key)}.")
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
            out += [f"{where}[{quote(k)}] is not a known field" for k in value if k not in props]
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


def validate(schema: dict, value: Any, what: str = "The request body") -> Any:
    """Return ``value`` if it matches ``schema``; else RequestError listing why."""
    problems = _errors(schema, value, "$")
    if problems:
        raise RequestError(f"{what} is not valid: " + "; ".join(problems[:10]) + ".")
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
