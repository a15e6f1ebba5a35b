"""The device client against real Managers on 127.0.0.1 over real TLS.

A device is paired through A's admin API and its first bundle built as the
pairing push builds it; the client imports it, talks to A's device API, and
picks up credentials that B issued through /peer/device-credentials and A
queued: opened, checked, stored, and only then acknowledged. Bad input of
every kind is refused with a clear error and leaves the store as it was.
"""

from __future__ import annotations

import base64
import http.server
import io
import os
import socket
import stat
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import DetRng
from test_manager_support import admin, call, client_ctx, pair

from cloudlet import bundles, formats
from cloudlet.bundles import NetworkCredential
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.device import sealed
from cloudlet.device.api import DeviceApi, tls_context
from cloudlet.device.cli import main
from cloudlet.device.client import DeviceClient
from cloudlet.device.progress import Console
from cloudlet.device.store import CredentialStore
from cloudlet.errors import (
    BundleRefused,
    CloudletRefused,
    CloudletUnreachable,
    CryptoError,
    ExpiredIdentityError,
    FormatError,
    NoCredentialError,
    SvmUnreachable,
    WeakPassphrase,
    WrongPassphrase,
)
from cloudlet.formats import Kind

ROOT = Path(__file__).resolve().parents[2]
PERIOD = str(Period.containing(datetime.now(UTC)))
FAST = sealed.KdfParams(log2_n=14)  # 16 MiB: the smallest cost a file may declare


def push_bundle(run, pki, master, device="tablet-07", period=PERIOD, **kw) -> bytes:
    """What the pairing push does: pair on the Manager, then sign a first bundle."""
    status, _ = admin(run, "PUT", f"/admin/devices/{device}", {"valid_from": period})
    assert status == 200
    users = admin(run, "GET", "/admin/eap-users")[1]["users"]
    password = {u["identity"]: u["password"] for u in users}[device]
    net = NetworkCredential(run.cfg.ssid, device, password)
    args = {"tls_ca_pem": pki.ca_pem.decode(), "api_host": "127.0.0.1", "api_port": run.port}
    args.update(kw)
    ident = device_identity(master.cloudlet_id, device, period)
    return bundles.issue_first_device_bundle(master, ident, network=net, **args)


@pytest.fixture
def state(tmp_path):
    return tmp_path / "device-state"


@pytest.fixture
def device(state):
    return DeviceClient(state, timeout=10)


@pytest.fixture
def imported(alpha, pkis, master_a, device):
    device.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    return device


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# --- import --------------------------------------------------------------------


def test_import_stores_the_bundle_0600_and_the_api_answers(alpha, pkis, master_a, device, state):
    result = device.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    assert result.changed and result.path == state / "current.bundle"
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert files_under(state) == ["current.bundle"]
    st = device.status()
    assert st.current.identity == f"cloudlet-id-v1/cl-alpha/tablet-07/{PERIOD}"
    assert (st.api.host, st.api.port) == ("127.0.0.1", alpha.port)
    assert st.current.ssid == "net-cl-alpha" and st.next == ()
    assert device.fetch_messages() == []


def test_import_again_changes_nothing(imported, alpha, pkis, master_a, state):
    before = (state / "current.bundle").read_bytes()
    again = imported.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    assert again.changed is False and (state / "current.bundle").read_bytes() == before


def test_the_api_trusts_only_the_bundles_ca(alpha, pkis, master_a, device):
    bundle = bundles.verify_device_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    assert len(tls_context(bundle.tls_ca_pem).get_ca_certs()) == 1  # no system store
    # A bundle naming another CA: the real Manager is refused as an impostor.
    wrong = push_bundle(
        alpha, pkis["cl-alpha"], master_a, tls_ca_pem=pkis["cl-bravo"].ca_pem.decode()
    )
    device.import_bundle(wrong)
    with pytest.raises(CloudletUnreachable, match="not the cloudlet"):
        device.fetch_messages()


def test_api_override_changes_where_to_dial_not_what_to_trust(alpha, pkis, master_a, state):
    data = push_bundle(alpha, pkis["cl-alpha"], master_a, api_host="localhost", api_port=9)
    DeviceClient(state).import_bundle(data)
    with pytest.raises(CloudletUnreachable, match="localhost:9"):
        DeviceClient(state, timeout=5).fetch_messages()
    assert DeviceClient(state, f"127.0.0.1:{alpha.port}").fetch_messages() == []
    # The certificate is still checked against the bundle's host, wherever we dial.
    other = push_bundle(alpha, pkis["cl-alpha"], master_a, api_host="cl-alpha.example")
    DeviceClient(state).import_bundle(other)
    with pytest.raises(CloudletUnreachable, match="not the cloudlet"):
        DeviceClient(state, f"127.0.0.1:{alpha.port}").fetch_messages()


