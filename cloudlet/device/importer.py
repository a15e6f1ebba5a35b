"""Importing a first credential bundle: recognise it, verify it, then store it.

The admin's push delivers the bundle sealed to the device's pairing
request (``cloudlet.transport``, relayed by the admin's laptop as
ciphertext), sealed with a passphrase (``sealed``, a file), or as the plain
signed first-delivery object (``bundles.issue_first_device_bundle``).
Whatever arrives is checked completely before a byte is written: the
envelope, the passphrase, the issuer's signature, the key against the
issuer's params, the TLS CA, the identity and its period. Anything else
the device might be handed by mistake (an unsigned bundle, a migration
ciphertext, a cloudlet's own files) is named and refused, and the store is
left exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cloudlet import bundles, formats, pki, transport
from cloudlet.bundles import DeviceBundle
from cloudlet.crypto.identity import DEFAULT_SKEW
from cloudlet.device import pairing, sealed
from cloudlet.device.progress import Progress, Silent
from cloudlet.device.store import CredentialStore
from cloudlet.errors import (
    BundleRefused,
    CertificateError,
    CloudletError,
    ExpiredIdentityError,
    FormatError,
    IdentityError,
)
from cloudlet.formats import Kind

__all__ = ["Imported", "check_usable", "import_bundle", "parse_bundle"]

PassphraseSource = Callable[[], str]


@dataclass(frozen=True)
class Imported:
    """What an import did: the bundle, where it went, and whether anything changed."""

    bundle: DeviceBundle
    path: Path
    changed: bool
    replaced: str | None  # the identity of the credential it replaced, if another


def check_usable(bundle: DeviceBundle, now: datetime | None = None) -> None:
    """Refuse a bundle a device cannot use: not a device key, expired, bad CA.

    A key for a later period is accepted: the admin may pair ahead of a mission.
    """
    ident = bundle.device_key.identity
    if not ident.is_device:
        raise BundleRefused(f"{ident} is a cloudlet's own key, not a device's.")
    now = now or datetime.now(UTC)
    if now >= ident.period.not_after + DEFAULT_SKEW:
        raise ExpiredIdentityError(
            f"The credential for {ident} expired at {ident.period.not_after:%Y-%m-%d %H:%M} UTC.",
            "Nothing was stored. Check this device's clock; if it is right, ask the cloudlet "
            "admin to pair the device again.",
        )
    try:
        pki.load_certificate(bundle.tls_ca_pem)
    except CertificateError as exc:
        raise FormatError(f"The bundle's TLS CA is not a certificate: {exc.message}") from None


def parse_bundle(
    data: bytes,
    passphrase: PassphraseSource | None = None,
    expect_cloudlet: str | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
    transport_key: transport.TransportKey | None = None,
) -> DeviceBundle:
    """Verify pushed bytes and return the bundle; nothing is stored.

    ``passphrase`` is only called when the data is sealed with one;
    ``transport_key`` is the pending pairing request's key, for a bundle
    sealed to it.
    """
    if not isinstance(data, bytes):
        raise TypeError("data must be bytes")
    progress = progress or Silent()
    if len(data) > formats.MAX_OBJECT_BYTES:
        raise FormatError("The file is larger than any credential bundle.")
    kind = formats.peek_kind(data)
    if kind == Kind.PASSPHRASE_SEALED:
        cost = sealed.describe(data)
        if passphrase is None:
            raise BundleRefused(
                "This bundle is sealed with a passphrase, and none was given.",
                "Run the import on a terminal to be asked for it, or pass --passphrase-file.",
            )
        secret = passphrase()
        with progress.waiting(
            f"opening the passphrase-sealed bundle (scrypt, {cost.memory_bytes >> 20} MiB)"
        ):
            data = sealed.open_sealed(data, secret)
        progress.info("passphrase accepted")
        kind = formats.peek_kind(data)
    envelope = None
    if kind == Kind.TRANSPORT_SEALED:
        if transport_key is None:
            raise BundleRefused(
                "This bundle is sealed to a pairing request, and this device has none pending.",
                "Nothing was stored. Run the pairing ceremony again: it makes a new request "
                "(`cloudlet-device pairing-request`) first.",
            )
        envelope, data = transport.open_transport(data, transport_key)
        progress.info("opened the bundle sealed to this device's pairing request")
        kind = formats.peek_kind(data)
    if kind == Kind.DEVICE_BUNDLE:
        raise BundleRefused("This bundle is not signed by its cloudlet; it cannot be trusted.")
    if kind == Kind.IBE_CIPHERTEXT:
        raise BundleRefused(
            "This is a credential sealed to a device key, which arrives as a message.",
            "Nothing was stored. Fetch it with `cloudlet-device messages`.",
        )
    if kind != Kind.SIGNED_DEVICE_BUNDLE:
        what = kind.name.replace("_", " ").lower()
        raise BundleRefused(f"This file holds a {what} object, not a device credential.")
    bundle = bundles.verify_device_bundle(data)
    issuer = bundle.params.cloudlet_id
    if expect_cloudlet is not None and issuer != expect_cloudlet:
        raise BundleRefused(
            f"The bundle was issued by cloudlet {issuer!r}, not {expect_cloudlet!r}.",
            "Nothing was stored. Check that this is the bundle for this device and cloudlet.",
        )
    if envelope is not None:
        ident = bundle.device_key.identity
        if (ident.device_name, issuer) != (envelope.device_id, envelope.cloudlet_id):
            raise IdentityError(
                f"The sealed bundle is addressed to {envelope.device_id!r} from "
                f"{envelope.cloudlet_id!r}, but holds {ident}.",
                "Nothing was stored. The bundle is not genuine; run the pairing ceremony again.",
            )
    check_usable(bundle, now)
    progress.info(f"signature of cloudlet {issuer} verified for {bundle.device_key.identity}")
    return bundle


def import_bundle(
    store: CredentialStore,
    data: bytes,
    passphrase: PassphraseSource | None = None,
    expect_cloudlet: str | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> Imported:
    """``parse_bundle``, then install it as the device's current credential.

    A bundle sealed to the pending pairing request uses up that request:
    its key is removed once the bundle is installed.
    """
    key = None
    if formats.peek_kind(data) == Kind.TRANSPORT_SEALED:
        key = pairing.load(store)
    bundle = parse_bundle(data, passphrase, expect_cloudlet, now, progress, key)
    replaced = None
    if store.has_current():
        try:
            old = store.current()
        except CloudletError:  # a damaged old file is simply replaced
            old = None
        if old is not None and old.device_key.identity != bundle.device_key.identity:
            replaced = str(old.device_key.identity)
    changed = store.install_current(bundle)
    if key is not None:
        pairing.discard(store)
    return Imported(bundle, store.current_path, changed, replaced)
