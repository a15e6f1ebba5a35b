"""The known-answer vectors of docs/wire-format.md, recomputed byte for byte.

Three things must agree: the package, the JSON files a device implementer
tests against (tests/vectors/), and the document. Each vector is recomputed
twice: with the package's public functions (same rng stream), and step by
step from the document's description with hashlib, HKDF and AES-GCM, so a
change to either the code or the text that the other does not follow fails
here. Every constant the vectors use must have its row in the document.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import struct
from dataclasses import fields as dc_fields
from datetime import datetime
from pathlib import Path

import pytest
from conftest import DetRng
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cloudlet import bundles, formats, transport
from cloudlet.crypto import auth, curve, ibe, identity
from cloudlet.crypto.identity import Identity, device_identity
from cloudlet.errors import FormatError, IdentityError
from cloudlet.manager import config, discovery, protocol

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
DOC = ROOT / "docs" / "wire-format.md"


def load(name: str) -> dict:
    return json.loads((VECTORS / name).read_text())


def b(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text)


C = load("constants.json")["constants"]


def tag(name: str) -> bytes:
    return C[name].encode("ascii")


def lp(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def h_s(dst: str, msg: bytes) -> tuple[bytes, int]:
    uniform = curve.expand_message_xmd(msg, tag(dst), C["HASH_TO_SCALAR_BYTES"])
    return uniform, (int.from_bytes(uniform, "big") % int(C["GROUP_ORDER"], 16)) or 1


def scalar(hex_text: str) -> curve.Scalar:
    return curve.scalar_from_int(int(hex_text, 16))


def envelope(data: bytes) -> tuple[int, int, list[bytes]]:
    """The document's section 4, read independently: (type, curve id, fields)."""
    assert len(data) <= C["MAX_OBJECT_BYTES"]
    assert data[:4] == tag("MAGIC") and data[5] == C["FORMAT_VERSION"]
    kind, curve_id, count = data[4], data[6], data[7]
    pos, out = 8, []
    for _ in range(count):
        (length,) = struct.unpack_from(">I", data, pos)
        out.append(data[pos + 4 : pos + 4 + length])
        pos += 4 + length
        assert pos <= len(data)
    assert pos == len(data), "trailing bytes"
    return kind, curve_id, out