def test_revoked_device_gets_the_managers_error_and_hint(imported, alpha):
    admin(alpha, "PUT", "/admin/devices/tablet-07", {"valid_from": PERIOD, "revoked": True})
    with pytest.raises(CloudletRefused) as err:
        imported.fetch_messages()
    assert err.value.status == 403 and "revoked" in err.value.message
    assert "pair_device.yml" in err.value.hint


def test_passphrase_sealed_bundle_imports(alpha, pkis, master_a, device, state, rng):
    phrase = sealed.generate_passphrase(rng=rng)
    data = sealed.seal(push_bundle(alpha, pkis["cl-alpha"], master_a), phrase, FAST, rng)
    assert formats.peek_kind(data) == Kind.PASSPHRASE_SEALED
    # Typed differently (case, separators): the same passphrase.
    result = device.import_bundle(data, lambda: phrase.upper().replace("-", "  "))
    assert result.changed and files_under(state) == ["current.bundle"]


def test_sealing_is_deterministic_with_an_injected_rng(alpha, pkis, master_a):
    plain = push_bundle(alpha, pkis["cl-alpha"], master_a)
    phrase = "a long enough passphrase"
    one = sealed.seal(plain, phrase, FAST, DetRng(b"s"))
    assert one == sealed.seal(plain, phrase, FAST, DetRng(b"s"))
    assert one != sealed.seal(plain, phrase, FAST, DetRng(b"t"))
    assert sealed.open_sealed(one, "A LONG enough_passphrase") == plain


