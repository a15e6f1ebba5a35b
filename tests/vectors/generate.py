"""Known-answer vectors for docs/wire-format.md, from fixed seeds.

Run from the repository root::

    .venv/bin/python tests/vectors/generate.py          # (re)write tests/vectors/*.json
    .venv/bin/python tests/vectors/generate.py --check  # exit 1 if a file would change

Every random byte comes from ``DetRng`` (SHA-256 in counter mode over a
seed named in each file), handed to the package functions as their ``rng``.
Besides each function's output, the files carry the intermediate values of
docs/wire-format.md (hash inputs, scalars, masks, HKDF output), derived here
step by step from the document's description and checked against the
package's own result before anything is written. So a device implementer
can compare every step, and ``tests/unit/test_vectors.py`` keeps the files,
the package and the document in agreement.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

from cloudlet import bundles, formats  # noqa: E402
from cloudlet.crypto import auth, curve, ibe  # noqa: E402
from cloudlet.crypto.identity import Identity, cloudlet_identity  # noqa: E402
from cloudlet.manager import protocol  # noqa: E402

__all__ = ["CONSTANTS", "DetRng", "build", "main"]

HERE = Path(__file__).resolve().parent

# Every constant, tag and size a vector depends on. docs/wire-format.md has a
# table row "| `NAME` | `VALUE` | ..." for each; tests/unit/test_vectors.py
# checks the rows and compares each value with the package's own constant.
CONSTANTS: dict[str, str | int] = {
    "IDENTITY_PREFIX": "cloudlet-id-v1",
    "HASH_TO_G1_SUITE": curve.HASH_TO_G1_SUITE,
    "DST_H1": ibe.DST_H1.decode(),
    "DST_FO_R": "CLOUDLET-V01-IBE-FO-R",
    "LABEL_PARAMS": "CLOUDLET-V01-IBE-PARAMS",
    "LABEL_MASK": "CLOUDLET-V01-IBE-MASK",
    "LABEL_DEM": "CLOUDLET-V01-IBE-DEM",
    "LABEL_AAD": "CLOUDLET-V01-IBE-AAD",
    "DST_CHA_CHEON_H": "CLOUDLET-V01-IBS-CHA-CHEON-H",
    "DST_CHA_CHEON_K": "CLOUDLET-V01-IBS-CHA-CHEON-K",
    "LABEL_DEVICE_AUTH": "CLOUDLET-V01-DEVICE-AUTH",
    "LABEL_HTTP_REQUEST": "CLOUDLET-V01-HTTP-REQUEST",
    "AAD_DEVICE_BUNDLE": "CLOUDLET-V01-DEVICE-BUNDLE",
    "LABEL_DEVICE_BUNDLE_SIG": "CLOUDLET-V01-DEVICE-BUNDLE-SIG",
    "AAD_PAIRING_BUNDLE": "CLOUDLET-V01-PAIRING-BUNDLE",
    "LABEL_TRANSPORT_KDF": "CLOUDLET-V01-TRANSPORT-KDF",
    "AAD_TRANSPORT": "CLOUDLET-V01-TRANSPORT-AAD",
    "AUTH_SCHEME": protocol.SCHEME,
    "API_VERSION": protocol.API_VERSION,
    "MAGIC": formats.MAGIC.decode(),
    "FORMAT_VERSION": formats.VERSION,
    "CURVE_BLS12_381": curve.CURVE_ID,
    "CURVE_NONE": formats.CURVE_NONE,
    "KIND_MASTER_KEY": int(formats.Kind.MASTER_KEY),
    "KIND_PARAMS": int(formats.Kind.PARAMS),
    "KIND_DEVICE_KEY": int(formats.Kind.DEVICE_KEY),
    "KIND_IBE_CIPHERTEXT": int(formats.Kind.IBE_CIPHERTEXT),
    "KIND_AUTH_PROOF": int(formats.Kind.AUTH_PROOF),
    "KIND_DEVICE_BUNDLE": int(formats.Kind.DEVICE_BUNDLE),
    "KIND_PAIRING_BUNDLE": int(formats.Kind.PAIRING_BUNDLE),
    "KIND_SEALED_PAIRING_BUNDLE": int(formats.Kind.SEALED_BUNDLE),
    "KIND_SIGNED_DEVICE_BUNDLE": int(formats.Kind.SIGNED_DEVICE_BUNDLE),
    "KIND_TRANSPORT_SEALED": int(formats.Kind.TRANSPORT_SEALED),
    "MAX_OBJECT_BYTES": formats.MAX_OBJECT_BYTES,
    "SCALAR_BYTES": curve.SCALAR_BYTES,
    "G1_BYTES": curve.G1_BYTES,
    "G2_BYTES": curve.G2_BYTES,
    "GT_BYTES": curve.GT_BYTES,
    "PARAMS_DIGEST_BYTES": 32,
    "HASH_TO_SCALAR_BYTES": 48,
    "SIGMA_BYTES": ibe.SIGMA_BYTES,
    "HKDF_OKM_BYTES": 44,
    "DEM_KEY_BYTES": 32,
    "DEM_NONCE_BYTES": 12,
    "AEAD_TAG_BYTES": ibe.TAG_BYTES,
    "AUTH_NONCE_BYTES": auth.NONCE_BYTES,
    "HEDGE_BYTES": 32,
    "TIME_WINDOW_SECONDS": int(auth.DEFAULT_WINDOW.total_seconds()),
    "PERIOD_SKEW_SECONDS": 300,
    "MAX_AUTH_HEADER_CHARS": 4096,
    "REPLAY_RETENTION_SECONDS": int(auth.DEFAULT_WINDOW.total_seconds()) + 1,
    "DEVICE_MAX_BODY_BYTES": 4096,
    "AUTH_FAILURES": 10,
    "AUTH_FAILURE_WINDOW_SECONDS": 60,
    "AUTH_COOLDOWN_SECONDS": 60,
    "DNSSD_SERVICE_TYPE": "_cloudlet._tcp.local.",
    "GROUP_ORDER": f"0x{curve.ORDER:064x}",
    "FIELD_MODULUS": f"0x{curve.FIELD_P:096x}",
}

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBwire-format-test-vector-not-a-real-certificate\n"
    "-----END CERTIFICATE-----\n"
)
SEED_ALPHA = b"wire-format/pkg/cl-alpha"
SEED_BRAVO = b"wire-format/pkg/cl-bravo"


class DetRng:
    """SHA-256(seed || counter as 8 bytes big-endian), counter 0, 1, ...; concatenated.

    The same stream as tests/unit/conftest.py's DetRng. Each call takes the
    next ``n`` bytes of a fresh block sequence: a request for fewer bytes
    than a block discards the rest of that block.
    """

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


# --- the document's building blocks, written out independently --------------


def lp(*parts: bytes) -> bytes:
    """lp(): each part as a 4-byte big-endian length, then the part."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def hash_to_scalar(dst: bytes, msg: bytes) -> tuple[bytes, int]:
    """H_s: expand_message_xmd(SHA-256, L = 48) read big-endian, mod r; 0 becomes 1."""
    uniform = curve.expand_message_xmd(msg, dst, 48)
    return uniform, (int.from_bytes(uniform, "big") % curve.ORDER) or 1


