"""Device authentication: proof of holding the IBE key for an identity.

KD-Cloudlet let a device fetch its keys by sending an ``X-Device-ID`` header,
which anyone could forge. Here every request carries a Cha-Cheon
identity-based signature made with the device's ``d_sig = t*Q_ID``:

    sign:   k random, U = k*Q_ID, h = H(params, identity, U, message),
            V = (k + h) * d_sig
    verify: e(V, g2) == e(U + h*Q_ID, P_sig)

The verifier needs only the cloudlet's public params: no per-device secret is
stored anywhere, so a stolen cloudlet database reveals nothing that lets an
attacker impersonate a device.

The signed message binds the audience (the cloudlet being called), a time
stamp, a random nonce and the caller's request bytes. ``DeviceVerifier``
accepts a proof only inside a time window and only once (``ReplayCache``).
"""

from __future__ import annotations

import heapq
import struct
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cloudlet.crypto import curve
from cloudlet.crypto.ibe import DeviceKey, PublicParams, identity_point
from cloudlet.crypto.identity import DEFAULT_SKEW, Identity, check_current, normalise_id
from cloudlet.errors import AuthenticationError, ReplayError

__all__ = [
    "AuthProof",
    "DEFAULT_WINDOW",
    "DeviceVerifier",
    "NONCE_BYTES",
    "ReplayCache",
    "make_proof",
    "sign",
    "verify_signature",
]

NONCE_BYTES = 16
DEFAULT_WINDOW = timedelta(seconds=120)
_DST_H = b"CLOUDLET-V01-IBS-CHA-CHEON-H"
_DST_K = b"CLOUDLET-V01-IBS-CHA-CHEON-K"
_LABEL_AUTH = b"CLOUDLET-V01-DEVICE-AUTH"