def test_sealed_file_matches_its_documented_layout():
    """Rebuilt from the layout in sealed.py with the primitives alone."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    rng = DetRng(b"layout")
    data = sealed.seal(b"secret bundle", "Correct Horse  Battery", FAST, rng)
    expect_rng = DetRng(b"layout")
    salt, nonce = expect_rng(16), expect_rng(12)
    params = bytes([14]) + (8).to_bytes(4, "big") + (1).to_bytes(4, "big")
    header = [b"scrypt", params, salt, b"text", b"chacha20-poly1305", nonce]
    aad = b"".join(
        len(f).to_bytes(4, "big") + f for f in [b"CLOUDLET-V01-PASSPHRASE-SEALED", *header]
    )
    key = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(b"correct-horse-battery")
    body = ChaCha20Poly1305(key).encrypt(nonce, b"secret bundle", aad)
    fields = b"".join(len(f).to_bytes(4, "big") + f for f in [*header, body])
    assert data == b"CLDT" + bytes([10, 1, 0, 7]) + fields


def test_weak_passphrases_are_refused_when_sealing():
    with pytest.raises(WeakPassphrase):
        sealed.seal(b"x", "short", FAST)
    weak_code = str(sealed.codes.generate_code(24))
    with pytest.raises(WeakPassphrase, match="bits"):
        sealed.seal(b"x", weak_code, FAST)


# --- bad input: refused, nothing written -----------------------------------------


def _bad_inputs(alpha, pkis, master_a, master_b, rng):
    good = push_bundle(alpha, pkis["cl-alpha"], master_a)
    body, u, v = formats.unpack(good, Kind.SIGNED_DEVICE_BUNDLE, [None, 48, 48])
    bundle = bundles.decode_device_bundle(body)
    other = bundles.DeviceBundle(
        bundle.device_key, bundle.params, bundle.tls_ca_pem, bundle.network, "10.9.9.9", 8443
    )
    signer = bundles.issuer_key(master_a, Period(PERIOD))
    ident = device_identity("cl-alpha", "tablet-07", PERIOD)
    sealed_file = sealed.seal(good, "correct horse battery", FAST, rng)
    return {
        "empty": (b"", FormatError, "truncated"),
        "garbage": (os.urandom(300), FormatError, "not a cloudlet object"),
        "truncated": (good[:-7], FormatError, "truncated"),
        "trailing bytes": (good + b"\0", FormatError, "trailing"),
        "another body under the signature": (
            formats.pack(Kind.SIGNED_DEVICE_BUNDLE, [bundles.encode_device_bundle(other), u, v]),
            CryptoError,
            "signature",
        ),
        "signed to another identity": (
            bundles.sign_device_bundle(bundle, signer, device_identity("cl-alpha", "x", PERIOD)),
            CryptoError,
            "signature",
        ),
        "unsigned": (body, BundleRefused, "not signed"),
        "migration ciphertext": (
            bundles.seal_device_bundle(master_a.params, ident, bundle, signer),
            BundleRefused,
            "message",
        ),
        "params only": (formats.encode_params(master_b.params), BundleRefused, "params"),
        "expired": (
            push_bundle(alpha, pkis["cl-alpha"], master_a, device="tablet-09", period="2020-01"),
            ExpiredIdentityError,
            "expired",
        ),
        "sealed, truncated": (sealed_file[:-3], FormatError, "truncated"),
        "sealed, wrong passphrase": (sealed_file, WrongPassphrase, "passphrase"),
        "sealed, altered salt": (_with_field(sealed_file, 2, bytes(16)), WrongPassphrase, "pass"),
        "sealed, absurd cost": (
            _with_field(sealed_file, 1, bytes([30, 0, 0, 0, 8, 0, 0, 0, 1])),
            FormatError,
            "out of range",
        ),
    }


def _with_field(data: bytes, index: int, value: bytes) -> bytes:
    """A sealed file with one header field replaced (and a valid envelope)."""
    fields = formats.unpack(
        data, Kind.PASSPHRASE_SEALED, [None, 9, 16, None, None, 12, None], formats.CURVE_NONE
    )
    fields[index] = value
    return formats.pack(Kind.PASSPHRASE_SEALED, fields, formats.CURVE_NONE)


def test_bad_bundles_are_refused_and_leave_nothing(alpha, pkis, master_a, master_b, state, rng):
    for name, (data, error, text) in _bad_inputs(alpha, pkis, master_a, master_b, rng).items():
        with pytest.raises(error, match=f"(?i){text}"):
            DeviceClient(state).import_bundle(data, lambda: "wrong passphrase here")
        assert files_under(state) == [], name


def test_bad_bundle_keeps_the_current_credential(
    imported, alpha, pkis, master_a, master_b, state, rng
):
    before = (state / "current.bundle").read_bytes()
    for data, error, _text in _bad_inputs(alpha, pkis, master_a, master_b, rng).values():
        with pytest.raises(error):
            imported.import_bundle(data, lambda: "wrong passphrase here")
    assert (state / "current.bundle").read_bytes() == before
    assert files_under(state) == ["current.bundle"]


def test_a_misheard_code_word_is_caught_before_the_kdf(alpha, pkis, master_a, device, rng):
    phrase = sealed.generate_passphrase(rng=rng)
    data = sealed.seal(push_bundle(alpha, pkis["cl-alpha"], master_a), phrase, FAST, rng)
    words = phrase.split("-")
    words[0] = next(w for w in sealed.codes.WORDS if w != words[0])
    with pytest.raises(WrongPassphrase, match="does not check out") as err:
        device.import_bundle(data, lambda: "-".join(words))
    assert "word by word" in err.value.hint
    with pytest.raises(BundleRefused, match="passphrase"):
        device.import_bundle(data)  # sealed, and nobody to ask


def test_import_from_the_wrong_cloudlet_is_refused(alpha, pkis, master_a, device, state):
    with pytest.raises(BundleRefused, match="cl-bravo"):
        device.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a), None, "cl-bravo")
    assert files_under(state) == []


def test_damaged_store_is_reported_and_repaired_by_import(imported, alpha, pkis, master_a, state):
    path = state / "current.bundle"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(NoCredentialError, match="damaged"):
        imported.status()
    imported.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    assert imported.status().current.identity.endswith(f"/tablet-07/{PERIOD}")


# --- messages: credentials from another cloudlet ------------------------------------


@pytest.fixture
def paired_ab(alpha, bravo, pkis, master_a, master_b):
    assert pair(bravo, pkis["cl-alpha"], master_a, alpha.port)[0] == 200
    assert pair(alpha, pkis["cl-bravo"], master_b, bravo.port)[0] == 200
    return alpha, bravo


def issue_on_bravo(bravo, pkis, device="tablet-07") -> bytes:
    """Migration step 4: A asks B for its device's new credentials (mutual TLS)."""
    req = {
        "devices": [
            {"device_id": device, "identity": str(device_identity("cl-alpha", device, PERIOD))}
        ]
    }
    ctx = client_ctx(pkis["cl-bravo"], pkis["cl-alpha"])
    status, body = call(bravo, ctx, "POST", "/peer/device-credentials", req)
    assert status == 200, body
    return base64.b64decode(body["credentials"][0]["bundle"])


