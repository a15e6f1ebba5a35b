"""Hostile clients: every phase of a connection is bounded, forged proofs are refused
cheaply and per source, device bodies are small, and the limits are range-checked."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import time
from datetime import UTC, datetime, timedelta

import pytest
from test_manager_support import (
    Running,
    admin,
    call,
    client_ctx,
    device_call,
    make_config,
    pair,
)

from cloudlet.bundles import NetworkCredential
from cloudlet.crypto import auth, ibe
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.errors import AuthenticationError, ConfigError, ReplayError, TooManyRequests
from cloudlet.manager import guard, protocol
from cloudlet.manager.config import parse_config
from cloudlet.manager.limiter import FailureLimiter

PERIOD = str(Period.containing(datetime.now(UTC)))


@pytest.fixture
def start(tmp_path, pkis, master_a):
    """start(**config) -> a running cl-alpha with tablet-07 paired; stopped after the test."""
    runs = []

    def _start(**kw) -> Running:
        root = tmp_path / f"run-{len(runs)}"
        root.mkdir()
        run = Running(make_config(root, pkis["cl-alpha"], master_a, **kw))
        runs.append(run)
        assert admin(run, "PUT", "/admin/devices/tablet-07", {"valid_from": PERIOD})[0] == 200
        return run

    yield _start
    for run in runs:
        run.stop()


@pytest.fixture
def ctx(pkis):
    return client_ctx(pkis["cl-alpha"])


@pytest.fixture(scope="module")
def key7(master_a):
    return ibe.extract(master_a, device_identity("cl-alpha", "tablet-07"))


def tcp(run: Running, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", run.port), timeout=5, source_address=(source, 0))


def tls(run: Running, ctx: ssl.SSLContext, source: str = "127.0.0.1") -> ssl.SSLSocket:
    return ctx.wrap_socket(tcp(run, source), server_hostname="127.0.0.1")


def response(sock: socket.socket) -> tuple[int, http.client.HTTPResponse, bytes]:
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp.status, resp, resp.read()


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``sock``, or None if it was still open."""
    start = time.monotonic()
    sock.settimeout(0.05)
    while (elapsed := time.monotonic() - start) < seconds:
        try:
            if sock.recv(4096) == b"":
                return elapsed
        except TimeoutError:
            continue
        except OSError:  # reset, or a TLS alert
            return elapsed
    return None


