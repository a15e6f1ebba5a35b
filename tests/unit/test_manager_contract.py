"""Every route against its published OpenAPI document, with generated requests (schemathesis).

A real Manager on 127.0.0.1 answers requests that schemathesis generates
from the documents the Manager itself serves, for every operation: the
coverage phase (each constraint at and past its bounds, missing and extra
parts, undeclared methods) and a fixed number of random valid and invalid
requests. Three kinds of client: anyone on the public API; a paired peer's
client certificate with signed device proofs on the public API; and the
admin API, served on a loopback TCP port for the test.

Each response must be no server error, carry a documented status, match the
documented schema, content type and headers; invalid data must be refused;
and a refused request (4xx) must leave the database exactly as it was.

The budget is fixed (coverage cases plus ``EXAMPLES`` random ones per
operation, derandomized, no shrinking), so a run takes the same seconds
every time.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
import requests
import schemathesis
from aiohttp import web
from schemathesis.checks import not_a_server_error
from schemathesis.pytest.lazy import get_all_tests
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from test_manager_support import (
    CloudletPki,
    Running,
    admin,
    call,
    client_ctx,
    make_config,
    pair,
    snapshot,
)

from cloudlet.crypto import ibe
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.manager import protocol
from cloudlet.manager.app import build_admin_app

EXAMPLES = 12  # random requests per operation, on top of the coverage phase
PERIOD = str(Period.containing(datetime.now(UTC)))
SVM = {
    "service_id": "face-rec",
    "fqdn": "face-rec.svc.alpha.cloudlet",
    "memory_mib": 512,
    "ports": [8080],
    "images": [{"name": "base", "sha256": "ab" * 32}],
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    unsupported_method,
]
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 20261128,
        "generation": {
            "mode": "all",
            "max-examples": EXAMPLES,
            "deterministic": True,
            "no-shrink": True,
            "database": "none",
        },
        "phases": {
            "examples": {"enabled": False},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {
            # Refusing invalid data as too slow (408), too large (413) or
            # throttled (429) is refusing it too.
            "negative_data_rejection": {
                "expected-statuses": [400, 401, 403, 404, 405, 408, 409, 413, 415, 429]
            }
        },
    }
)


class DeviceProof(requests.auth.AuthBase):
    """Signs requests as a device, over exactly the method, path and body sent.

    Applied by requests after schemathesis has serialized the case, so the
    proof covers the final bytes, as the device client's does. Schemathesis
    decides whether a request authenticates: the Authorization header it
    generated (any text) is replaced with a real proof, and a request it
    sends without one (to see it refused) stays without.
    """

    def __init__(self, key: ibe.DeviceKey, audience: str) -> None:
        self.key = key
        self.audience = audience

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if "Authorization" not in request.headers:
            return request
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        request.headers["Authorization"] = protocol.authorization_header(
            self.key, self.audience, request.method, request.path_url, body
        )
        return request


@dataclass
class Api:
    """One kind of client of a running Manager, and the document it was served."""

    run: Running
    spec: dict
    base_url: str
    session: requests.Session
    verify: str | bool = False
    cert: tuple[str, str] | None = None

    def schema(self):
        return schemathesis.openapi.from_dict(self.spec, config=CONFIG)

    def exercise(self, case) -> requests.Response:
        """Send ``case``; fail on any check, or on a refusal that changed the database."""
        kwargs = {"verify": self.verify, "cert": self.cert, "timeout": 10}
        before = snapshot(self.run.cfg.db)
        response = case.call(base_url=self.base_url, session=self.session, **kwargs)
        changed = snapshot(self.run.cfg.db) != before
        case.validate_response(
            response, checks=CHECKS, transport_kwargs={"session": self.session, **kwargs}
        )
        refused = 400 <= response.status_code < 500
        assert not (refused and changed), (
            f"refused ({response.status_code}) but changed the database: {case.as_curl_command()}"
        )
        return response


@contextlib.contextmanager
def _world(tmp_path, pkis, master_a, master_b, **limits):
    """A Manager with a paired peer, a paired device, a service VM and a message."""
    run = Running(make_config(tmp_path, pkis["cl-alpha"], master_a, **limits))
    try:
        assert pair(run, pkis["cl-bravo"], master_b)[0] == 200
        assert admin(run, "PUT", "/admin/devices/tablet-07", {"valid_from": PERIOD})[0] == 200
        assert admin(run, "PUT", "/admin/svms/face-rec", SVM)[0] == 200
        message = {"device_id": "tablet-07", "kind": "note", "issuer": "cl-alpha", "body": "aGk="}
        assert admin(run, "POST", "/admin/messages", message)[0] == 201
        yield run
    finally:
        run.stop()


@pytest.fixture
def world(tmp_path, pkis, master_a, master_b):
    """The Manager, with the device-proof limiter set high.

    The requests generated without a proof would otherwise get every later
    device request refused (429), and the handlers behind it would go untested.
    """
    with _world(tmp_path, pkis, master_a, master_b, auth_failures=10_000) as run:
        yield run


@pytest.fixture
def throttling_world(tmp_path, pkis, master_a, master_b):
    """With the default limiter, so its 429 answers (and Retry-After) are checked too."""
    with _world(tmp_path, pkis, master_a, master_b) as run:
        yield run


def _public(run: Running, own: CloudletPki) -> Api:
    status, spec = call(run, client_ctx(own), "GET", "/openapi.json")
    assert status == 200
    return Api(run, spec, f"https://127.0.0.1:{run.port}", requests.Session(), str(own.ca))


@pytest.fixture
def anonymous(throttling_world, pkis) -> Api:
    return _public(throttling_world, pkis["cl-alpha"])


@pytest.fixture
def credentialed(world, pkis) -> Api:
    """A paired peer's client certificate, and proofs of the paired device tablet-07."""
    api = _public(world, pkis["cl-alpha"])
    bravo = pkis["cl-bravo"].dir
    api.cert = (str(bravo / "client.pem"), str(bravo / "client.key"))
    key = ibe.extract(world.state.master, device_identity("cl-alpha", "tablet-07"))
    api.session.auth = DeviceProof(key, "cl-alpha")
    return api