def _lp(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _challenge(pd: bytes, ident: bytes, u: curve.G1, message: bytes) -> curve.Scalar:
    return curve.hash_to_scalar(_DST_H, _lp(pd, ident, curve.g1_to_bytes(u), message))


def sign(key: DeviceKey, message: bytes, rng: curve.Rng | None = None) -> tuple[curve.G1, curve.G1]:
    """Cha-Cheon signature (U, V) on ``message`` with the device's d_sig.

    The per-signature ``k`` is hedged: hashed from the key, the message and
    fresh randomness. Two signatures with the same ``k`` on different
    messages give away d_sig (``V1 - V2 = (h1 - h2) * d_sig``), so a weak or
    repeated rng must not be enough to repeat ``k``.
    """
    if not isinstance(key, DeviceKey):
        raise TypeError("expected a DeviceKey")
    if not isinstance(message, bytes):
        raise TypeError("message must be bytes")
    fresh = (rng or curve.default_rng)(32)
    if len(fresh) != 32:
        raise ValueError("rng returned the wrong number of bytes")
    k = curve.hash_to_scalar(_DST_K, _lp(curve.g1_to_bytes(key.d_sig), message, fresh))
    u = key.q * k
    h = _challenge(key.params_digest, key.identity.encode(), u, message)
    return u, key.d_sig * (k + h)


def verify_signature(
    params: PublicParams, identity: Identity, message: bytes, u: curve.G1, v: curve.G1
) -> bool:
    if not isinstance(params, PublicParams) or not isinstance(identity, Identity):
        raise TypeError("expected PublicParams and an Identity")
    if not isinstance(u, curve.G1) or not isinstance(v, curve.G1):
        raise TypeError("signature parts must be G1 points")
    if not isinstance(message, bytes):
        raise TypeError("message must be bytes")
    q = identity_point(identity)
    h = _challenge(params.digest, identity.encode(), u, message)
    return curve.pairing_check([v, -(u + q * h)], [curve.g2_generator(), params.p_sig])


@dataclass(frozen=True)
class AuthProof:
    """One request's proof of identity (encoded by cloudlet.formats)."""

    identity: Identity
    params_digest: bytes
    audience: str
    timestamp: int
    nonce: bytes
    u: curve.G1
    v: curve.G1

    def __post_init__(self) -> None:
        if not isinstance(self.identity, Identity):
            raise TypeError("identity must be an Identity")
        if not isinstance(self.params_digest, bytes) or len(self.params_digest) != 32:
            raise TypeError("params_digest must be 32 bytes")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_BYTES:
            raise TypeError(f"nonce must be {NONCE_BYTES} bytes")
        if not isinstance(self.timestamp, int) or not 0 <= self.timestamp < 2**63:
            raise TypeError("timestamp must be a non-negative int")
        if not isinstance(self.audience, str):
            raise TypeError("audience must be a str")
        if not isinstance(self.u, curve.G1) or not isinstance(self.v, curve.G1):
            raise TypeError("signature parts must be G1 points")

    def signed_message(self, request: bytes) -> bytes:
        return _signed_message(
            self.params_digest,
            self.identity,
            self.audience,
            self.timestamp,
            self.nonce,
            request,
        )


def _signed_message(
    pd: bytes, identity: Identity, audience: str, ts: int, nonce: bytes, request: bytes
) -> bytes:
    return _lp(
        _LABEL_AUTH,
        pd,
        identity.encode(),
        audience.encode("ascii"),
        struct.pack(">Q", ts),
        nonce,
        request,
    )


def _unix(now: datetime | None) -> int:
    when = now or datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("naive datetime: pass an aware (UTC) time")
    return int(when.timestamp())


def make_proof(
    key: DeviceKey,
    audience: str,
    request: bytes = b"",
    now: datetime | None = None,
    rng: curve.Rng | None = None,
) -> AuthProof:
    """Device side: prove identity for one request to cloudlet ``audience``.

    ``request`` should be the bytes that must not be swapped under this proof
    (method, path and a body digest), so a proof cannot be moved to another
    request.
    """
    if not isinstance(request, bytes):
        raise TypeError("request must be bytes")
    audience = normalise_id(audience, "audience")
    rng = rng or curve.default_rng
    nonce = rng(NONCE_BYTES)
    ts = _unix(now)
    msg = _signed_message(key.params_digest, key.identity, audience, ts, nonce, request)
    u, v = sign(key, msg, rng)
    return AuthProof(key.identity, key.params_digest, audience, ts, nonce, u, v)


class ReplayCache:
    """Remembers (identity, nonce) pairs until their time window has passed.

    Bounded: entries leave in expiry order (a heap), so the cost per proof is
    logarithmic and an expired entry never lingers. When full of *live*
    entries it refuses new proofs rather than forgetting old ones early:
    forgetting early would re-open the replay window.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError("max_entries must be a positive int")
        self.max_entries = max_entries
        self._seen: dict[tuple[str, bytes], float] = {}
        self._expiry: list[tuple[float, tuple[str, bytes]]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            _exp, key = heapq.heappop(self._expiry)
            del self._seen[key]

    def seen(self, identity: str, nonce: bytes, now: float | None = None) -> bool:
        """Whether this proof was already recorded (and has not expired).

        Only an early refusal: ``add`` stays the check that counts, since a
        subclass may remember more than this memory does.
        """
        now = time.time() if now is None else now
        with self._lock:
            self._purge(now)
            return (identity, nonce) in self._seen

    def add(self, identity: str, nonce: bytes, expires_at: float, now: float | None = None) -> None:
        """Record a proof; raise ReplayError if it was already recorded."""
        now = time.time() if now is None else now
        key = (identity, nonce)
        with self._lock:
            self._purge(now)
            if key in self._seen:
                raise ReplayError(f"Replayed authentication from {identity}.")
            if len(self._seen) >= self.max_entries:
                raise AuthenticationError(
                    "Too many authentications in the current time window.",
                    "Wait a minute and retry; if this persists the cloudlet is being flooded.",
                )
            self._seen[key] = expires_at
            heapq.heappush(self._expiry, (expires_at, key))


class DeviceVerifier:
    """Cloudlet side: check AuthProofs against this cloudlet's params."""

    def __init__(
        self,
        params: PublicParams,
        cache: ReplayCache | None = None,
        window: timedelta = DEFAULT_WINDOW,
        period_skew: timedelta = DEFAULT_SKEW,
    ) -> None:
        if not isinstance(params, PublicParams):
            raise TypeError("expected PublicParams")
        self.params = params
        self.cache = cache if cache is not None else ReplayCache()
        self.window = window
        self.period_skew = period_skew

    def verify(
        self, proof: AuthProof, request: bytes = b"", now: datetime | None = None
    ) -> Identity:
        """Return the authenticated device identity, or raise."""
        if not isinstance(request, bytes):
            raise TypeError("request must be bytes")
        self.precheck(proof, now)
        return self.check(proof, request, now)

    def precheck(self, proof: AuthProof, now: datetime | None = None) -> None:
        """Everything that can be refused without the pairing and without the request.

        A forged proof costs a pairing (milliseconds); these checks cost
        microseconds, so a server runs them first, before it even reads the
        request body. They prove nothing: only ``check`` authenticates.
        """
        if not isinstance(proof, AuthProof):
            raise TypeError("expected an AuthProof")
        params = self.params
        ident = proof.identity
        if proof.audience != params.cloudlet_id:
            raise AuthenticationError(
                f"The proof is addressed to cloudlet {proof.audience!r}, "
                f"not to {params.cloudlet_id!r}.",
                "The device is talking to the wrong cloudlet, or the proof was relayed.",
            )
        if proof.params_digest != params.digest or ident.cloudlet_id != params.cloudlet_id:
            raise AuthenticationError(
                f"{ident} was not issued by this cloudlet's current key.",
                "Pair the device with this cloudlet again.",
            )
        if not ident.is_device:
            raise AuthenticationError(f"{ident} is not a device identity.")
        check_current(ident, now, self.period_skew)
        now_ts = _unix(now)
        window = int(self.window.total_seconds())
        # Accepted while |now - ts| <= window (whole seconds); the cache keeps
        # the nonce until ts + window + 1, i.e. for as long as this accepts it.
        if abs(now_ts - proof.timestamp) > window:
            raise ReplayError(
                f"The proof from {ident} is {now_ts - proof.timestamp} s old; "
                f"only {window} s are accepted."
            )
        if self.cache.seen(str(ident), proof.nonce, now_ts):
            raise ReplayError(f"Replayed authentication from {ident}.")

    def check(
        self, proof: AuthProof, request: bytes = b"", now: datetime | None = None
    ) -> Identity:
        """The pairing check, then the nonce is spent: returns the authenticated identity.

        Call ``precheck`` first (``verify`` does both): this alone does not
        look at the audience, the period or the time window.
        """
        if not isinstance(proof, AuthProof):
            raise TypeError("expected an AuthProof")
        if not isinstance(request, bytes):
            raise TypeError("request must be bytes")
        ident = proof.identity
        message = proof.signed_message(request)
        if not verify_signature(self.params, ident, message, proof.u, proof.v):
            raise AuthenticationError(f"The signature from {ident} is not valid.")
        window = int(self.window.total_seconds())
        self.cache.add(str(ident), proof.nonce, proof.timestamp + window + 1, _unix(now))
        return ident
