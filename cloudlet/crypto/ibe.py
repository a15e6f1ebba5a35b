"""Boneh-Franklin identity-based encryption on BLS12-381, CCA-secure.

Layout (type-3 pairing e: G1 x G2 -> GT):

* master secrets ``s`` (encryption) and ``t`` (device signatures, see
  ``cloudlet.crypto.auth``); public params ``P_enc = s*g2``, ``P_sig = t*g2``;
* ``Q_ID = H1(identity)`` in G1 (RFC 9380 hash_to_curve, project DST);
* a device key is ``d_enc = s*Q_ID`` and ``d_sig = t*Q_ID``.

Encryption is BasicIdent made CCA-secure with the Fujisaki-Okamoto transform
in its KEM form (explicit rejection), then an AEAD as the DEM:

    sigma <- 32 random bytes
    r     = H_r(params digest, identity, sigma)          (hash to Z_r)
    U     = r*g2
    V     = sigma XOR H_v(params digest, identity, U, e(Q_ID, P_enc)^r)
    K, N  = HKDF(sigma; salt = params digest; info = identity, U, V)
    body  = AES-256-GCM(K, N, plaintext, aad = params digest, identity, U, V, aad)

Decryption recomputes ``sigma`` from ``e(d_enc, U)``, re-derives ``r`` and
rejects unless ``U == r*g2``. The argument is written up in docs/crypto.md.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cloudlet.crypto import curve
from cloudlet.crypto.identity import Identity, check_current, normalise_id
from cloudlet.errors import CryptoError, DecryptionError, IdentityError

__all__ = [
    "DST_H1",
    "DeviceKey",
    "IbeCiphertext",
    "MasterKey",
    "PublicParams",
    "check_device_key",
    "decrypt",
    "encrypt",
    "extract",
    "identity_point",
    "setup",
]

DST_H1 = b"CLOUDLET-V01-CS01-with-BLS12381G1_XMD:SHA-256_SSWU_RO_"
_DST_R = b"CLOUDLET-V01-IBE-FO-R"
_LABEL_PARAMS = b"CLOUDLET-V01-IBE-PARAMS"
_LABEL_MASK = b"CLOUDLET-V01-IBE-MASK"
_LABEL_DEM = b"CLOUDLET-V01-IBE-DEM"
_LABEL_AAD = b"CLOUDLET-V01-IBE-AAD"
SIGMA_BYTES = 32
TAG_BYTES = 16


def _lp(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: unambiguous input for hashes."""
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def identity_point(identity: Identity) -> curve.G1:
    """Q_ID = H1(identity), RFC 9380 BLS12381G1_XMD:SHA-256_SSWU_RO_."""
    if not isinstance(identity, Identity):
        raise TypeError("expected an Identity")
    return curve.hash_to_g1(identity.encode(), DST_H1)


@dataclass(frozen=True)
class PublicParams:
    """What everyone may know about a cloudlet's PKG."""

    cloudlet_id: str
    p_enc: curve.G2
    p_sig: curve.G2

    def __post_init__(self) -> None:
        normalise_id(self.cloudlet_id, "cloudlet id")
        if not isinstance(self.p_enc, curve.G2) or not isinstance(self.p_sig, curve.G2):
            raise TypeError("params points must be G2 points")

    @cached_property
    def digest(self) -> bytes:
        """SHA-256 over a canonical encoding; binds ciphertexts and keys to these params."""
        return hashlib.sha256(
            _lp(
                _LABEL_PARAMS,
                self.cloudlet_id.encode("ascii"),
                curve.g2_to_bytes(self.p_enc),
                curve.g2_to_bytes(self.p_sig),
            )
        ).digest()