def c(name: str) -> bytes:
    value = CONSTANTS[name]
    assert isinstance(value, str)
    return value.encode("ascii")


def sbytes(value: int) -> bytes:
    return value.to_bytes(32, "big")


def hx(data: bytes) -> str:
    return data.hex()


def envelope(kind: int, fields: list[bytes], curve_id: int = 1) -> bytes:
    head = c("MAGIC") + bytes([kind, CONSTANTS["FORMAT_VERSION"], curve_id, len(fields)])
    return head + lp(*fields)


def _rng_note(seed: bytes) -> dict:
    return {
        "algorithm": "DetRng: SHA-256(seed || u64be counter), counter from 0",
        "seed": seed.decode("ascii"),
    }


def _same(ours: bytes, package: bytes, what: str) -> None:
    if ours != package:
        raise AssertionError(f"{what}: the document's derivation differs from the package")


# --- the vectors --------------------------------------------------------------

IDENTITIES = [
    ("own device, month period", "cloudlet-id-v1/cl-alpha/tablet-07/2026-11"),
    (
        "visiting device (home cl-alpha) on cl-bravo",
        "cloudlet-id-v1/cl-bravo/tablet-07@cl-alpha/2026-11",
    ),
    ("cloudlet identity (issuer signing key)", "cloudlet-id-v1/cl-bravo/-/2026-11"),
    ("own device, day period", "cloudlet-id-v1/cl-alpha/phone-3/2026-11-26"),
]