def queue(run, body: bytes, issuer="cl-bravo", kind="credentials", device="tablet-07") -> str:
    """Migration step 5: A stores the ciphertext for its device."""
    msg = {
        "device_id": device,
        "kind": kind,
        "issuer": issuer,
        "body": base64.b64encode(body).decode(),
    }
    status, out = admin(run, "POST", "/admin/messages", msg)
    assert status == 201, out
    return out["message_id"]


def acked(run, message_id) -> bool:
    msgs = admin(run, "GET", "/admin/messages?device_id=tablet-07")[1]["messages"]
    return {m["message_id"]: m["acked_at"] is not None for m in msgs}[message_id]


def test_credentials_are_opened_stored_then_acknowledged(paired_ab, pkis, imported, state):
    alpha, bravo = paired_ab
    message_id = queue(alpha, issue_on_bravo(bravo, pkis))
    (outcome,) = imported.fetch_messages()
    assert outcome.ok and outcome.acked and acked(alpha, message_id)
    assert outcome.stored == state / "next" / "cl-bravo.bundle"
    assert stat.S_IMODE(outcome.stored.stat().st_mode) == 0o600
    (nxt,) = imported.status().next
    assert nxt.identity == f"cloudlet-id-v1/cl-bravo/tablet-07@cl-alpha/{PERIOD}"
    assert (nxt.cloudlet, nxt.ssid, nxt.eap_identity) == (
        "cl-bravo",
        "net-cl-bravo",
        "tablet-07@cl-alpha",
    )
    # The stored next credential works on B: B's CA, B's API, B's key.
    new = CredentialStore(state).next_bundles()[0][1]
    assert DeviceApi(new).messages() == []
    # The ack is idempotent, and the acked message is gone from the device's view.
    assert DeviceApi(imported.store.current()).ack(message_id) is False
    assert imported.fetch_messages() == []


def test_no_ack_stores_but_leaves_the_message(paired_ab, pkis, imported, state):
    alpha, bravo = paired_ab
    message_id = queue(alpha, issue_on_bravo(bravo, pkis))
    (outcome,) = imported.fetch_messages(ack=False)
    assert outcome.ok and outcome.stored and not outcome.acked and not acked(alpha, message_id)
    (again,) = imported.fetch_messages()  # the crash-between-store-and-ack case
    assert again.acked and acked(alpha, message_id)


def test_messages_that_cannot_be_opened_are_reported_not_acked(
    paired_ab, pkis, master_b, imported, state
):
    alpha, bravo = paired_ab
    good = issue_on_bravo(bravo, pkis)
    # Sealed to tablet-07 but carrying tablet-08's key: opens, yet is not ours.
    not_mine = bundles.issue_device_bundle(
        master_b,
        device_identity("cl-bravo", "tablet-08", PERIOD, home="cl-alpha"),
        alpha.state.master.params,
        device_identity("cl-alpha", "tablet-07", PERIOD),
        pkis["cl-bravo"].ca_pem.decode(),
        NetworkCredential("net-cl-bravo", "tablet-08@cl-alpha", "pw"),
        "127.0.0.1",
        bravo.port,
    )
    ids = {
        "garbage": queue(alpha, b"\x01" * 64),
        "issuer lies": queue(alpha, good, issuer="cl-alpha"),
        "unknown issuer": queue(alpha, good, issuer="cl-charlie"),
        "unknown kind": queue(alpha, good, kind="firmware"),
        "not mine": queue(alpha, not_mine),
    }
    outcomes = {o.message.message_id: o for o in imported.fetch_messages()}
    expected = {
        "garbage": FormatError,
        "issuer lies": CryptoError,
        "unknown issuer": BundleRefused,
        "unknown kind": BundleRefused,
        "not mine": BundleRefused,
    }
    for name, message_id in ids.items():
        outcome = outcomes[message_id]
        assert isinstance(outcome.error, expected[name]), (name, outcome.error)
        assert outcome.error.hint, name
        assert not outcome.acked and not acked(alpha, message_id), name
    assert files_under(state) == ["current.bundle"]


# --- service VMs --------------------------------------------------------------------