@dataclass(frozen=True, repr=False)
class MasterKey:
    """The PKG secret. Lives only on the cloudlet, mode 0600."""

    cloudlet_id: str
    s_enc: curve.Scalar
    s_sig: curve.Scalar

    def __post_init__(self) -> None:
        normalise_id(self.cloudlet_id, "cloudlet id")
        if not isinstance(self.s_enc, curve.Scalar) or not isinstance(self.s_sig, curve.Scalar):
            raise TypeError("master secrets must be Scalars")
        if self.s_enc.is_zero() or self.s_sig.is_zero():
            raise CryptoError("A master secret is zero.")

    def __repr__(self) -> str:
        return f"MasterKey(cloudlet_id={self.cloudlet_id!r}, <secret>)"

    @cached_property
    def params(self) -> PublicParams:
        return PublicParams(
            self.cloudlet_id,
            curve.g2_mul_generator(self.s_enc),
            curve.g2_mul_generator(self.s_sig),
        )


@dataclass(frozen=True, repr=False)
class DeviceKey:
    """A device's private keys for one identity under one cloudlet's params."""

    identity: Identity
    params_digest: bytes
    d_enc: curve.G1
    d_sig: curve.G1
    _q: curve.G1 | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.identity, Identity):
            raise TypeError("identity must be an Identity")
        if not isinstance(self.params_digest, bytes) or len(self.params_digest) != 32:
            raise TypeError("params_digest must be 32 bytes")
        if not isinstance(self.d_enc, curve.G1) or not isinstance(self.d_sig, curve.G1):
            raise TypeError("device key points must be G1 points")

    def __repr__(self) -> str:
        return f"DeviceKey(identity={str(self.identity)!r}, <secret>)"

    @cached_property
    def q(self) -> curve.G1:
        """Q_ID, cached: signing needs it every time."""
        return self._q if self._q is not None else identity_point(self.identity)