NOT_CANONICAL = [
    ("home equal to the issuing cloudlet", "cloudlet-id-v1/cl-alpha/tablet-07@cl-alpha/2026-11"),
    ("upper case", "cloudlet-id-v1/cl-alpha/Tablet-07/2026-11"),
    ("empty home", "cloudlet-id-v1/cl-alpha/tablet-07@/2026-11"),
    ("one-digit month", "cloudlet-id-v1/cl-alpha/tablet-07/2026-1"),
    ("day that does not exist", "cloudlet-id-v1/cl-alpha/tablet-07/2026-02-30"),
    ("year before 2000", "cloudlet-id-v1/cl-alpha/tablet-07/1999-12"),
    ("trailing separator", "cloudlet-id-v1/cl-alpha/tablet-07/2026-11/"),
    ("wrong prefix", "cloudlet-id-v2/cl-alpha/tablet-07/2026-11"),
    ("home on a cloudlet identity", "cloudlet-id-v1/cl-alpha/-@cl-bravo/2026-11"),
    ("hyphen at the end of a label", "cloudlet-id-v1/cl-alpha/tablet-/2026-11"),
]


def identity_vectors() -> dict:
    cases = []
    for what, text in IDENTITIES:
        ident = Identity.parse(text)
        q = ibe.identity_point(ident)
        cases.append(
            {
                "description": what,
                "identity": text,
                "cloudlet_id": ident.cloudlet_id,
                "device_id": ident.device_id,
                "home": ident.home,
                "period": ident.period.label,
                "msg": hx(ident.encode()),
                "q_id": hx(curve.g1_to_bytes(q)),
            }
        )
    return {
        "description": "Q_ID = hash_to_curve(identity ASCII bytes) with suite "
        "HASH_TO_G1_SUITE and DST DST_H1 (RFC 9380); points in compressed form.",
        "constants": ["IDENTITY_PREFIX", "HASH_TO_G1_SUITE", "DST_H1", "G1_BYTES"],
        "dst": hx(ibe.DST_H1),
        "cases": cases,
        "not_canonical": [{"description": w, "identity": t} for w, t in NOT_CANONICAL],
    }


def _params_case(seed: bytes, cloudlet: str) -> tuple[dict, ibe.MasterKey]:
    master = ibe.setup(cloudlet, DetRng(seed))
    # setup draws two 64-byte blocks, each read big-endian and reduced mod r.
    rng = DetRng(seed)
    s = int.from_bytes(rng(64), "big") % curve.ORDER
    t = int.from_bytes(rng(64), "big") % curve.ORDER
    _same(sbytes(s), curve.scalar_to_bytes(master.s_enc), "master secret s")
    _same(sbytes(t), curve.scalar_to_bytes(master.s_sig), "master secret t")
    params = master.params
    p_enc, p_sig = curve.g2_to_bytes(params.p_enc), curve.g2_to_bytes(params.p_sig)
    digest_input = lp(c("LABEL_PARAMS"), cloudlet.encode(), p_enc, p_sig)
    digest = hashlib.sha256(digest_input).digest()
    _same(digest, params.digest, "params digest")
    encoded = formats.encode_params(params)
    _same(envelope(CONSTANTS["KIND_PARAMS"], [cloudlet.encode(), p_enc, p_sig]), encoded, "params")
    case = {
        "cloudlet_id": cloudlet,
        "rng": _rng_note(seed),
        "s": hx(sbytes(s)),
        "t": hx(sbytes(t)),
        "p_enc": hx(p_enc),
        "p_sig": hx(p_sig),
        "digest_input": hx(digest_input),
        "digest": hx(digest),
        "encoded": hx(encoded),
    }
    return case, master


