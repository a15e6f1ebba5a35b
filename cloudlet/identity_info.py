"""What an admin compares to know a cloudlet: its public identity, read-only.

The delivery record, pairing and the field inventory's ``known_hosts`` all
need the same few public facts: the cloudlet id, its CA fingerprint, the
digest of its IBE public parameters and its SSH host keys. They are read
here, in one format (fingerprints and digests as lowercase hex, host keys as
OpenSSH ``type base64`` lines), and nothing is ever written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cloudlet import formats, pki
from cloudlet.errors import CloudletError, StorageError

__all__ = ["CloudletIdentity", "read_host_keys", "read_identity"]

SSH_DIR = Path("/etc/ssh")


@dataclass(frozen=True)
class CloudletIdentity:
    cloudlet_id: str
    ca_fingerprint: str
    params_digest: str
    host_keys: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict:
        return {
            "cloudlet_id": self.cloudlet_id,
            "ca_fingerprint": self.ca_fingerprint,
            "params_digest": self.params_digest,
            "host_keys": list(self.host_keys),
        }


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StorageError(
            f"Cannot read the {what} {path}: {exc.strerror}.",
            "Run the setup ceremony on this cloudlet first.",
        ) from exc


def read_host_keys(ssh_dir: str | os.PathLike = SSH_DIR) -> tuple[str, ...]:
    """The host's SSH public keys as ``type base64`` (no comment), sorted."""
    keys = []
    for path in sorted(Path(ssh_dir).glob("ssh_host_*_key.pub")):
        words = _read(path, "SSH host key").decode("ascii", "replace").split()
        if len(words) < 2 or not words[0].startswith(("ssh-", "ecdsa-")):
            raise StorageError(f"The SSH host key {path} is not an OpenSSH public key.")
        keys.append(f"{words[0]} {words[1]}")
    return tuple(sorted(keys))


def read_identity(
    ca_cert: str | os.PathLike,
    ibe_params: str | os.PathLike,
    ssh_dir: str | os.PathLike | None = SSH_DIR,
) -> CloudletIdentity:
    """Read the cloudlet's public identity; ``ssh_dir=None`` leaves host keys out."""
    ca_pem = _read(Path(ca_cert), "CA certificate")
    try:
        params = formats.decode_params(_read(Path(ibe_params), "IBE parameters"))
        fingerprint = pki.fingerprint(ca_pem)
    except CloudletError as exc:
        raise StorageError(f"{exc.message} ({ca_cert}, {ibe_params})", exc.hint) from None
    host_keys = read_host_keys(ssh_dir) if ssh_dir is not None else ()
    return CloudletIdentity(params.cloudlet_id, fingerprint, params.digest.hex(), host_keys)