def drip_until_closed(sock: socket.socket, seconds: float) -> float | None:
    """Send one byte every 0.1 s; seconds until the server closed the connection."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        try:
            sock.send(b"x")
        except OSError:
            return time.monotonic() - start
        if closed_within(sock, 0.1) is not None:
            return time.monotonic() - start
    return None


def finish(run: Running, sock: socket.socket, rest: bytes) -> None:
    """Send the body the server did not wait for, and wait until aiohttp lets go.

    aiohttp reads and drops an unread body for up to 10 s after answering,
    and keeps doing so after the connection is lost; without this the test
    would stop the Manager's loop under that task.
    """
    sock.sendall(rest)
    sock.close()
    servers = [runner.server for runner in run.manager._runners]  # public and admin
    assert wait_for(lambda: not any(server.connections for server in servers))


def wait_for(check, seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


# --- item 3: every phase of a connection is bounded --------------------------------


def test_a_silent_or_stalled_handshake_is_dropped(start):
    run = start(handshake_timeout=0.5)
    silent = tcp(run)
    stalled = tcp(run)
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then nothing
    assert closed_within(silent, 4) is not None
    assert closed_within(stalled, 4) is not None
    assert wait_for(lambda: run.manager.guard.active == 0)


def test_headers_sent_a_byte_at_a_time_are_cut_off(start, ctx):
    run = start(header_timeout=0.5, keepalive_timeout=30)
    sock = tls(run, ctx)
    sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    elapsed = drip_until_closed(sock, 5)
    assert elapsed is not None and elapsed < 3
    # A client that is not slow is served as before.
    assert call(run, ctx, "GET", "/openapi.json")[0] == 200


def test_idle_keep_alive_and_a_slow_next_request_are_closed(start, ctx):
    run = start(keepalive_timeout=0.5, header_timeout=30)
    for slow_next_request in (False, True):
        sock = tls(run, ctx)
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert response(sock)[0] == 200
        if slow_next_request:
            sock.sendall(b"GET /openapi.json HTTP/1.1\r\n")
            elapsed = drip_until_closed(sock, 5)
        else:
            elapsed = closed_within(sock, 5)
        assert elapsed is not None and elapsed < 3


def test_a_stalled_body_gets_408(start, ctx, key7):
    run = start(body_timeout=0.5)
    # A JSON body (json_body), here on the admin socket ...
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(str(run.cfg.admin_socket))
    sock.sendall(
        b"PUT /admin/devices/tablet-09 HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    status, _resp, body = response(sock)
    assert status == 408 and "did not arrive" in json.loads(body)["error"]["message"]
    finish(run, sock, b" " * 99)
    # ... and a device body, after a proof that passes every check but the signature.
    path = "/device/messages/" + "ab" * 16 + "/ack"
    auth_header = protocol.authorization_header(key7, "cl-alpha", "POST", path, b"{}")
    sock = tls(run, ctx)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header}\r\n"
        "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{".encode()
    )
    assert response(sock)[0] == 408
    finish(run, sock, b"}")


def test_connections_above_the_cap_are_dropped_at_once(start, ctx):
    run = start(max_connections=3, handshake_timeout=10)
    held = [tcp(run) for _ in range(3)]
    assert wait_for(lambda: run.manager.guard.active == 3)
    extra = tcp(run)
    elapsed = closed_within(extra, 3)
    assert elapsed is not None and elapsed < 1
    assert run.manager.guard.refused == 1
    held.pop().close()
    assert wait_for(lambda: run.manager.guard.active == 2)
    assert call(run, ctx, "GET", "/openapi.json")[0] == 200
    for sock in held:
        sock.close()
    assert wait_for(lambda: run.manager.guard.active == 0)


def test_the_connection_count_never_leaks(start, ctx):
    run = start(handshake_timeout=0.5, header_timeout=0.5)
    tcp(run).close()  # gone before the handshake
    garbage = tcp(run)
    garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
    stranger = tcp(run)
    with pytest.raises(ssl.SSLError):  # the client does not trust the server: it hangs up
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).wrap_socket(stranger, server_hostname="x")
    silent = tcp(run)
    idle = tls(run, ctx)  # handshake done, no request
    assert call(run, ctx, "GET", "/openapi.json")[0] == 200
    assert closed_within(idle, 4) is not None and closed_within(silent, 4) is not None
    assert wait_for(lambda: run.manager.guard.active == 0)
    for sock in (garbage, stranger, silent, idle):
        sock.close()


def test_the_cap_stays_below_the_descriptor_limit(monkeypatch):
    monkeypatch.setattr(guard.resource, "getrlimit", lambda _which: (1000, 4096))
    assert guard.connection_cap(500) == 500
    assert guard.connection_cap(5000) == 1000 - guard.FD_RESERVE
    monkeypatch.setattr(guard.resource, "getrlimit", lambda _which: (100, 4096))
    with pytest.raises(ConfigError, match="LimitNOFILE"):
        guard.connection_cap(10)


# --- item 4: nothing of a device body is read before the proof passes its checks ----


def _raw_device_request(run, ctx, auth_header: str, path: str, length: int) -> int:
    """Headers announcing ``length`` body bytes, and no body: the status, promptly."""
    sock = tls(run, ctx)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth_header}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n".encode()
    )
    status = response(sock)[0]
    finish(run, sock, b" " * length)
    return status


def test_a_refused_proof_is_answered_without_waiting_for_the_body(start, ctx, key7):
    run = start(body_timeout=30)
    path = "/device/messages/" + "ab" * 16 + "/ack"
    old = protocol.authorization_header(
        key7, "cl-alpha", "POST", path, b"{}", now=datetime.now(UTC) - timedelta(hours=1)
    )
    elsewhere = protocol.authorization_header(key7, "cl-bravo", "POST", path, b"{}")
    started = time.monotonic()
    assert _raw_device_request(run, ctx, old, path, 4000) == 401
    assert _raw_device_request(run, ctx, elsewhere, path, 4000) == 401
    assert _raw_device_request(run, ctx, "CloudletProof AAAA", path, 4000) == 401
    assert time.monotonic() - started < 5


def test_only_a_valid_signature_learns_whether_a_device_is_paired(start, ctx, key7, master_a):
    """A forged proof for a paired and for an unknown device get the same answer."""
    run = start()
    path = "/device/messages"
    stranger = ibe.extract(master_a, device_identity("cl-alpha", "tablet-99"))
    answers = []
    for key in (key7, stranger):
        # Signed for another path: the signature does not hold for this request.
        (status, body), _ = device_call(run, ctx, key, "GET", path, sign_path="/device/svms/x")
        answers.append((status, body["error"]["type"]))
    assert answers == [(401, "AuthenticationError")] * 2
    # With a valid signature, the stranger is told it is not paired.
    (status, body), _ = device_call(run, ctx, stranger, "GET", path)
    assert status == 403 and "not paired" in body["error"]["message"]


def test_device_bodies_are_small(start, ctx, key7):
    run = start(device_max_body_bytes=4096, max_body_bytes=64 * 1024)
    path = "/device/messages/" + "ab" * 16 + "/ack"
    big = b" " * 5000 + b"{}"
    header = protocol.authorization_header(key7, "cl-alpha", "POST", path, big)
    # Announced: refused on Content-Length, before a byte is read.
    assert _raw_device_request(run, ctx, header, path, len(big)) == 413
    # Chunked: refused while reading, although the proof covers this very body.
    conn = http.client.HTTPSConnection("127.0.0.1", run.port, context=ctx, timeout=5)
    hdrs = {"Authorization": header, "Content-Type": "application/json"}
    conn.request("POST", path, body=iter([big[:3000], big[3000:]]), headers=hdrs,
                 encode_chunked=True)  # fmt: skip
    resp = conn.getresponse()
    assert resp.status == 413 and json.loads(resp.read())["error"]["status"] == 413
    conn.close()


def test_precheck_refuses_without_a_pairing(monkeypatch, master_a):
    key = ibe.extract(master_a, device_identity("cl-alpha", "tablet-07"))
    verifier = auth.DeviceVerifier(master_a.params)
    now = datetime.now(UTC)
    good = auth.make_proof(key, "cl-alpha", b"req", now=now)
    assert verifier.verify(good, b"req", now) == key.identity  # one call does both, as before

    def no_pairing(*_args):
        raise AssertionError("precheck computed a pairing")

    monkeypatch.setattr(auth, "verify_signature", no_pairing)
    with pytest.raises(ReplayError, match="Replayed"):  # its nonce is spent
        verifier.precheck(good, now)
    with pytest.raises(AuthenticationError, match="cl-bravo"):
        verifier.precheck(auth.make_proof(key, "cl-bravo", b"req", now=now), now)
    with pytest.raises(ReplayError, match="old"):
        verifier.precheck(auth.make_proof(key, "cl-alpha", now=now - timedelta(hours=1)), now)
    verifier.precheck(auth.make_proof(key, "cl-alpha", b"req", now=now), now)  # passes


# --- item 5: forged proofs cost a pairing only a few times per source --------------


def test_a_source_that_keeps_failing_gets_429_without_pairings(start, ctx, key7, monkeypatch):
    run = start(auth_failures=3, auth_cooldown=60)
    pairings = []
    real_verify = auth.verify_signature

    def counting(*args):
        pairings.append(1)
        return real_verify(*args)

    monkeypatch.setattr(auth, "verify_signature", counting)

    def from_forger(sign_path):
        conn = http.client.HTTPSConnection(
            "127.0.0.1", run.port, context=ctx, timeout=5, source_address=("127.0.0.2", 0)
        )
        header = protocol.authorization_header(key7, "cl-alpha", "GET", sign_path)
        try:
            conn.request("GET", "/device/messages", headers={"Authorization": header})
            resp = conn.getresponse()
            return resp.status, resp.getheader("Retry-After"), json.loads(resp.read())
        finally:
            conn.close()

    for _ in range(3):  # signed for another path: passes the prechecks, fails the pairing
        assert from_forger("/device/svms/x")[0] == 401
    assert len(pairings) == 3
    status, retry_after, body = from_forger("/device/svms/x")
    assert status == 429 and 55 <= int(retry_after) <= 60
    assert body["error"]["type"] == "TooManyRequests" and body["error"]["hint"]
    assert from_forger("/device/messages")[0] == 429  # even a valid proof, while cooling down
    assert len(pairings) == 3
    # The real device, on another address, is served.
    (status, _), _ = device_call(run, ctx, key7, "GET", "/device/messages")
    assert status == 200


def test_failure_limiter_window_cooldown_and_memory():
    now = [0.0]
    limiter = FailureLimiter(max_failures=2, window=10, cooldown=30, max_sources=3,
                             clock=lambda: now[0])  # fmt: skip
    limiter.failed("10.0.0.1")
    now[0] = 11  # the window passed: the count starts again
    limiter.failed("10.0.0.1")
    limiter.check("10.0.0.1")
    limiter.failed("10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        limiter.check("10.0.0.1")
    assert refused.value.retry_after == 30 and refused.value.status == 429
    limiter.check("10.0.0.2")  # others are unaffected
    now[0] = 41.5
    limiter.check("10.0.0.1")  # cooled down
    for i in range(100):
        limiter.failed(f"10.1.0.{i}")
    assert len(limiter) == 3


# --- item 6: every limit is range-checked, credential_workers is real ---------------


def _config(limits: str) -> dict:
    import tomllib

    return tomllib.loads(
        'cloudlet_id = "cl-alpha"\nzone = "z"\nfqdn = "m.z"\ndb = "m.db"\n'
        'admin_socket = "a.sock"\n[tls]\nca_cert = "ca.pem"\nserver_cert = "s.pem"\n'
        f'server_key = "s.key"\n[ibe]\nmaster_key = "m.key"\n[limits]\n{limits}\n'
    )


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ("max_body_bytes = 0", r"limits.max_body_bytes must be an integer in 1024\.\.67108864"),
        ("max_body_bytes = -1", "limits.max_body_bytes"),
        ("device_max_body_bytes = 10_000_000", r"limits.device_max_body_bytes .* 256\.\.65536"),
        ("credential_workers = -1", r"limits.credential_workers .* 0\.\.64"),
        ("max_connections = 0", "limits.max_connections"),
        ("header_timeout = 0", r"limits.header_timeout must be a number of seconds in 0.1\.\.600"),
        ("keepalive_timeout = -1.5", "limits.keepalive_timeout"),
        ('body_timeout = "30"', "limits.body_timeout"),
        ("auth_failures = true", "limits.auth_failures"),
        ("handshake_timeout = nan", "limits.handshake_timeout"),
        ("max_conections = 10", r"Unknown key\(s\) in \[limits\]: max_conections"),
    ],
)
def test_limits_are_range_checked_by_name(tmp_path, limits, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_config(limits), tmp_path)


def test_limits_take_integers_or_seconds_and_default_safely(tmp_path):
    cfg = parse_config(_config("header_timeout = 5\nbody_timeout = 2.5\nmax_connections = 64"),
                       tmp_path)  # fmt: skip
    assert (cfg.header_timeout, cfg.body_timeout, cfg.max_connections) == (5.0, 2.5, 64)
    assert isinstance(cfg.header_timeout, float)
    default = parse_config(_config(""), tmp_path)
    assert default.max_body_bytes == 256 * 1024 and default.device_max_body_bytes == 4096
    assert 0 < default.keepalive_timeout <= 60 and 0 < default.max_connections < 65536


def test_credentials_are_sealed_on_the_credential_workers(tmp_path, pkis, master_a, master_b):
    run = Running(make_config(tmp_path, pkis["cl-bravo"], master_b, credential_workers=2))
    try:
        issuer = run.state.credential_issuer
        assert pair(run, pkis["cl-alpha"], master_a)[0] == 200
        peer_ctx = client_ctx(pkis["cl-bravo"], pkis["cl-alpha"])
        names = [f"tablet-{i:02d}" for i in range(9)]
        req = {"devices": [{"device_id": n, "identity": str(device_identity("cl-alpha", n))}
                           for n in names]}
        status, body = call(run, peer_ctx, "POST", "/peer/device-credentials", req)
        assert status == 200, body
        assert [c["device_id"] for c in body["credentials"]] == names  # in order
        workers = issuer.pids
        assert len(workers) == 2 and os.getpid() not in workers
    finally:
        run.stop()
    # Shut down with the Manager: no new batch, and the processes are gone.
    with pytest.raises(RuntimeError):
        net = NetworkCredential("net-cl-bravo", "tablet-00", "p" * 24)
        job = (device_identity("cl-bravo", "tablet-00", home="cl-alpha"),
               device_identity("cl-alpha", "tablet-00"), net)
        issuer.issue(master_a.params, [job], pkis["cl-bravo"].ca_pem.decode(), "b", 8443)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_svm_network_is_a_subnet_or_absent(tmp_path):
    base = _config("")
    assert parse_config(base, tmp_path).svm_network is None
    cfg = parse_config({**base, "svm_network": "10.200.0.1/24"}, tmp_path)
    assert str(cfg.svm_network) == "10.200.0.0/24"  # the bridge's address names it too
    for bad in ("10.200.0.0/33", "fd00::/64", "svmbr0", 24):
        with pytest.raises(ConfigError, match="svm_network"):
            parse_config({**base, "svm_network": bad}, tmp_path)