def params_vectors(cases: list[dict]) -> dict:
    return {
        "description": "Public params P_enc = s*g2, P_sig = t*g2; their digest "
        "SHA-256(lp(LABEL_PARAMS, cloudlet id, P_enc, P_sig)); their type-2 envelope.",
        "constants": [
            "LABEL_PARAMS",
            "MAGIC",
            "FORMAT_VERSION",
            "CURVE_BLS12_381",
            "KIND_PARAMS",
            "G2_BYTES",
            "SCALAR_BYTES",
            "PARAMS_DIGEST_BYTES",
            "GROUP_ORDER",
        ],
        "cases": cases,
    }


def device_key_vectors(masters: dict[str, ibe.MasterKey]) -> dict:
    cases = []
    for cloudlet, text in (
        ("cl-alpha", IDENTITIES[0][1]),
        ("cl-bravo", IDENTITIES[1][1]),
        ("cl-bravo", IDENTITIES[2][1]),
    ):
        master = masters[cloudlet]
        ident = Identity.parse(text)
        key = ibe.extract(master, ident)
        q = ibe.identity_point(ident)
        d_enc, d_sig = curve.g1_to_bytes(key.d_enc), curve.g1_to_bytes(key.d_sig)
        encoded = formats.encode_device_key(key)
        pd = master.params.digest
        fields = [ident.encode(), pd, d_enc, d_sig]
        _same(envelope(CONSTANTS["KIND_DEVICE_KEY"], fields), encoded, "device key")
        cases.append(
            {
                "issuer": cloudlet,
                "identity": text,
                "q_id": hx(curve.g1_to_bytes(q)),
                "params_digest": hx(pd),
                "d_enc": hx(d_enc),
                "d_sig": hx(d_sig),
                "encoded": hx(encoded),
            }
        )
    return {
        "description": "d_enc = s*Q_ID, d_sig = t*Q_ID under the params of params.json, "
        "and the type-3 envelope (identity, params digest, d_enc, d_sig).",
        "constants": ["KIND_DEVICE_KEY", "G1_BYTES", "PARAMS_DIGEST_BYTES"],
        "cases": cases,
    }


def _ibe_steps(params: ibe.PublicParams, ident: Identity, sigma: bytes) -> dict:
    """The encryption steps of the document, from sigma on (no message yet)."""
    pd, idb = params.digest, ident.encode()
    r_input = lp(pd, idb, sigma)
    r_uniform, r = hash_to_scalar(c("DST_FO_R"), r_input)
    u = curve.g2_mul_generator(curve.scalar_from_int(r))
    ub = curve.g2_to_bytes(u)
    z = curve.gt_to_bytes(
        curve.pairing(ibe.identity_point(ident) * curve.scalar_from_int(r), params.p_enc)
    )
    mask = hashlib.sha256(lp(c("LABEL_MASK"), pd, idb, ub, z)).digest()
    v = bytes(a ^ b for a, b in zip(sigma, mask, strict=True))
    info = lp(c("LABEL_DEM"), idb, ub, v)
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=pd, info=info).derive(sigma)
    return {
        "sigma": sigma,
        "r_input": r_input,
        "r_uniform": r_uniform,
        "r": sbytes(r),
        "u": ub,
        "gt": z,
        "mask": mask,
        "v": v,
        "hkdf_info": info,
        "okm": okm,
        "dem_key": okm[:32],
        "dem_nonce": okm[32:],
    }


