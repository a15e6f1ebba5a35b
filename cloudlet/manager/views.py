"""Response shapes: the JSON Schema of every answer, as the OpenAPI document publishes it.

Each Route row names one of these (``Route.response``). Objects list every
field as required and allow no others, so the property-based test
(schemathesis, against a real Manager) fails as soon as a handler answers
something the published contract does not say. Unlike request schemas,
these are never enforced by ``schema.validate``, so they may use any JSON
Schema 2020-12 keyword (nullable types, enums).
"""

from __future__ import annotations

from cloudlet.manager import schema

__all__ = [
    "BASE64",
    "BOOLEAN",
    "CHANGED",
    "CLOUDLET",
    "DEVICE",
    "INTEGER",
    "STRING",
    "SVM",
    "array",
    "nullable",
    "obj",
]

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
BASE64 = {"type": "string", "pattern": schema.BASE64["pattern"]}  # any length


def obj(**properties: dict) -> dict:
    """An object with exactly these properties, all of them present."""
    return {
        "type": "object",
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def nullable(sub: dict) -> dict:
    """``sub`` or null (its string keywords apply only to strings)."""
    return {**sub, "type": [sub["type"], "null"]}


CHANGED = obj(changed=BOOLEAN)

# store.SvmRecord.public()
SVM = obj(
    service_id=schema.ID,
    fqdn=schema.HOST,
    memory_mib=INTEGER,
    ports=array(schema.PORT),
    images=array(obj(name=schema.ID, sha256=schema.SHA256)),
    origin=STRING,  # "local" or the peer it migrated from
    state={"type": "string", "enum": ["active", "pending"]},
)

# store.DeviceRecord.public(): ``home`` and ``via`` are null for this cloudlet's own devices.
DEVICE = obj(
    device_id=schema.DEVICE_NAME,
    home=nullable(schema.ID),
    via=nullable(schema.ID),
    not_before=INTEGER,
    not_after=INTEGER,
    revoked=BOOLEAN,
    services=array(schema.ID),
)

# admin._cloudlet_view()
CLOUDLET = obj(
    cloudlet_id=schema.ID,
    ca_fingerprint=schema.SHA256,
    params=BASE64,
    api_host=schema.HOST,
    api_port=schema.PORT,
    pending=BOOLEAN,
    eap_identity=nullable(STRING),
    network=nullable(obj(ssid=STRING, identity=STRING, method=STRING)),
)