class _Counter(http.server.BaseHTTPRequestHandler):
    count = 0

    def do_GET(self):  # noqa: N802 - the standard library's name
        type(self).count += 1
        body = f'{{"service": "counter", "count": {self.count}}}\n'.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def counter_svm(alpha):
    handler = type("Counter", (_Counter,), {"count": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    svm = {
        "service_id": "counter",
        "fqdn": "localhost",
        "memory_mib": 128,
        "ports": [server.server_address[1]],
        "images": [],
    }
    assert admin(alpha, "PUT", "/admin/svms/counter", svm)[0] == 200
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_locate_and_call_the_counter(imported, counter_svm):
    loc = imported.locate("counter")
    assert (loc.fqdn, loc.ports) == ("localhost", (counter_svm,))
    _loc, first = imported.call("counter")
    _loc, second = imported.call("counter")
    assert (first.status, first.count, second.count) == (200, 1, 2)
    assert first.address in ("127.0.0.1", "::1")


def test_unknown_svm_is_the_managers_404(imported):
    with pytest.raises(CloudletRefused) as err:
        imported.locate("no-such-svm")
    assert err.value.status == 404 and "no-such-svm" in err.value.message
    assert "cloudlet admin" in err.value.hint


def test_messages_wait_polls_until_one_arrives(paired_ab, pkis, imported):
    alpha, bravo = paired_ab
    blob = issue_on_bravo(bravo, pkis)
    timer = threading.Timer(0.3, queue, (alpha, blob))
    timer.start()
    try:
        (outcome,) = imported.fetch_messages(wait=10, poll=0.1)
    finally:
        timer.join()
    assert outcome.ok and outcome.acked
    assert imported.fetch_messages(wait=0.2, poll=0.1) == []  # gives up when time is up


def test_console_ticks_while_a_step_waits():
    out = io.StringIO()
    console = Console(out, tick=0.05)
    with console.waiting("opening"):
        time.sleep(0.2)
    console.info("done")
    lines = out.getvalue().splitlines()
    assert lines[0] == "cloudlet-device: opening ..." and lines[-1] == "cloudlet-device: done"
    assert any("still waiting: opening" in line for line in lines[1:-1])


def test_svm_that_does_not_resolve_or_answer(imported, alpha, counter_svm, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(SvmUnreachable, match="did not answer"):
        imported.call("counter", port=port)

    real = socket.getaddrinfo

    def no_such_name(host, *args, **kw):  # the SVM's name only; the API is dialled by address
        if host == "localhost":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(SvmUnreachable, match="does not resolve") as err:
        imported.call("counter")
    assert "DNS" in err.value.hint


# --- the CLI ---------------------------------------------------------------------------


def test_cli_import_status_messages_call(
    alpha, pkis, master_a, state, tmp_path, capsys, counter_svm, rng
):
    plain = push_bundle(alpha, pkis["cl-alpha"], master_a)
    bundle = bundles.verify_device_bundle(plain)
    phrase = sealed.generate_passphrase(rng=rng)
    sealed_path = tmp_path / "tablet-07.sealed"
    sealed_path.write_bytes(sealed.seal(plain, phrase, FAST, rng))
    phrase_path = tmp_path / "phrase"
    phrase_path.write_text(phrase + "\n")
    base = ["--state-dir", str(state)]
    assert main([*base, "import", str(sealed_path), "--passphrase-file", str(phrase_path)]) == 0
    assert main([*base, "status"]) == 0
    assert main([*base, "messages"]) == 0
    assert main([*base, "call", "counter"]) == 0
    out = capsys.readouterr()
    assert "passphrase accepted" in out.out
    assert f"stored the credential for cloudlet-id-v1/cl-alpha/tablet-07/{PERIOD}" in out.out
    assert "0 message(s): 0 credential(s) stored" in out.out
    assert "count: 1" in out.out
    printed = out.out + out.err
    secrets = [
        bundle.network.password,
        phrase,
        formats.encode_device_key(bundle.device_key).hex(),
        base64.b64encode(formats.encode_device_key(bundle.device_key)).decode(),
        formats.encode_device_key(bundle.device_key)[-48:].hex(),  # d_sig
    ]
    for secret in secrets:
        assert secret not in printed


def test_cli_failure_exits_non_zero_with_the_hint(state, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.write_bytes(b"CLDT\x09\x01\x01\x03")
    assert main(["--state-dir", str(state), "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "error: The signed device credential bundle is truncated" in err
    assert "hint: The file or message is damaged" in err
    assert main(["--state-dir", str(state), "status"]) == 1
    assert "hint: Import the bundle" in capsys.readouterr().err
    assert files_under(state) == []


def test_cli_reports_an_unopenable_message_and_exits_1(paired_ab, pkis, imported, state, capsys):
    alpha, _bravo = paired_ab
    message_id = queue(alpha, b"\x01" * 64)
    assert main(["--state-dir", str(state), "fetch"]) == 1
    out = capsys.readouterr()
    assert (
        f"message {message_id} (credentials from cl-bravo) not handled (left on the cloudlet)"
        in out.err
    )
    assert "1 failed" in out.out and not acked(alpha, message_id)


def test_console_script_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["cloudlet-device"] == "cloudlet.device.cli:main"