def ibe_vectors(masters: dict[str, ibe.MasterKey]) -> dict:
    master = masters["cl-alpha"]
    params = master.params
    ident = Identity.parse(IDENTITIES[0][1])
    plaintext = b"wire-format known-answer message"
    aad = b"caller context"
    seed = b"wire-format/ibe"
    ct = ibe.encrypt(params, ident, plaintext, aad, rng=DetRng(seed), now=NOW)
    encoded = formats.encode_ciphertext(ct)
    steps = _ibe_steps(params, ident, DetRng(seed)(32))
    aead_aad = lp(c("LABEL_AAD"), params.digest, ident.encode(), steps["u"], steps["v"], aad)
    body = AESGCM(steps["dem_key"]).encrypt(steps["dem_nonce"], plaintext, aead_aad)
    fields = [ident.encode(), params.digest, steps["u"], steps["v"], body]
    _same(envelope(CONSTANTS["KIND_IBE_CIPHERTEXT"], fields), encoded, "IBE ciphertext")
    key = ibe.extract(master, ident)
    _same(ibe.decrypt(key, formats.decode_ciphertext(encoded), aad), plaintext, "decryption")
    _same(curve.gt_to_bytes(curve.pairing(key.d_enc, ct.u)), steps["gt"], "e(d_enc, U)")
    generator = curve.gt_to_bytes(curve.pairing(curve.g1_generator(), curve.g2_generator()))
    return {
        "description": "IBE (Boneh-Franklin + FO, AES-256-GCM) of a fixed message to a "
        "device identity under cl-alpha's params (params.json), with every step; "
        "decryption with the device key of device_key.json gives the plaintext back.",
        "constants": [
            "DST_FO_R",
            "LABEL_MASK",
            "LABEL_DEM",
            "LABEL_AAD",
            "SIGMA_BYTES",
            "HASH_TO_SCALAR_BYTES",
            "HKDF_OKM_BYTES",
            "DEM_KEY_BYTES",
            "DEM_NONCE_BYTES",
            "AEAD_TAG_BYTES",
            "GT_BYTES",
            "G2_BYTES",
            "KIND_IBE_CIPHERTEXT",
            "FIELD_MODULUS",
        ],
        "rng": _rng_note(seed),
        "now": NOW.isoformat(),
        "params_cloudlet": "cl-alpha",
        "params_digest": hx(params.digest),
        "identity": str(ident),
        "plaintext": hx(plaintext),
        "aad": hx(aad),
        "steps": {k: hx(v) for k, v in steps.items()},
        "aead_aad": hx(aead_aad),
        "body": hx(body),
        "encoded": hx(encoded),
        "gt_generator": hx(generator),
    }


REQUESTS = [
    {
        "description": "acknowledge a message (POST with a JSON body)",
        "seed": b"wire-format/auth/ack",
        "method": "POST",
        "path": "/device/messages/0123456789abcdef0123456789abcdef/ack",
        "body": b"{}",
    },
    {
        "description": "list messages (GET, empty body); the route takes no query "
        "parameters and ignores this one: it only shows the query signed as sent",
        "seed": b"wire-format/auth/list",
        "method": "GET",
        "path": "/device/messages?since=0&x=%2Fa",
        "body": b"",
    },
]


def _sign_steps(key: ibe.DeviceKey, message: bytes, fresh: bytes) -> dict:
    k_input = lp(curve.g1_to_bytes(key.d_sig), message, fresh)
    k_uniform, k = hash_to_scalar(c("DST_CHA_CHEON_K"), k_input)
    u = curve.g1_to_bytes(key.q * curve.scalar_from_int(k))
    h_input = lp(key.params_digest, key.identity.encode(), u, message)
    h_uniform, h = hash_to_scalar(c("DST_CHA_CHEON_H"), h_input)
    v = curve.g1_to_bytes(key.d_sig * curve.scalar_from_int((k + h) % curve.ORDER))
    return {
        "signed_message": message,
        "hedge": fresh,
        "k_input": k_input,
        "k_uniform": k_uniform,
        "k": sbytes(k),
        "u": u,
        "h_input": h_input,
        "h_uniform": h_uniform,
        "h": sbytes(h),
        "v": v,
    }