@pytest.fixture
def admin_api(world) -> Api:
    """The admin app on a loopback TCP port, sharing the running Manager's state."""
    runner = web.AppRunner(build_admin_app(world.state))

    async def start() -> int:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return runner.addresses[0][1]

    port = asyncio.run_coroutine_threadsafe(start(), world.loop).result(timeout=30)
    status, spec = admin(world, "GET", "/openapi.json")
    assert status == 200
    yield Api(world, spec, f"http://127.0.0.1:{port}", requests.Session())
    asyncio.run_coroutine_threadsafe(runner.cleanup(), world.loop).result(timeout=30)


def _run_every_operation(api: Api, check=None) -> None:
    """Each operation's coverage and fuzzing cases, as schemathesis' pytest plugin builds them.

    That plugin cannot run under pytest 9 (it rewrites ``Function._nodeid``),
    so the per-operation Hypothesis tests it would build are run here
    directly. Every failing operation is reported, not only the first.
    """

    def test(case) -> None:
        response = api.exercise(case)
        if check is not None:
            check(case, response)

    failures = []
    tests = get_all_tests(schema=api.schema(), test_func=test, settings=None, given_kwargs={})
    for result in tests:
        operation, run_operation = result.ok()
        try:
            run_operation()
        except Exception as exc:  # a check failed, or the server could not be reached
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_public_api_without_credentials_keeps_its_contract_and_serves_nothing(anonymous):
    def serves_nothing(case, response) -> None:
        if case.path != "/openapi.json":
            assert not 200 <= response.status_code < 300, case.as_curl_command()

    _run_every_operation(anonymous, serves_nothing)


def test_public_api_for_a_peer_and_a_device_keeps_its_contract(credentialed):
    _run_every_operation(credentialed)


def test_admin_api_keeps_its_contract(admin_api):
    _run_every_operation(admin_api)


def test_the_test_clients_credentials_work(credentialed):
    """What the credentialed run relies on: the peer certificate and the proofs are accepted."""
    kwargs = {"verify": credentialed.verify, "cert": credentialed.cert, "timeout": 10}
    url = credentialed.base_url
    response = credentialed.session.get(f"{url}/peer/info", **kwargs)
    assert response.status_code == 200 and response.json()["caller"] == "cl-bravo"
    sign_me = {"Authorization": "generated"}
    response = credentialed.session.get(f"{url}/device/messages", headers=sign_me, **kwargs)
    assert response.status_code == 200 and response.json()["device_id"] == "tablet-07"
    response = credentialed.session.get(f"{url}/device/messages", **kwargs)
    assert response.status_code == 401  # no header generated: nothing is signed
