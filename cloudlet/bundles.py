"""Credential bundles: what a device or a peer cloudlet needs, sealed in transit.

* ``DeviceBundle``: the device's IBE key, the issuing cloudlet's params, its
  TLS CA, the 802.1X (EAP-pwd) credential and the Manager API endpoint.
  The issuing cloudlet *signs* it (Cha-Cheon, with the key of its own
  cloudlet identity for the bundle's period, over the bundle and the
  recipient), then IBE-encrypts it to the device's identity
  (``seal_device_bundle``). Encryption alone authenticates nothing: anyone
  holding public params can encrypt to a device, so without the signature a
  stranger could hand the device a rogue TLS CA and network. The device
  opens it only against issuer params it already trusts
  (``open_device_bundle``). A device's *first* bundle cannot be encrypted
  to it (it has no key yet): it is signed to its own new identity and
  pushed over a channel the admin trusts (``issue_first_device_bundle``,
  ``verify_device_bundle``; ``cloudlet.device.sealed`` for a file).
* ``PairingBundle``: what a cloudlet gives its peer at pairing: TLS CA, IBE
  params, credentials for joining its network, its FQDN and API port.
  Sealed with the direction key from the PAKE (``seal_pairing_bundle``),
  which authenticates it as coming from whoever knew the voice code.

Associated data binds sender, recipient, purpose and session, so a bundle
cannot be replayed to another device, another pairing or the other
direction.
"""

from __future__ import annotations

import multiprocessing
import re
import struct
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloudlet import formats
from cloudlet.crypto import auth, curve, ibe
from cloudlet.crypto.ibe import DeviceKey, MasterKey, PublicParams
from cloudlet.crypto.identity import Identity, Period, cloudlet_identity
from cloudlet.crypto.pake import PairingResult
from cloudlet.errors import CryptoError, DecryptionError, FormatError, IdentityError
from cloudlet.formats import Kind, pack, unpack

__all__ = [
    "BundleIssuer",
    "DeviceBundle",
    "NetworkCredential",
    "PairingBundle",
    "decode_device_bundle",
    "decode_pairing_bundle",
    "encode_device_bundle",
    "encode_pairing_bundle",
    "issue_device_bundle",
    "issue_first_device_bundle",
    "issuer_key",
    "open_device_bundle",
    "open_pairing_bundle",
    "seal_device_bundle",
    "seal_pairing_bundle",
    "sign_device_bundle",
    "verify_device_bundle",
]

_AAD_DEVICE = b"CLOUDLET-V01-DEVICE-BUNDLE"
_LABEL_DEVICE_SIG = b"CLOUDLET-V01-DEVICE-BUNDLE-SIG"
_AAD_PAIRING = b"CLOUDLET-V01-PAIRING-BUNDLE"
_HOST_RE = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)
_IP_RE = re.compile(r"[0-9a-fA-F:.]{2,45}\Z")
EAP_METHODS = ("pwd", "tls")


def _check_host(value: str, what: str) -> str:
    if not isinstance(value, str) or not (_HOST_RE.match(value) or _IP_RE.match(value)):
        raise FormatError(f"The {what} {value!r} is not a host name or address.")
    return value


