"""The published OpenAPI documents: complete, valid OpenAPI 3.1, and what the server enforces.

Reads the live route lists (app.PUBLIC_ROUTES, app.ADMIN_ROUTES), so a route
added later is held to the same rules. test_manager_contract checks the
running server against these documents with generated requests.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest
from openapi_spec_validator import validate as validate_openapi
from test_manager_support import Running, admin, call, client_ctx, https, make_config, make_pki

from cloudlet.crypto.identity import Period
from cloudlet.errors import CloudletError
from cloudlet.manager import app, openapi, schema

PERIOD = str(Period.containing(datetime.now(UTC)))
ROUTES = [*app.PUBLIC_ROUTES, *app.ADMIN_ROUTES]


def _label(route) -> str:
    return f"{route.method} {route.path}"


@pytest.fixture(scope="module")
def alpha(tmp_path_factory, master_a):
    root = tmp_path_factory.mktemp("openapi")
    pki = make_pki(root, "cl-alpha")
    run = Running(make_config(root, pki, master_a))
    yield run, client_ctx(pki)
    run.stop()


@pytest.mark.parametrize("route", ROUTES, ids=_label)
def test_every_route_publishes_its_response_parameters_and_errors(route):
    assert route.response is not None, "no response schema"
    assert set(route.path_params()) <= set(route.params), "a path parameter has no schema"
    spec = openapi.build([route], "one route")
    op = spec["paths"][route.path][route.method.lower()]
    ok = op["responses"][str(route.status)]["content"][route.media]["schema"]
    assert ok is route.response
    for status in openapi.statuses(route):
        error = op["responses"][str(status)]["content"]["application/json"]["schema"]
        assert error == openapi.error_schema(status)
    # The very schema objects the handler validates with (web.params), not copies.
    published = {p["name"]: p for p in op.get("parameters", [])}
    assert set(published) == set(route.params)
    for name, sub in route.params.items():
        assert published[name]["schema"] is sub
        assert published[name]["in"] == ("path" if name in route.path_params() else "query")
    for sub in route.params.values():
        schema.check(sub)


def test_both_documents_are_valid_openapi_3_1(alpha):
    run, ctx = alpha
    status, public = call(run, ctx, "GET", "/openapi.json")
    assert status == 200
    status, private = admin(run, "GET", "/openapi.json")
    assert status == 200
    for document in (public, private):
        assert document["openapi"] == "3.1.0"
        validate_openapi(document)


def test_message_ids_are_published_as_the_server_reads_them():
    ack = next(r for r in app.PUBLIC_ROUTES if r.path.endswith("/ack"))
    parameter = openapi.build([ack], "t")["paths"][ack.path]["post"]["parameters"][0]
    assert parameter["schema"]["pattern"] == "^[0-9a-f]{32}$"


def _period_ok(label: str) -> bool:
    try:
        Period(label)
    except CloudletError:
        return False
    return True


def test_the_period_pattern_accepts_exactly_the_real_periods():
    pattern = schema._pattern(schema.PERIOD["pattern"])
    years = [0, 1999, 2000, 2001, 2024, 2026, 2100, 2400, 2800, 3000, 9600, 9996, 9998, 9999]
    labels = [f"{y:04d}-{m:02d}" for y in years for m in range(14)]
    labels += [f"{y:04d}-{m:02d}-{d:02d}" for y in years for m in range(14) for d in range(33)]
    labels += ["2026-1", "2026-011", "26-11", "2026-11-", "２０２６-11", "2026-11\n", ""]
    wrong = [label for label in labels if bool(pattern.search(label)) != _period_ok(label)]
    assert not wrong
    assert not pattern.search("0000-00")
    day, last = date(2000, 1, 1), date(2030, 1, 1)  # every real day in three decades
    while day < last:
        assert pattern.search(day.isoformat()), day
        day += timedelta(days=1)


def test_base64_in_the_documents_is_what_the_server_decodes():
    pattern = schema._pattern(schema.BASE64["pattern"])
    assert pattern.search("aGk=") and pattern.search("") and pattern.search("aGlt")
    assert not pattern.search("aGk") and not pattern.search("a===") and not pattern.search("aG=k")


def test_parameters_are_validated_by_the_schemas_published_for_them(alpha):
    run, ctx = alpha
    assert admin(run, "GET", "/admin/devices?service_id=face-rec")[0] == 200
    status, out = admin(run, "GET", "/admin/devices?service_id=Face%20Rec")
    assert status == 400 and "query parameter service_id" in out["error"]["message"]
    status, out = admin(run, "GET", "/admin/devices?service_id=a&service_id=b")
    assert status == 400 and "more than once" in out["error"]["message"]
    assert admin(run, "GET", "/admin/messages?device_id=tablet-07%40cl-bravo")[0] == 200
    status, out = admin(run, "DELETE", "/admin/svms/UPPER")
    assert status == 400 and "path parameter service_id" in out["error"]["message"]


def test_405_names_the_allowed_methods(alpha):
    run, ctx = alpha
    conn = https(run, ctx)
    try:
        conn.request("DELETE", "/device/messages")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == 405 and response.getheader("Allow") == "GET"


def test_responses_name_no_software_versions(alpha):
    run, ctx = alpha
    for path in ("/openapi.json", "/nothing", "/device/messages"):
        conn = https(run, ctx)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        server = response.getheader("Server")
        assert server == "cloudlet-manager", (path, server)
        assert not re.search(r"Python|aiohttp|\d+\.\d+", server)


def test_an_unexpected_failure_is_answered_in_the_error_shape(alpha, monkeypatch):
    run, _ctx = alpha

    def broken(*_args, **_kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(run.state.store, "svms", broken)
    status, out = admin(run, "GET", "/admin/svms")
    assert status == 500 and out["error"]["type"] == "InternalError"