@dataclass(frozen=True)
class IbeCiphertext:
    identity: Identity
    params_digest: bytes
    u: curve.G2
    v: bytes
    body: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.identity, Identity):
            raise TypeError("identity must be an Identity")
        if not isinstance(self.u, curve.G2):
            raise TypeError("u must be a G2 point")
        for name in ("params_digest", "v"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise TypeError(f"{name} must be 32 bytes")
        if not isinstance(self.body, bytes):
            raise TypeError("body must be bytes")


def setup(cloudlet_id: str, rng: curve.Rng | None = None) -> MasterKey:
    """Create a PKG: two independent master secrets for one cloudlet."""
    cid = normalise_id(cloudlet_id, "cloudlet id")
    return MasterKey(cid, curve.random_scalar(rng), curve.random_scalar(rng))


def extract(master: MasterKey, identity: Identity) -> DeviceKey:
    """Issue the private key for ``identity``. Only the PKG can do this."""
    if not isinstance(master, MasterKey):
        raise TypeError("expected a MasterKey")
    if not isinstance(identity, Identity):
        raise TypeError("expected an Identity")
    if identity.cloudlet_id != master.cloudlet_id:
        raise IdentityError(
            f"Identity {identity} belongs to cloudlet {identity.cloudlet_id!r}, "
            f"but this PKG is {master.cloudlet_id!r}.",
            "Create the key on the cloudlet named in the identity.",
        )
    q = identity_point(identity)
    return DeviceKey(identity, master.params.digest, q * master.s_enc, q * master.s_sig, q)


def check_device_key(params: PublicParams, key: DeviceKey) -> None:
    """Verify that a received key really was issued under ``params``.

    A device runs this once when it installs a credential bundle, so that a
    corrupted or substituted key is caught at install time, not at first use.
    """
    if key.params_digest != params.digest:
        raise CryptoError(
            "The device key was issued under different cloudlet parameters.",
            "Pair the device again with this cloudlet.",
        )
    g2 = curve.g2_generator()
    ok_enc = curve.pairing_check([key.d_enc, -key.q], [g2, params.p_enc])
    ok_sig = curve.pairing_check([key.d_sig, -key.q], [g2, params.p_sig])
    if not (ok_enc and ok_sig):
        raise CryptoError(
            f"The device key for {key.identity} does not match the cloudlet parameters.",
            "The credential is damaged or forged: pair the device again.",
        )


def _mask(pd: bytes, ident: bytes, ub: bytes, z: curve.GT) -> bytes:
    return hashlib.sha256(_lp(_LABEL_MASK, pd, ident, ub, curve.gt_to_bytes(z))).digest()


def _dem_key(sigma: bytes, pd: bytes, ident: bytes, ub: bytes, v: bytes) -> tuple[bytes, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(), length=44, salt=pd, info=_lp(_LABEL_DEM, ident, ub, v)
    ).derive(sigma)
    return okm[:32], okm[32:]


def _fo_r(pd: bytes, ident: bytes, sigma: bytes) -> curve.Scalar:
    return curve.hash_to_scalar(_DST_R, _lp(pd, ident, sigma))


def encrypt(
    params: PublicParams,
    identity: Identity,
    plaintext: bytes,
    aad: bytes = b"",
    rng: curve.Rng | None = None,
    now: datetime | None = None,
    check_period: bool = True,
) -> IbeCiphertext:
    """Encrypt to ``identity`` under a cloudlet's public params.

    Refuses identities outside their validity period (unless told not to),
    because a key for a past period should be dead, and one for a future
    period may not have been issued yet.
    """
    if not isinstance(params, PublicParams):
        raise TypeError("expected PublicParams")
    if not isinstance(identity, Identity):
        raise TypeError("expected an Identity")
    if not isinstance(plaintext, bytes) or not isinstance(aad, bytes):
        raise TypeError("plaintext and aad must be bytes")
    if identity.cloudlet_id != params.cloudlet_id:
        raise IdentityError(
            f"Identity {identity} is not under cloudlet {params.cloudlet_id!r}'s parameters.",
            "Use the parameters of the cloudlet named in the identity.",
        )
    if check_period:
        check_current(identity, now)
    rng = rng or curve.default_rng
    sigma = rng(SIGMA_BYTES)
    if len(sigma) != SIGMA_BYTES:
        raise ValueError("rng returned the wrong number of bytes")
    pd = params.digest
    ident = identity.encode()
    r = _fo_r(pd, ident, sigma)
    u = curve.g2_mul_generator(r)
    ub = curve.g2_to_bytes(u)
    z = curve.pairing(identity_point(identity) * r, params.p_enc)
    v = _xor(sigma, _mask(pd, ident, ub, z))
    key, nonce = _dem_key(sigma, pd, ident, ub, v)
    body = AESGCM(key).encrypt(nonce, plaintext, _lp(_LABEL_AAD, pd, ident, ub, v, aad))
    return IbeCiphertext(identity, pd, u, v, body)


def decrypt(key: DeviceKey, ciphertext: IbeCiphertext, aad: bytes = b"") -> bytes:
    """Open a ciphertext; any tampering raises DecryptionError."""
    if not isinstance(key, DeviceKey):
        raise TypeError("expected a DeviceKey")
    if not isinstance(ciphertext, IbeCiphertext):
        raise TypeError("expected an IbeCiphertext")
    if not isinstance(aad, bytes):
        raise TypeError("aad must be bytes")
    if ciphertext.identity != key.identity:
        raise IdentityError(
            f"This message is for {ciphertext.identity}, but the key is for {key.identity}.",
            "Fetch the message addressed to this device.",
        )
    if ciphertext.params_digest != key.params_digest:
        raise DecryptionError(
            "This message was encrypted under another cloudlet's parameters.",
            "Check which cloudlet issued this device's key.",
        )
    pd = key.params_digest
    ident = key.identity.encode()
    ub = curve.g2_to_bytes(ciphertext.u)
    z = curve.pairing(key.d_enc, ciphertext.u)
    sigma = _xor(ciphertext.v, _mask(pd, ident, ub, z))
    r = _fo_r(pd, ident, sigma)
    if curve.g2_mul_generator(r) != ciphertext.u:
        raise DecryptionError("The message failed its integrity check (FO re-encryption).")
    dem_key, nonce = _dem_key(sigma, pd, ident, ub, ciphertext.v)
    try:
        return AESGCM(dem_key).decrypt(
            nonce, ciphertext.body, _lp(_LABEL_AAD, pd, ident, ub, ciphertext.v, aad)
        )
    except InvalidTag:
        raise DecryptionError("The message failed its integrity check (AEAD tag).") from None