def _check_port(value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise FormatError(f"Port {value!r} is not in 1..65535.")
    return value


def _check_pem(value: str) -> str:
    if (
        not isinstance(value, str)
        or "-----BEGIN CERTIFICATE-----" not in value
        or not value.isascii()
    ):
        raise FormatError("The TLS CA is not a PEM certificate.")
    return value


@dataclass(frozen=True, repr=False)
class NetworkCredential:
    """802.1X credential for joining a cloudlet network (EAP-pwd by default)."""

    ssid: str
    identity: str
    password: str
    eap_method: str = "pwd"

    def __post_init__(self) -> None:
        for name in ("ssid", "identity", "password", "eap_method"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str")
        if not 1 <= len(self.ssid.encode("utf-8")) <= 32:
            raise FormatError("An SSID is 1 to 32 bytes.")
        if not self.identity or not self.password:
            raise FormatError("The EAP identity and password must not be empty.")
        if self.eap_method not in EAP_METHODS:
            raise FormatError(
                f"EAP method {self.eap_method!r} is not allowed; use one of {EAP_METHODS} "
                "(methods open to offline guessing are refused)."
            )

    def __repr__(self) -> str:
        return f"NetworkCredential(ssid={self.ssid!r}, identity={self.identity!r}, <password>)"

    def _fields(self) -> list[bytes]:
        return [
            s.encode("utf-8") for s in (self.ssid, self.identity, self.password, self.eap_method)
        ]

    @classmethod
    def _from(cls, raw: list[bytes]) -> NetworkCredential:
        return cls(*(formats.text_field(r, "network credential") for r in raw))


@dataclass(frozen=True, repr=False)
class DeviceBundle:
    device_key: DeviceKey
    params: PublicParams
    tls_ca_pem: str
    network: NetworkCredential
    api_host: str
    api_port: int

    def __post_init__(self) -> None:
        if not isinstance(self.device_key, DeviceKey) or not isinstance(self.params, PublicParams):
            raise TypeError("device_key and params must be a DeviceKey and PublicParams")
        if not isinstance(self.network, NetworkCredential):
            raise TypeError("network must be a NetworkCredential")
        if self.device_key.params_digest != self.params.digest:
            raise FormatError("The device key was not issued under the bundle's params.")
        _check_pem(self.tls_ca_pem)
        _check_host(self.api_host, "API host")
        _check_port(self.api_port)

    def __repr__(self) -> str:
        return f"DeviceBundle({self.device_key.identity}, <secret>)"


@dataclass(frozen=True, repr=False)
class PairingBundle:
    cloudlet_id: str
    tls_ca_pem: str
    params: PublicParams
    network: NetworkCredential
    fqdn: str
    api_port: int

    def __post_init__(self) -> None:
        if not isinstance(self.params, PublicParams) or self.params.cloudlet_id != self.cloudlet_id:
            raise FormatError("The bundle's params are not those of its cloudlet.")
        if not isinstance(self.network, NetworkCredential):
            raise TypeError("network must be a NetworkCredential")
        _check_pem(self.tls_ca_pem)
        _check_host(self.fqdn, "FQDN")
        _check_port(self.api_port)

    def __repr__(self) -> str:
        return f"PairingBundle({self.cloudlet_id!r}, <secret>)"


# --- plain encodings (always sealed before they leave the host) ------------


def encode_device_bundle(bundle: DeviceBundle) -> bytes:
    return pack(
        Kind.DEVICE_BUNDLE,
        [
            formats.encode_device_key(bundle.device_key),
            formats.encode_params(bundle.params),
            bundle.tls_ca_pem.encode("ascii"),
            *bundle.network._fields(),
            bundle.api_host.encode("ascii"),
            bundle.api_port.to_bytes(2, "big"),
        ],
    )


def decode_device_bundle(data: bytes) -> DeviceBundle:
    key, params, pem, *net, host, port = unpack(
        data, Kind.DEVICE_BUNDLE, [None, None, None, None, None, None, None, None, 2]
    )
    return DeviceBundle(
        formats.decode_device_key(key),
        formats.decode_params(params),
        formats.text_field(pem, "TLS CA", ascii_only=True),
        NetworkCredential._from(net),
        formats.text_field(host, "API host", ascii_only=True),
        int.from_bytes(port, "big"),
    )


def encode_pairing_bundle(bundle: PairingBundle) -> bytes:
    return pack(
        Kind.PAIRING_BUNDLE,
        [
            bundle.cloudlet_id.encode("ascii"),
            bundle.tls_ca_pem.encode("ascii"),
            formats.encode_params(bundle.params),
            *bundle.network._fields(),
            bundle.fqdn.encode("ascii"),
            bundle.api_port.to_bytes(2, "big"),
        ],
    )


def decode_pairing_bundle(data: bytes) -> PairingBundle:
    cid, pem, params, *net, fqdn, port = unpack(
        data, Kind.PAIRING_BUNDLE, [None, None, None, None, None, None, None, None, 2]
    )
    return PairingBundle(
        formats.id_field(cid),
        formats.text_field(pem, "TLS CA", ascii_only=True),
        formats.decode_params(params),
        NetworkCredential._from(net),
        formats.text_field(fqdn, "FQDN", ascii_only=True),
        int.from_bytes(port, "big"),
    )


# --- sealing ---------------------------------------------------------------


def _lp(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def issuer_key(master: MasterKey, period: Period) -> DeviceKey:
    """The key a cloudlet signs device bundles with: its own identity's key."""
    return ibe.extract(master, cloudlet_identity(master.cloudlet_id, period))


def _signed_message(recipient: Identity, body: bytes) -> bytes:
    return _lp(_LABEL_DEVICE_SIG, recipient.encode(), body)


def sign_device_bundle(
    bundle: DeviceBundle,
    signer: DeviceKey,
    recipient: Identity | None = None,
    rng: curve.Rng | None = None,
) -> bytes:
    """The issuer's signed bundle (type 9) for ``recipient``, not yet encrypted.

    ``recipient`` defaults to the bundle's own identity: that is the *first
    delivery* form, pushed to a device that has no key yet over a channel
    the admin already trusts (SSH, or a passphrase-sealed file, see
    ``cloudlet.device.sealed``). Signing it to itself means a type-9 object
    lifted out of a migration ciphertext (signed to the device's old
    identity) can never pass as a first delivery.
    """
    if not isinstance(bundle, DeviceBundle):
        raise TypeError("expected a DeviceBundle")
    if recipient is None:
        recipient = bundle.device_key.identity
    if not isinstance(recipient, Identity):
        raise TypeError("recipient must be an Identity")
    expected = cloudlet_identity(bundle.params.cloudlet_id, bundle.device_key.identity.period)
    if not isinstance(signer, DeviceKey) or signer.identity != expected:
        raise IdentityError(
            f"Device bundles from {bundle.params.cloudlet_id!r} are signed with the key of "
            f"{expected}.",
            "Use bundles.issuer_key(master, period) of the issuing cloudlet.",
        )
    body = encode_device_bundle(bundle)
    u, v = auth.sign(signer, _signed_message(recipient, body), rng)
    return pack(Kind.SIGNED_DEVICE_BUNDLE, [body, curve.g1_to_bytes(u), curve.g1_to_bytes(v)])


def seal_device_bundle(
    recipient_params: PublicParams,
    recipient: Identity,
    bundle: DeviceBundle,
    signer: DeviceKey,
    rng: curve.Rng | None = None,
    now: datetime | None = None,
) -> bytes:
    """Sign a bundle as its issuer, then IBE-encrypt it to ``recipient``.

    ``signer`` is ``issuer_key(master, bundle period)`` of the cloudlet that
    issued the bundle; ``recipient_params`` are usually another cloudlet's
    (the one the device holds a key from).
    """
    if not isinstance(bundle, DeviceBundle) or not isinstance(recipient, Identity):
        raise TypeError("expected a DeviceBundle and an Identity")
    signed = sign_device_bundle(bundle, signer, recipient, rng)
    ct = ibe.encrypt(recipient_params, recipient, signed, _AAD_DEVICE, rng=rng, now=now)
    return formats.encode_ciphertext(ct)


def verify_device_bundle(
    signed: bytes,
    issuer: PublicParams | None = None,
    recipient: Identity | None = None,
    verify_key: bool = True,
) -> DeviceBundle:
    """Check a type-9 signed bundle and parse it.

    ``issuer`` and ``recipient`` default to the bundle's own params and
    identity: the first-delivery form (``sign_device_bundle``), where the
    channel, not the device, vouches for the params, and the signature
    proves the bundle whole and made by the holder of their master key.
    """
    if issuer is not None and not isinstance(issuer, PublicParams):
        raise TypeError("issuer must be the issuing cloudlet's PublicParams")
    body, u, v = unpack(signed, Kind.SIGNED_DEVICE_BUNDLE, [None, curve.G1_BYTES, curve.G1_BYTES])
    bundle = decode_device_bundle(body)
    if issuer is None:
        issuer = bundle.params
    if recipient is None:
        recipient = bundle.device_key.identity
    if bundle.params != issuer:
        raise CryptoError(
            f"The bundle was issued by {bundle.params.cloudlet_id!r} under parameters this "
            f"device does not trust (expected {issuer.cloudlet_id!r}).",
            "Fetch the bundle again from the cloudlet the device is moving to; if this "
            "repeats, someone is forging bundles.",
        )
    signer = cloudlet_identity(issuer.cloudlet_id, bundle.device_key.identity.period)
    message = _signed_message(recipient, body)
    if not auth.verify_signature(
        issuer, signer, message, curve.g1_from_bytes(u), curve.g1_from_bytes(v)
    ):
        raise CryptoError(
            f"The bundle's signature from {issuer.cloudlet_id!r} is not valid.",
            "The bundle was forged or damaged: do not use it; fetch it again.",
        )
    if verify_key:
        ibe.check_device_key(issuer, bundle.device_key)
    return bundle


def open_device_bundle(
    key: DeviceKey, data: bytes, issuer: PublicParams, verify_key: bool = True
) -> DeviceBundle:
    """Device side: decrypt, check the issuer's signature, parse.

    ``issuer`` are the params of the cloudlet the device expects the bundle
    from, learnt over a channel it already trusts (its current cloudlet's
    Manager API, or the pairing). A bundle signed by anyone else is refused.
    By default the new key is also checked against the issuer's params.
    """
    if not isinstance(issuer, PublicParams):
        raise TypeError("issuer must be the issuing cloudlet's PublicParams")
    ct = formats.decode_ciphertext(data)
    signed = ibe.decrypt(key, ct, _AAD_DEVICE)
    return verify_device_bundle(signed, issuer, key.identity, verify_key)


def issue_first_device_bundle(
    master: MasterKey,
    identity: Identity,
    tls_ca_pem: str,
    network: NetworkCredential,
    api_host: str,
    api_port: int,
    rng: curve.Rng | None = None,
) -> bytes:
    """Pairing: a device's first bundle, signed to itself (``sign_device_bundle``).

    The result is a secret (it holds the device key): push it over the
    admin's SSH connection, or seal it with a passphrase for a file.
    """
    bundle = DeviceBundle(
        ibe.extract(master, identity), master.params, tls_ca_pem, network, api_host, api_port
    )
    return sign_device_bundle(bundle, issuer_key(master, identity.period), rng=rng)


def issue_device_bundle(
    master: MasterKey,
    new_identity: Identity,
    recipient_params: PublicParams,
    recipient: Identity,
    tls_ca_pem: str,
    network: NetworkCredential,
    api_host: str,
    api_port: int,
    rng: curve.Rng | None = None,
    now: datetime | None = None,
    signer: DeviceKey | None = None,
) -> bytes:
    """Extract a key for ``new_identity``, sign its bundle, seal it to ``recipient``.

    In a migration, ``master`` is the target cloudlet's PKG and ``recipient``
    the device's identity under the source cloudlet's ``recipient_params``:
    only that device can open it, wherever the ciphertext is stored, and it
    can check that the target cloudlet issued it. ``signer`` saves one
    extract when issuing many bundles for the same period.
    """
    bundle = DeviceBundle(
        ibe.extract(master, new_identity),
        master.params,
        tls_ca_pem,
        network,
        api_host,
        api_port,
    )
    if signer is None:
        signer = issuer_key(master, new_identity.period)
    return seal_device_bundle(recipient_params, recipient, bundle, signer, rng, now)


class BundleIssuer:
    """Issues many device bundles for one PKG, on ``workers`` processes.

    A migration re-issues credentials for every device of an SVM at once.
    Each bundle costs an extract, a signature and an encryption, about 4 ms
    of pairing arithmetic that holds the GIL, so threads would not help:
    batches are cut into chunks and sealed in worker processes. The workers
    come from a fork server (a clean single-threaded process, never the
    caller's threads), get the master key once at their start, and live as
    long as the issuer; ``warm`` starts them ahead of the first batch. With
    one worker everything runs in the caller's thread.
    """

    def __init__(self, master: MasterKey, workers: int = 1) -> None:
        self.master = master
        self.workers = max(1, workers)
        self._pool = self._new_pool() if self.workers > 1 else None

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["cloudlet.bundles"])
        return ProcessPoolExecutor(
            self.workers,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(formats.encode_master_key(self.master),),
        )

    def warm(self) -> None:
        """Start the worker processes now, without waiting for them."""
        if self._pool is not None:
            for _ in range(self.workers):
                self._pool.submit(int)

    def issue(
        self,
        recipient_params: PublicParams,
        jobs: Sequence[tuple[Identity, Identity, NetworkCredential]],
        tls_ca_pem: str,
        api_host: str,
        api_port: int,
        now: datetime | None = None,
    ) -> list[bytes]:
        """``issue_device_bundle`` for each (new identity, recipient, network), in order."""
        common = (formats.encode_params(recipient_params), tls_ca_pem, api_host, api_port, now)
        encoded = [(str(new), str(rcpt), net) for new, rcpt, net in jobs]
        if self._pool is None:
            return _issue_chunk(self.master, {}, common, encoded)
        try:
            return self._on_workers(common, encoded)
        except BrokenProcessPool:
            # A worker died (killed, out of memory): a fresh pool, and the batch once more.
            self._pool.shutdown(wait=False)
            self._pool = self._new_pool()
            return self._on_workers(common, encoded)

    def _on_workers(self, common: tuple, encoded: list) -> list[bytes]:
        # A few chunks per worker, so that one slow chunk does not hold the batch.
        size = -(-len(encoded) // (self.workers * 4)) or 1
        futures = [
            self._pool.submit(_worker_issue, common, encoded[i : i + size])
            for i in range(0, len(encoded), size)
        ]
        try:
            return [blob for f in futures for blob in f.result()]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    @property
    def pids(self) -> list[int]:
        """The worker processes running now (none with one worker)."""
        return list(self._pool._processes) if self._pool is not None else []  # noqa: SLF001

    def close(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)

    def __enter__(self) -> BundleIssuer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_WORKER: dict = {}


def _worker_init(master: bytes) -> None:
    _WORKER["master"] = formats.decode_master_key(master)
    _WORKER["signers"] = {}


def _worker_issue(common: tuple, jobs: list) -> list[bytes]:
    return _issue_chunk(_WORKER["master"], _WORKER["signers"], common, jobs)


def _issue_chunk(master: MasterKey, signers: dict, common: tuple, jobs: list) -> list[bytes]:
    params, tls_ca_pem, api_host, api_port, now = common
    recipient_params = formats.decode_params(params)
    out = []
    for new_id, rcpt_id, network in jobs:
        new_identity = Identity.parse(new_id)
        period = new_identity.period
        if period not in signers:
            signers[period] = issuer_key(master, period)
        out.append(issue_device_bundle(
            master, new_identity, recipient_params, Identity.parse(rcpt_id), tls_ca_pem,
            network, api_host, api_port, now=now, signer=signers[period],
        ))  # fmt: skip
    return out


def _pairing_aad(result: PairingResult, sender: str, recipient: str) -> bytes:
    return _lp(
        _AAD_PAIRING,
        result.purpose.encode("utf-8"),
        sender.encode(),
        recipient.encode(),
        result.transcript_hash,
    )


def seal_pairing_bundle(
    result: PairingResult, bundle: PairingBundle, rng: curve.Rng | None = None
) -> bytes:
    """Encrypt our pairing bundle for the peer under this pairing's send key."""
    if not isinstance(result, PairingResult) or not isinstance(bundle, PairingBundle):
        raise TypeError("expected a PairingResult and a PairingBundle")
    if bundle.cloudlet_id != result.my_id:
        raise IdentityError(
            f"The bundle describes {bundle.cloudlet_id!r}, but this side is {result.my_id!r}."
        )
    nonce = (rng or curve.default_rng)(12)
    aad = _pairing_aad(result, result.my_id, result.peer_id)
    body = AESGCM(result.bundle_key(result.my_id)).encrypt(
        nonce, encode_pairing_bundle(bundle), aad
    )
    return pack(
        Kind.SEALED_BUNDLE,
        [result.my_id.encode(), result.peer_id.encode(), result.transcript_hash, nonce, body],
        formats.CURVE_NONE,
    )


def open_pairing_bundle(result: PairingResult, data: bytes) -> PairingBundle:
    """Decrypt the peer's pairing bundle; it must come from the peer we paired with."""
    sender, recipient, transcript, nonce, body = unpack(
        data, Kind.SEALED_BUNDLE, [None, None, 32, 12, None], formats.CURVE_NONE
    )
    if (sender, recipient, transcript) != (
        result.peer_id.encode(),
        result.my_id.encode(),
        result.transcript_hash,
    ):
        raise DecryptionError(
            "This bundle does not belong to this pairing (wrong sender, recipient or session).",
            "Start the pairing again on both cloudlets.",
        )
    aad = _pairing_aad(result, result.peer_id, result.my_id)
    try:
        plain = AESGCM(result.bundle_key(result.peer_id)).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionError("The pairing bundle was altered in transit.") from None
    bundle = decode_pairing_bundle(plain)
    if bundle.cloudlet_id != result.peer_id:
        raise IdentityError(
            f"The bundle describes {bundle.cloudlet_id!r}, but we paired with {result.peer_id!r}."
        )
    return bundle