def auth_vectors(masters: dict[str, ibe.MasterKey]) -> dict:
    master = masters["cl-alpha"]
    ident = Identity.parse(IDENTITIES[0][1])
    key = ibe.extract(master, ident)
    ts = int(NOW.timestamp())
    cases = []
    for req in REQUESTS:
        seed = req["seed"]
        body_digest = hashlib.sha256(req["body"]).digest()
        binding = lp(
            c("LABEL_HTTP_REQUEST"), req["method"].encode(), req["path"].encode(), body_digest
        )
        _same(binding, protocol.request_binding(req["method"], req["path"], req["body"]), "binding")
        proof = auth.make_proof(key, "cl-alpha", binding, now=NOW, rng=DetRng(seed))
        rng = DetRng(seed)
        nonce, fresh = rng(16), rng(32)
        message = lp(
            c("LABEL_DEVICE_AUTH"),
            key.params_digest,
            ident.encode(),
            b"cl-alpha",
            struct.pack(">Q", ts),
            nonce,
            binding,
        )
        _same(message, proof.signed_message(binding), "signed message")
        steps = _sign_steps(key, message, fresh)
        _same(
            steps["u"] + steps["v"],
            curve.g1_to_bytes(proof.u) + curve.g1_to_bytes(proof.v),
            "Cha-Cheon signature",
        )
        encoded = formats.encode_auth_proof(proof)
        fields = [
            ident.encode(),
            key.params_digest,
            b"cl-alpha",
            struct.pack(">Q", ts),
            nonce,
            steps["u"],
            steps["v"],
        ]
        _same(envelope(CONSTANTS["KIND_AUTH_PROOF"], fields), encoded, "auth proof")
        header = CONSTANTS["AUTH_SCHEME"] + " " + base64.b64encode(encoded).decode("ascii")
        verified = auth.DeviceVerifier(master.params).verify(proof, binding, NOW)
        assert verified == ident
        cases.append(
            {
                "description": req["description"],
                "rng": _rng_note(seed),
                "method": req["method"],
                "path": req["path"],
                "body": hx(req["body"]),
                "body_sha256": hx(body_digest),
                "request_binding": hx(binding),
                "nonce": hx(nonce),
                "steps": {k: hx(v) for k, v in steps.items()},
                "encoded": hx(encoded),
                "authorization": header,
            }
        )
    return {
        "description": "Device proofs for fixed requests to cl-alpha by the device key of "
        "device_key.json (own device), at a fixed time; the exact Authorization header.",
        "constants": [
            "LABEL_HTTP_REQUEST",
            "LABEL_DEVICE_AUTH",
            "DST_CHA_CHEON_H",
            "DST_CHA_CHEON_K",
            "AUTH_SCHEME",
            "AUTH_NONCE_BYTES",
            "HEDGE_BYTES",
            "KIND_AUTH_PROOF",
            "TIME_WINDOW_SECONDS",
            "MAX_AUTH_HEADER_CHARS",
        ],
        "audience": "cl-alpha",
        "identity": str(ident),
        "params_digest": hx(master.params.digest),
        "now": NOW.isoformat(),
        "timestamp": ts,
        "cases": cases,
    }


BUNDLE = {
    "new_identity": IDENTITIES[1][1],
    "recipient": IDENTITIES[0][1],
    "tls_ca_pem": PEM,
    "ssid": "cloudlet-bravo",
    "eap_identity": "tablet-07@cl-alpha",
    "eap_password": "correct-horse-battery-staple",
    "eap_method": "pwd",
    "api_host": "manager.bravo.cloudlet",
    "api_port": 8443,
}