def when(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- constants: package == vectors == document --------------------------------

_DEFAULTS = {f.name: f.default for f in dc_fields(config.Config)}

PACKAGE = {
    "IDENTITY_PREFIX": identity.IDENTITY_PREFIX,
    "HASH_TO_G1_SUITE": curve.HASH_TO_G1_SUITE,
    "DST_H1": ibe.DST_H1.decode(),
    "DST_FO_R": ibe._DST_R.decode(),
    "LABEL_PARAMS": ibe._LABEL_PARAMS.decode(),
    "LABEL_MASK": ibe._LABEL_MASK.decode(),
    "LABEL_DEM": ibe._LABEL_DEM.decode(),
    "LABEL_AAD": ibe._LABEL_AAD.decode(),
    "DST_CHA_CHEON_H": auth._DST_H.decode(),
    "DST_CHA_CHEON_K": auth._DST_K.decode(),
    "LABEL_DEVICE_AUTH": auth._LABEL_AUTH.decode(),
    "LABEL_HTTP_REQUEST": protocol._LABEL.decode(),
    "AAD_DEVICE_BUNDLE": bundles._AAD_DEVICE.decode(),
    "LABEL_DEVICE_BUNDLE_SIG": bundles._LABEL_DEVICE_SIG.decode(),
    "AAD_PAIRING_BUNDLE": bundles._AAD_PAIRING.decode(),
    "LABEL_TRANSPORT_KDF": transport.LABEL_TRANSPORT.decode(),
    "AAD_TRANSPORT": transport.AAD_TRANSPORT.decode(),
    "AUTH_SCHEME": protocol.SCHEME,
    "API_VERSION": protocol.API_VERSION,
    "DNSSD_SERVICE_TYPE": discovery.SERVICE_TYPE,
    "MAGIC": formats.MAGIC.decode(),
    "FORMAT_VERSION": formats.VERSION,
    "CURVE_BLS12_381": curve.CURVE_ID,
    "CURVE_NONE": formats.CURVE_NONE,
    "KIND_MASTER_KEY": formats.Kind.MASTER_KEY,
    "KIND_PARAMS": formats.Kind.PARAMS,
    "KIND_DEVICE_KEY": formats.Kind.DEVICE_KEY,
    "KIND_IBE_CIPHERTEXT": formats.Kind.IBE_CIPHERTEXT,
    "KIND_AUTH_PROOF": formats.Kind.AUTH_PROOF,
    "KIND_DEVICE_BUNDLE": formats.Kind.DEVICE_BUNDLE,
    "KIND_PAIRING_BUNDLE": formats.Kind.PAIRING_BUNDLE,
    "KIND_SEALED_PAIRING_BUNDLE": formats.Kind.SEALED_BUNDLE,
    "KIND_SIGNED_DEVICE_BUNDLE": formats.Kind.SIGNED_DEVICE_BUNDLE,
    "KIND_TRANSPORT_SEALED": formats.Kind.TRANSPORT_SEALED,
    "MAX_OBJECT_BYTES": formats.MAX_OBJECT_BYTES,
    "SCALAR_BYTES": curve.SCALAR_BYTES,
    "G1_BYTES": curve.G1_BYTES,
    "G2_BYTES": curve.G2_BYTES,
    "GT_BYTES": curve.GT_BYTES,
    "SIGMA_BYTES": ibe.SIGMA_BYTES,
    "AEAD_TAG_BYTES": ibe.TAG_BYTES,
    "AUTH_NONCE_BYTES": auth.NONCE_BYTES,
    "TIME_WINDOW_SECONDS": auth.DEFAULT_WINDOW.total_seconds(),
    "REPLAY_RETENTION_SECONDS": auth.DEFAULT_WINDOW.total_seconds() + 1,
    "PERIOD_SKEW_SECONDS": identity.DEFAULT_SKEW.total_seconds(),
    "MAX_AUTH_HEADER_CHARS": protocol._MAX_HEADER,
    "DEVICE_MAX_BODY_BYTES": _DEFAULTS["device_max_body_bytes"],
    "AUTH_FAILURES": _DEFAULTS["auth_failures"],
    "AUTH_FAILURE_WINDOW_SECONDS": _DEFAULTS["auth_failure_window"],
    "AUTH_COOLDOWN_SECONDS": _DEFAULTS["auth_cooldown"],
    "GROUP_ORDER": f"0x{curve.ORDER:064x}",
    "FIELD_MODULUS": f"0x{curve.FIELD_P:096x}",
}
# Sizes the code writes inline rather than as named constants; the vectors
# below check them against the lengths of the values they produce.
INLINE = {
    "PARAMS_DIGEST_BYTES",
    "HASH_TO_SCALAR_BYTES",
    "HKDF_OKM_BYTES",
    "DEM_KEY_BYTES",
    "DEM_NONCE_BYTES",
    "HEDGE_BYTES",
}


def doc_rows() -> dict[str, str]:
    """The constants table of the document: {name: value}, backticks removed."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[1].startswith("`"):
            rows[cells[0].strip("`")] = cells[1].strip("`")
    return rows


def test_every_constant_equals_the_package():
    assert set(C) == set(PACKAGE) | INLINE
    for name, value in PACKAGE.items():
        assert C[name] == value, name


def test_every_constant_has_its_row_in_the_document():
    rows = doc_rows()
    for name, value in C.items():
        assert name in rows, f"docs/wire-format.md has no row for {name}"
        assert rows[name] == str(value), f"{name}: document says {rows[name]}, code {value}"
        assert f"`{name}`" in DOC.read_text()


@pytest.mark.parametrize("name", sorted(p.name for p in VECTORS.glob("*.json")))
def test_every_constant_a_vector_uses_is_documented(name):
    used = load(name).get("constants", [])
    if isinstance(used, dict):  # constants.json itself
        used = list(used)
    assert used
    rows = doc_rows()
    for constant in used:
        assert constant in C and constant in rows, f"{name} uses undocumented {constant}"


def test_the_generator_reproduces_the_files():
    spec = importlib.util.spec_from_file_location("vector_generator", VECTORS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, content in module.build().items():
        assert (VECTORS / name).read_text() == module.render(content), name


# --- identities ----------------------------------------------------------------

IDS = load("identity_hash.json")


@pytest.mark.parametrize("case", IDS["cases"], ids=lambda c: c["identity"])
def test_identity_hash(case):
    ident = Identity.parse(case["identity"])
    assert (ident.cloudlet_id, ident.device_id, ident.home, ident.period.label) == (
        case["cloudlet_id"],
        case["device_id"],
        case["home"],
        case["period"],
    )
    assert ident.encode() == b(case["msg"]) == case["identity"].encode("ascii")
    assert curve.g1_to_bytes(ibe.identity_point(ident)) == b(case["q_id"])
    q = curve.hash_to_g1(b(case["msg"]), tag("DST_H1"))
    assert curve.g1_to_bytes(q) == b(case["q_id"])
    assert IDS["dst"] == tag("DST_H1").hex()


def test_a_visitor_identity_is_spelled_with_its_home():
    visitor = device_identity("cl-bravo", "tablet-07", "2026-11", home="cl-alpha")
    assert str(visitor) == IDS["cases"][1]["identity"]
    own = device_identity("cl-alpha", "tablet-07", "2026-11", home="cl-alpha")
    assert str(own) == IDS["cases"][0]["identity"]


@pytest.mark.parametrize("case", IDS["not_canonical"], ids=lambda c: c["description"])
def test_non_canonical_identities_are_refused(case):
    with pytest.raises(IdentityError):
        Identity.parse(case["identity"])
    with pytest.raises(FormatError):
        formats._identity(case["identity"].encode("ascii"))


# --- params and device keys -----------------------------------------------------

PARAMS = load("params.json")


def master(cloudlet: str) -> ibe.MasterKey:
    case = next(c for c in PARAMS["cases"] if c["cloudlet_id"] == cloudlet)
    return ibe.setup(cloudlet, DetRng(case["rng"]["seed"].encode()))


@pytest.mark.parametrize("case", PARAMS["cases"], ids=lambda c: c["cloudlet_id"])
def test_params_and_digest(case):
    m = master(case["cloudlet_id"])
    assert curve.scalar_to_bytes(m.s_enc) == b(case["s"])
    assert curve.scalar_to_bytes(m.s_sig) == b(case["t"])
    p_enc, p_sig = curve.g2_to_bytes(m.params.p_enc), curve.g2_to_bytes(m.params.p_sig)
    assert (p_enc, p_sig) == (b(case["p_enc"]), b(case["p_sig"]))
    # The document's recipe, from the points.
    assert curve.g2_to_bytes(curve.g2_generator() * scalar(case["s"])) == p_enc
    cid = case["cloudlet_id"].encode()
    digest_input = lp(tag("LABEL_PARAMS"), cid, p_enc, p_sig)
    assert digest_input == b(case["digest_input"])
    assert hashlib.sha256(digest_input).digest() == m.params.digest == b(case["digest"])
    assert len(m.params.digest) == C["PARAMS_DIGEST_BYTES"]
    encoded = formats.encode_params(m.params)
    assert encoded == b(case["encoded"])
    assert envelope(encoded) == (C["KIND_PARAMS"], C["CURVE_BLS12_381"], [cid, p_enc, p_sig])
    assert formats.decode_params(encoded) == m.params


DEVICE_KEYS = load("device_key.json")


@pytest.mark.parametrize("case", DEVICE_KEYS["cases"], ids=lambda c: c["identity"])
def test_device_key_extraction_and_encoding(case):
    m = master(case["issuer"])
    ident = Identity.parse(case["identity"])
    key = ibe.extract(m, ident)
    d_enc, d_sig = curve.g1_to_bytes(key.d_enc), curve.g1_to_bytes(key.d_sig)
    assert (d_enc, d_sig) == (b(case["d_enc"]), b(case["d_sig"]))
    q = curve.g1_from_bytes(b(case["q_id"]))
    s = scalar(next(c for c in PARAMS["cases"] if c["cloudlet_id"] == case["issuer"])["s"])
    assert curve.g1_to_bytes(q * s) == d_enc
    encoded = formats.encode_device_key(key)
    assert encoded == b(case["encoded"])
    fields = [ident.encode(), b(case["params_digest"]), d_enc, d_sig]
    assert envelope(encoded) == (C["KIND_DEVICE_KEY"], C["CURVE_BLS12_381"], fields)
    ibe.check_device_key(m.params, formats.decode_device_key(encoded))


# --- IBE -------------------------------------------------------------------------

IBE = load("ibe.json")


def check_ibe_steps(steps: dict, params: ibe.PublicParams, ident: Identity, sigma: bytes) -> None:
    """Section 7 of the document, one step at a time, against the recorded values."""
    s = {k: b(v) for k, v in steps.items()}
    pd, idb = params.digest, ident.encode()
    assert s["sigma"] == sigma and len(sigma) == C["SIGMA_BYTES"]
    assert s["r_input"] == lp(pd, idb, sigma)
    uniform, r = h_s("DST_FO_R", s["r_input"])
    assert (uniform, r) == (s["r_uniform"], int.from_bytes(s["r"], "big"))
    u = curve.g2_generator() * curve.scalar_from_int(r)
    assert curve.g2_to_bytes(u) == s["u"]
    z = curve.pairing(ibe.identity_point(ident) * curve.scalar_from_int(r), params.p_enc)
    assert curve.gt_to_bytes(z) == s["gt"] and len(s["gt"]) == C["GT_BYTES"]
    assert hashlib.sha256(lp(tag("LABEL_MASK"), pd, idb, s["u"], s["gt"])).digest() == s["mask"]
    assert bytes(x ^ y for x, y in zip(sigma, s["mask"], strict=True)) == s["v"]
    assert s["hkdf_info"] == lp(tag("LABEL_DEM"), idb, s["u"], s["v"])
    okm = HKDF(hashes.SHA256(), C["HKDF_OKM_BYTES"], pd, s["hkdf_info"]).derive(sigma)
    assert okm == s["okm"]
    assert s["dem_key"] == okm[: C["DEM_KEY_BYTES"]] and len(s["dem_key"]) == 32
    assert s["dem_nonce"] == okm[C["DEM_KEY_BYTES"] :] and len(s["dem_nonce"]) == 12
    assert C["DEM_KEY_BYTES"] + C["DEM_NONCE_BYTES"] == C["HKDF_OKM_BYTES"]


def test_ibe_encryption_to_a_device_identity():
    m = master(IBE["params_cloudlet"])
    ident = Identity.parse(IBE["identity"])
    seed = IBE["rng"]["seed"].encode()
    plaintext, aad = b(IBE["plaintext"]), b(IBE["aad"])
    ct = ibe.encrypt(m.params, ident, plaintext, aad, rng=DetRng(seed), now=when(IBE["now"]))
    encoded = formats.encode_ciphertext(ct)
    assert encoded == b(IBE["encoded"])
    check_ibe_steps(IBE["steps"], m.params, ident, DetRng(seed)(C["SIGMA_BYTES"]))
    s = {k: b(v) for k, v in IBE["steps"].items()}
    aead_aad = lp(tag("LABEL_AAD"), m.params.digest, ident.encode(), s["u"], s["v"], aad)
    assert aead_aad == b(IBE["aead_aad"])
    body = AESGCM(s["dem_key"]).encrypt(s["dem_nonce"], plaintext, aead_aad)
    assert body == b(IBE["body"]) and len(body) == len(plaintext) + C["AEAD_TAG_BYTES"]
    fields = [ident.encode(), m.params.digest, s["u"], s["v"], body]
    assert envelope(encoded) == (C["KIND_IBE_CIPHERTEXT"], C["CURVE_BLS12_381"], fields)


def test_ibe_decryption_of_the_vector():
    m = master(IBE["params_cloudlet"])
    key = ibe.extract(m, Identity.parse(IBE["identity"]))
    ct = formats.decode_ciphertext(b(IBE["encoded"]))
    assert ibe.decrypt(key, ct, b(IBE["aad"])) == b(IBE["plaintext"])
    # e(d_enc, U) is the sender's e(r*Q_ID, P_enc).
    assert curve.gt_to_bytes(curve.pairing(key.d_enc, ct.u)) == b(IBE["steps"]["gt"])


# GT serialization: the document's tower and byte order, checked with a
# small Fp12 written from the text (e(2*g1, g2) must be e(g1, g2) squared).
P = int(C["FIELD_MODULUS"], 16)


def _f2mul(a, b_):
    return ((a[0] * b_[0] - a[1] * b_[1]) % P, (a[0] * b_[1] + a[1] * b_[0]) % P)


def _f2add(a, b_):
    return ((a[0] + b_[0]) % P, (a[1] + b_[1]) % P)


def _xi(a):  # times (u + 1)
    return ((a[0] - a[1]) % P, (a[0] + a[1]) % P)


def _f6mul(a, b_):
    c = [(0, 0)] * 5
    for i in range(3):
        for j in range(3):
            c[i + j] = _f2add(c[i + j], _f2mul(a[i], b_[j]))
    return (_f2add(c[0], _xi(c[3])), _f2add(c[1], _xi(c[4])), c[2])


def _f6add(a, b_):
    return tuple(_f2add(x, y) for x, y in zip(a, b_, strict=True))


def _f12mul(a, b_):
    t0, t1 = _f6mul(a[0], b_[0]), _f6mul(a[1], b_[1])
    v_t1 = (_xi(t1[2]), t1[0], t1[1])  # times v
    return (_f6add(t0, v_t1), _f6add(_f6mul(a[0], b_[1]), _f6mul(a[1], b_[0])))


def _gt_parse(data: bytes):
    assert len(data) == C["GT_BYTES"]
    coeffs = [int.from_bytes(data[48 * i : 48 * i + 48], "little") for i in range(12)]
    assert all(x < P for x in coeffs)
    f2 = [(coeffs[2 * i], coeffs[2 * i + 1]) for i in range(6)]
    return ((f2[0], f2[1], f2[2]), (f2[3], f2[4], f2[5]))


def test_gt_serialization_is_the_documented_tower():
    g = b(IBE["gt_generator"])
    assert curve.gt_to_bytes(curve.pairing(curve.g1_generator(), curve.g2_generator())) == g
    z = _gt_parse(g)
    assert hex(z[0][0][0]) in DOC.read_text()  # the check value quoted in section 2
    two = curve.pairing(curve.g1_generator() * curve.scalar_from_int(2), curve.g2_generator())
    assert _gt_parse(curve.gt_to_bytes(two)) == _f12mul(z, z)


# --- device proofs ---------------------------------------------------------------

AUTH = load("auth.json")


def check_sign_steps(steps: dict, key: ibe.DeviceKey, message: bytes) -> None:
    """Section 8: the hedged k, U, h and V from the recorded hedge bytes."""
    s = {k: b(v) for k, v in steps.items()}
    assert s["signed_message"] == message and len(s["hedge"]) == C["HEDGE_BYTES"]
    assert s["k_input"] == lp(curve.g1_to_bytes(key.d_sig), message, s["hedge"])
    k_uniform, k = h_s("DST_CHA_CHEON_K", s["k_input"])
    assert (k_uniform, k) == (s["k_uniform"], int.from_bytes(s["k"], "big"))
    assert curve.g1_to_bytes(key.q * curve.scalar_from_int(k)) == s["u"]
    assert s["h_input"] == lp(key.params_digest, key.identity.encode(), s["u"], message)
    h_uniform, h = h_s("DST_CHA_CHEON_H", s["h_input"])
    assert (h_uniform, h) == (s["h_uniform"], int.from_bytes(s["h"], "big"))
    assert curve.g1_to_bytes(key.d_sig * curve.scalar_from_int(k + h)) == s["v"]


def verification_equation(params, ident, message, u, v) -> bool:
    """e(V, g2) == e(U + h*Q_ID, P_sig), written out with two pairings."""
    q = ibe.identity_point(ident)
    pd = params.digest
    _, h = h_s("DST_CHA_CHEON_H", lp(pd, ident.encode(), curve.g1_to_bytes(u), message))
    left = curve.pairing(v, curve.g2_generator())
    right = curve.pairing(u + q * curve.scalar_from_int(h), params.p_sig)
    return curve.gt_to_bytes(left) == curve.gt_to_bytes(right)


@pytest.mark.parametrize("case", AUTH["cases"], ids=lambda c: c["method"])
def test_request_binding(case):
    body = b(case["body"])
    assert hashlib.sha256(body).digest() == b(case["body_sha256"])
    binding = lp(
        tag("LABEL_HTTP_REQUEST"),
        case["method"].encode(),
        case["path"].encode(),
        b(case["body_sha256"]),
    )
    assert binding == b(case["request_binding"])
    assert protocol.request_binding(case["method"], case["path"], body) == binding
    # The method is bound in upper case whatever the caller passes.
    assert protocol.request_binding(case["method"].lower(), case["path"], body) == binding


@pytest.mark.parametrize("case", AUTH["cases"], ids=lambda c: c["method"])
def test_auth_proof_and_authorization_header(case, monkeypatch):
    m = master(AUTH["audience"])
    ident = Identity.parse(AUTH["identity"])
    key = ibe.extract(m, ident)
    now, seed = when(AUTH["now"]), case["rng"]["seed"].encode()
    assert int(now.timestamp()) == AUTH["timestamp"]
    binding = b(case["request_binding"])
    proof = auth.make_proof(key, AUTH["audience"], binding, now=now, rng=DetRng(seed))
    encoded = formats.encode_auth_proof(proof)
    assert encoded == b(case["encoded"])
    assert proof.nonce == b(case["nonce"]) == DetRng(seed)(C["AUTH_NONCE_BYTES"])
    message = lp(
        tag("LABEL_DEVICE_AUTH"),
        b(AUTH["params_digest"]),
        ident.encode(),
        AUTH["audience"].encode(),
        struct.pack(">Q", AUTH["timestamp"]),
        proof.nonce,
        binding,
    )
    assert proof.signed_message(binding) == message
    check_sign_steps(case["steps"], key, message)
    s = case["steps"]
    fields = [
        ident.encode(),
        b(AUTH["params_digest"]),
        AUTH["audience"].encode(),
        struct.pack(">Q", AUTH["timestamp"]),
        proof.nonce,
        b(s["u"]),
        b(s["v"]),
    ]
    assert envelope(encoded) == (C["KIND_AUTH_PROOF"], C["CURVE_BLS12_381"], fields)
    # The header, as protocol.authorization_header builds it with this rng.
    header = f"{C['AUTH_SCHEME']} " + base64.b64encode(encoded).decode("ascii")
    assert header == case["authorization"]
    monkeypatch.setattr(curve, "default_rng", DetRng(seed))
    made = protocol.authorization_header(
        key, AUTH["audience"], case["method"], case["path"], b(case["body"]), now=now
    )
    assert made == case["authorization"]
    assert len(made.partition(" ")[2]) <= C["MAX_AUTH_HEADER_CHARS"]
    # The cloudlet accepts it for this request, and the equation holds.
    parsed = protocol.parse_authorization(case["authorization"])
    assert auth.DeviceVerifier(m.params).verify(parsed, binding, now) == ident
    assert verification_equation(m.params, ident, message, parsed.u, parsed.v)


# --- device bundle -------------------------------------------------------------

BUNDLE = load("device_bundle.json")


def test_device_bundle_issue_and_seal():
    issuer, home = master(BUNDLE["issuer"]), master(BUNDLE["recipient_params_cloudlet"])
    new_id, recipient = Identity.parse(BUNDLE["new_identity"]), Identity.parse(BUNDLE["recipient"])
    network = bundles.NetworkCredential(
        BUNDLE["ssid"], BUNDLE["eap_identity"], BUNDLE["eap_password"], BUNDLE["eap_method"]
    )
    seed = BUNDLE["rng"]["seed"].encode()
    sealed = bundles.issue_device_bundle(
        issuer,
        new_id,
        home.params,
        recipient,
        BUNDLE["tls_ca_pem"],
        network,
        BUNDLE["api_host"],
        BUNDLE["api_port"],
        rng=DetRng(seed),
        now=when(BUNDLE["now"]),
    )
    assert sealed == b(BUNDLE["sealed"])
    # Type 6, field by field.
    new_key = ibe.extract(issuer, new_id)
    body = b(BUNDLE["device_bundle"])
    text = [BUNDLE[k].encode() for k in ("tls_ca_pem", "ssid", "eap_identity")]
    text += [BUNDLE[k].encode() for k in ("eap_password", "eap_method", "api_host")]
    expected = [
        formats.encode_device_key(new_key),
        formats.encode_params(issuer.params),
        *text,
        BUNDLE["api_port"].to_bytes(2, "big"),
    ]
    assert envelope(body) == (C["KIND_DEVICE_BUNDLE"], C["CURVE_BLS12_381"], expected)
    assert expected[0] == b(BUNDLE["new_device_key"])
    assert expected[1] == b(BUNDLE["issuer_params"])
    # The issuer signature over lp(label, recipient, type-6 bytes).
    signer_id = identity.cloudlet_identity(BUNDLE["issuer"], new_id.period)
    assert str(signer_id) == BUNDLE["signer_identity"]
    signer = ibe.extract(issuer, signer_id)
    message = lp(tag("LABEL_DEVICE_BUNDLE_SIG"), recipient.encode(), body)
    check_sign_steps(BUNDLE["signature"], signer, message)
    rng = DetRng(seed)
    assert b(BUNDLE["signature"]["hedge"]) == rng(C["HEDGE_BYTES"])
    sig_u, sig_v = b(BUNDLE["signature"]["u"]), b(BUNDLE["signature"]["v"])
    signed = b(BUNDLE["signed_device_bundle"])
    assert envelope(signed) == (
        C["KIND_SIGNED_DEVICE_BUNDLE"],
        C["CURVE_BLS12_381"],
        [body, sig_u, sig_v],
    )
    ident_s = signer_id
    assert verification_equation(
        issuer.params, ident_s, message, curve.g1_from_bytes(sig_u), curve.g1_from_bytes(sig_v)
    )
    # Sealed: IBE to the recipient under its cloudlet's params, aad AAD_DEVICE_BUNDLE.
    check_ibe_steps(BUNDLE["ibe_steps"], home.params, recipient, rng(C["SIGMA_BYTES"]))
    s = {k: b(v) for k, v in BUNDLE["ibe_steps"].items()}
    aead_aad = lp(
        tag("LABEL_AAD"),
        home.params.digest,
        recipient.encode(),
        s["u"],
        s["v"],
        tag("AAD_DEVICE_BUNDLE"),
    )
    assert aead_aad == b(BUNDLE["aead_aad"])
    ct_body = AESGCM(s["dem_key"]).encrypt(s["dem_nonce"], signed, aead_aad)
    fields = [recipient.encode(), home.params.digest, s["u"], s["v"], ct_body]
    assert envelope(sealed) == (C["KIND_IBE_CIPHERTEXT"], C["CURVE_BLS12_381"], fields)


def test_device_bundle_open():
    issuer, home = master(BUNDLE["issuer"]), master(BUNDLE["recipient_params_cloudlet"])
    device_key = ibe.extract(home, Identity.parse(BUNDLE["recipient"]))
    issuer_params = formats.decode_params(b(BUNDLE["issuer_params"]))
    opened = bundles.open_device_bundle(device_key, b(BUNDLE["sealed"]), issuer_params)
    assert bundles.encode_device_bundle(opened) == b(BUNDLE["device_bundle"])
    assert str(opened.device_key.identity) == BUNDLE["new_identity"]
    assert opened.params == issuer.params
    assert (opened.network.ssid, opened.network.identity) == (
        BUNDLE["ssid"],
        BUNDLE["eap_identity"],
    )
    assert (opened.api_host, opened.api_port) == (BUNDLE["api_host"], BUNDLE["api_port"])
    # The same bytes, opened with the document's steps: decrypt, then type 9.
    ct = formats.decode_ciphertext(b(BUNDLE["sealed"]))
    plain = ibe.decrypt(device_key, ct, tag("AAD_DEVICE_BUNDLE"))
    assert plain == b(BUNDLE["signed_device_bundle"])


TRANSPORT = load("transport.json")


def test_transport_envelope_seal_and_open():
    """Section 15: recomputed from the document's steps and by the package, both ways."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    t = TRANSPORT
    request = X25519PrivateKey.from_private_bytes(b(t["device_private"])).public_key()
    eph = X25519PrivateKey.from_private_bytes(b(t["ephemeral_private"]))
    assert transport._raw(request) == b(t["request_public"])
    shared = eph.exchange(request)
    assert shared == b(t["shared"])
    fields = [b(t["request_public"]), b(t["ephemeral_public"]), t["device_id"].encode(),
              t["cloudlet_id"].encode()]
    info = lp(t["label_kdf"].encode(), *fields)
    okm = HKDF(hashes.SHA256(), 44, salt=None, info=info).derive(shared)
    assert (info, okm) == (b(t["hkdf_info"]), b(t["okm"]))
    aad = lp(t["aad_label"].encode(), b"chacha20-poly1305", *fields)
    body = ChaCha20Poly1305(okm[:32]).encrypt(okm[32:], b(t["plaintext"]), aad)
    kind, curve_id, parts = envelope(b(t["sealed"]))
    assert (kind, curve_id) == (t["kind"], C["CURVE_NONE"])
    assert parts == [b"chacha20-poly1305", *fields, body]
    sealed = transport.seal_transport(b(t["plaintext"]), b(t["request_public"]), t["device_id"],
                                      t["cloudlet_id"], DetRng(t["seeds"]["cloudlet"].encode()))
    assert sealed == b(t["sealed"])
    head, plain = transport.open_transport(sealed, transport.TransportKey(b(t["device_private"])))
    assert plain == b(t["plaintext"]) and head.device_id == t["device_id"]
