"""The device's pairing request: a one-time key its first bundle is sealed to.

``cloudlet-device pairing-request`` makes an X25519 key pair, keeps the
private half in the state directory (``pairing.key``, mode 0600) and prints
the public half; the cloudlet seals the bundle to it
(``cloudlet.transport``), so the admin's laptop that relays it only sees
ciphertext. The key is removed once a bundle sealed to it is installed. A
second request while one is pending returns the same public key, so a
repeated ceremony step does not strand a bundle already on its way.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cloudlet import formats
from cloudlet.crypto import curve
from cloudlet.device.store import CredentialStore
from cloudlet.errors import BundleRefused, StorageError
from cloudlet.transport import KEY_BYTES, TransportKey

__all__ = ["PAIRING_KEY", "PairingRequest", "discard", "load", "request"]

PAIRING_KEY = "pairing.key"


@dataclass(frozen=True)
class PairingRequest:
    """What the device shows the admin: the public key and a short fingerprint."""

    public_key: bytes
    created: bool

    @property
    def public_key_b64(self) -> str:
        return base64.b64encode(self.public_key).decode("ascii")

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()


def _path(store: CredentialStore) -> Path:
    return store.root / PAIRING_KEY


def load(store: CredentialStore) -> TransportKey | None:
    """The pending pairing key, or None when there is no request."""
    try:
        raw = _path(store).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"Cannot read the pairing key {_path(store)}: {exc.strerror}.") from None
    if len(raw) != KEY_BYTES:
        raise BundleRefused(
            f"The pairing key {_path(store)} is damaged.",
            "Nothing was stored. Run `cloudlet-device pairing-request --new`, then the "
            "pairing ceremony again.",
        )
    return TransportKey(raw)


def request(
    store: CredentialStore, new: bool = False, rng: curve.Rng | None = None
) -> PairingRequest:
    """The pending request's public key, made (0600) first if there is none or ``new``."""
    key = None if new else load(store)
    if key is not None:
        return PairingRequest(key.public, False)
    key = TransportKey.generate(rng)
    store._prepare(store.root)
    formats.write_secret_file(_path(store), key.private)
    return PairingRequest(key.public, True)


def discard(store: CredentialStore) -> bool:
    """Forget the pairing key (after its bundle was installed)."""
    try:
        os.unlink(_path(store))
    except FileNotFoundError:
        return False
    return True