def bundle_vectors(masters: dict[str, ibe.MasterKey]) -> dict:
    issuer, home = masters["cl-bravo"], masters["cl-alpha"]
    new_id, recipient = Identity.parse(BUNDLE["new_identity"]), Identity.parse(BUNDLE["recipient"])
    network = bundles.NetworkCredential(
        BUNDLE["ssid"], BUNDLE["eap_identity"], BUNDLE["eap_password"], BUNDLE["eap_method"]
    )
    seed = b"wire-format/bundle"
    sealed = bundles.issue_device_bundle(
        issuer,
        new_id,
        home.params,
        recipient,
        PEM,
        network,
        BUNDLE["api_host"],
        BUNDLE["api_port"],
        rng=DetRng(seed),
        now=NOW,
    )
    new_key = ibe.extract(issuer, new_id)
    fields = [formats.encode_device_key(new_key), formats.encode_params(issuer.params)]
    fields += [BUNDLE[k].encode() for k in ("tls_ca_pem", "ssid", "eap_identity")]
    fields += [BUNDLE[k].encode() for k in ("eap_password", "eap_method", "api_host")]
    fields.append(BUNDLE["api_port"].to_bytes(2, "big"))
    body = envelope(CONSTANTS["KIND_DEVICE_BUNDLE"], fields)
    signer_id = cloudlet_identity("cl-bravo", new_id.period)
    signer = ibe.extract(issuer, signer_id)
    rng = DetRng(seed)
    fresh, sigma = rng(32), rng(32)
    sig_message = lp(c("LABEL_DEVICE_BUNDLE_SIG"), recipient.encode(), body)
    sig = _sign_steps(signer, sig_message, fresh)
    signed = envelope(CONSTANTS["KIND_SIGNED_DEVICE_BUNDLE"], [body, sig["u"], sig["v"]])
    steps = _ibe_steps(home.params, recipient, sigma)
    aead_aad = lp(
        c("LABEL_AAD"),
        home.params.digest,
        recipient.encode(),
        steps["u"],
        steps["v"],
        c("AAD_DEVICE_BUNDLE"),
    )
    ct_body = AESGCM(steps["dem_key"]).encrypt(steps["dem_nonce"], signed, aead_aad)
    ct_fields = [recipient.encode(), home.params.digest, steps["u"], steps["v"], ct_body]
    _same(envelope(CONSTANTS["KIND_IBE_CIPHERTEXT"], ct_fields), sealed, "sealed device bundle")
    opened = bundles.open_device_bundle(ibe.extract(home, recipient), sealed, issuer.params)
    assert formats.encode_device_key(opened.device_key) == formats.encode_device_key(new_key)
    return {
        "description": "cl-bravo issues a visitor key for tablet-07@cl-alpha, signs the "
        "type-6 bundle with its cloudlet identity key, wraps it in type 9 and IBE-encrypts "
        "that to the device's identity under cl-alpha's params with AAD_DEVICE_BUNDLE. "
        "The device opens it with its cl-alpha key (device_key.json) and cl-bravo's params.",
        "constants": [
            "KIND_DEVICE_BUNDLE",
            "KIND_SIGNED_DEVICE_BUNDLE",
            "KIND_IBE_CIPHERTEXT",
            "LABEL_DEVICE_BUNDLE_SIG",
            "AAD_DEVICE_BUNDLE",
            "DST_CHA_CHEON_H",
            "DST_CHA_CHEON_K",
            "LABEL_AAD",
            "HEDGE_BYTES",
            "SIGMA_BYTES",
        ],
        "rng": _rng_note(seed),
        "now": NOW.isoformat(),
        "issuer": "cl-bravo",
        "issuer_params": hx(formats.encode_params(issuer.params)),
        "recipient_params_cloudlet": "cl-alpha",
        **BUNDLE,
        "new_device_key": hx(formats.encode_device_key(new_key)),
        "device_bundle": hx(body),
        "signer_identity": str(signer_id),
        "signature": {k: hx(v) for k, v in sig.items()},
        "signed_device_bundle": hx(signed),
        "ibe_steps": {k: hx(v) for k, v in steps.items()},
        "aead_aad": hx(aead_aad),
        "sealed": hx(sealed),
    }


def transport_vectors() -> dict:
    """Section 15: a first bundle sealed to a pairing request, every step written out."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from cloudlet import transport

    seed_device, seed_cloudlet = b"wire-format/transport/device", b"wire-format/transport/cloudlet"
    device_priv = DetRng(seed_device)(32)
    request = transport.TransportKey(device_priv).public
    plaintext = b"CLDT first-delivery bundle stand-in (any bytes are sealed the same way)"
    device_id, cloudlet_id = "tablet-07", "cl-alpha"
    sealed = transport.seal_transport(plaintext, request, device_id, cloudlet_id,
                                      DetRng(seed_cloudlet))
    eph_priv = DetRng(seed_cloudlet)(32)
    eph = X25519PrivateKey.from_private_bytes(eph_priv)
    eph_pub = transport._raw(eph.public_key())
    shared = eph.exchange(transport.X25519PublicKey.from_public_bytes(request))
    fields = [request, eph_pub, device_id.encode(), cloudlet_id.encode()]
    info = lp(b"CLOUDLET-V01-TRANSPORT-KDF", *fields)
    okm = HKDF(hashes.SHA256(), 44, salt=None, info=info).derive(shared)
    aad = lp(b"CLOUDLET-V01-TRANSPORT-AAD", b"chacha20-poly1305", *fields)
    body = ChaCha20Poly1305(okm[:32]).encrypt(okm[32:], plaintext, aad)
    expected = formats.pack(formats.Kind.TRANSPORT_SEALED,
                            [b"chacha20-poly1305", *fields, body], formats.CURVE_NONE)
    assert expected == sealed, "transport envelope: the package and section 15 disagree"
    hx = bytes.hex
    return {
        "description": "docs/wire-format.md section 15: a first-delivery bundle sealed to a "
        "device's pairing request (X25519, HKDF-SHA256, ChaCha20-Poly1305).",
        "constants": ["LABEL_TRANSPORT_KDF", "AAD_TRANSPORT", "KIND_TRANSPORT_SEALED",
                      "CURVE_NONE", "MAGIC", "FORMAT_VERSION"],
        "seeds": {"device": seed_device.decode(), "cloudlet": seed_cloudlet.decode()},
        "label_kdf": "CLOUDLET-V01-TRANSPORT-KDF",
        "aad_label": "CLOUDLET-V01-TRANSPORT-AAD",
        "kind": int(formats.Kind.TRANSPORT_SEALED),
        "device_id": device_id,
        "cloudlet_id": cloudlet_id,
        "device_private": hx(device_priv),
        "request_public": hx(request),
        "ephemeral_private": hx(eph_priv),
        "ephemeral_public": hx(eph_pub),
        "shared": hx(shared),
        "hkdf_info": hx(info),
        "okm": hx(okm),
        "aad": hx(aad),
        "plaintext": hx(plaintext),
        "sealed": hx(sealed),
    }


def build() -> dict[str, dict]:
    """Every vector file's content, by file name."""
    alpha, master_a = _params_case(SEED_ALPHA, "cl-alpha")
    bravo, master_b = _params_case(SEED_BRAVO, "cl-bravo")
    masters = {"cl-alpha": master_a, "cl-bravo": master_b}
    return {
        "constants.json": {
            "description": "Every constant, tag and size the vectors use, and the device "
            "API's fixed values (server defaults where configurable); each has a row in "
            "the constants table of docs/wire-format.md. Tags are ASCII strings.",
            "constants": CONSTANTS,
        },
        "identity_hash.json": identity_vectors(),
        "params.json": params_vectors([alpha, bravo]),
        "device_key.json": device_key_vectors(masters),
        "ibe.json": ibe_vectors(masters),
        "auth.json": auth_vectors(masters),
        "device_bundle.json": bundle_vectors(masters),
        "transport.json": transport_vectors(),
    }


def render(content: dict) -> str:
    return json.dumps(content, indent=2, sort_keys=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, content in build().items():
        path = HERE / name
        text = render(content)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text)
    if check and stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    print(("stale: " if check else "written: ") + (", ".join(stale) or "nothing"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
