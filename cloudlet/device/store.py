"""The device's credential store: one directory, mode 0700, files mode 0600.

Layout under the state directory (default ``/var/lib/cloudlet-device``)::

    current.bundle           the credential the device uses now
    next/<cloudlet>.bundle   credentials another cloudlet issued for after a
                             migration, until the device follows its SVMs
                             there (``promote``)

Bundles are written only after every check has passed (signature, issuer,
key against params), and always through ``formats.write_secret_file``: a
crash or a refused bundle leaves the previous file whole and no partial or
temporary file behind. What is stored is the plain bundle encoding; it is
decoded strictly and its key re-checked against its params whenever it is
read, so a damaged file is reported, never half used.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cloudlet import bundles, formats
from cloudlet.bundles import DeviceBundle
from cloudlet.crypto import ibe
from cloudlet.errors import CloudletError, NoCredentialError, StorageError

__all__ = ["CURRENT", "DEFAULT_STATE_DIR", "NEXT_DIR", "CredentialStore"]

DEFAULT_STATE_DIR = Path("/var/lib/cloudlet-device")
CURRENT = "current.bundle"
NEXT_DIR = "next"


class CredentialStore:
    """Reads and atomically replaces the bundles in one state directory."""

    def __init__(self, root: str | os.PathLike = DEFAULT_STATE_DIR) -> None:
        self.root = Path(root)

    @property
    def current_path(self) -> Path:
        return self.root / CURRENT

    def next_path(self, cloudlet_id: str) -> Path:
        return self.root / NEXT_DIR / f"{cloudlet_id}.bundle"

    def _prepare(self, directory: Path) -> None:
        """Create ``directory`` mode 0700; tighten it if it exists and is ours."""
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = directory.stat()
            if not stat.S_ISDIR(st.st_mode):
                raise StorageError(f"{directory} is not a directory.")
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                directory.chmod(0o700)
        except OSError as exc:
            raise StorageError(
                f"Cannot prepare the state directory {directory}: {exc.strerror}.",
                "Run as the user that owns it (root for the default /var/lib/cloudlet-device), "
                "or choose another with --state-dir.",
            ) from exc

    def _load(self, path: Path) -> DeviceBundle | None:
        try:
            with open(path, "rb") as fh:
                data = fh.read(formats.MAX_OBJECT_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"Cannot read {path}: {exc.strerror}.") from exc
        try:
            bundle = bundles.decode_device_bundle(data)
            ibe.check_device_key(bundle.params, bundle.device_key)
        except CloudletError as exc:
            raise NoCredentialError(
                f"The stored credential {path} is damaged ({exc.message}).",
                "Import the bundle again (cloudlet-device import FILE); the damaged file "
                "is replaced.",
            ) from None
        return bundle

    def _save(self, path: Path, bundle: DeviceBundle) -> bool:
        if not isinstance(bundle, DeviceBundle):
            raise TypeError("expected a DeviceBundle")
        self._prepare(self.root)
        self._prepare(path.parent)
        data = bundles.encode_device_bundle(bundle)
        try:
            if path.read_bytes() == data:
                return False
        except FileNotFoundError:
            pass
        except OSError:
            pass  # unreadable: replace it
        formats.write_secret_file(path, data)
        return True

    def current(self) -> DeviceBundle:
        """The credential in use, or NoCredentialError saying how to get one."""
        bundle = self._load(self.current_path)
        if bundle is None:
            raise NoCredentialError(f"This device holds no credential in {self.root}.")
        return bundle

    def has_current(self) -> bool:
        return self.current_path.exists()

    def install_current(self, bundle: DeviceBundle) -> bool:
        """Replace the credential in use; False if it was already exactly this one."""
        return self._save(self.current_path, bundle)

    def install_next(self, bundle: DeviceBundle) -> tuple[Path, bool]:
        """Keep a credential from another cloudlet for after the move to it."""
        path = self.next_path(bundle.params.cloudlet_id)
        return path, self._save(path, bundle)

    def promote(self, cloudlet_id: str) -> DeviceBundle:
        """Make the next credential from ``cloudlet_id`` the one in use.

        The current file is replaced atomically before the next one goes, so a
        crash in between leaves a next credential equal to the current one,
        and promoting it again changes nothing.
        """
        path = self.next_path(cloudlet_id)
        bundle = self._load(path)
        if bundle is None:
            raise NoCredentialError(f"No credential from cloudlet {cloudlet_id} is waiting.")
        self._save(self.current_path, bundle)
        try:
            path.unlink()
        except OSError as exc:
            raise StorageError(f"Cannot remove {path}: {exc.strerror}.") from exc
        return bundle

    def next_bundles(self) -> list[tuple[Path, DeviceBundle]]:
        """Every waiting next credential (a damaged one is an error, not skipped)."""
        directory = self.root / NEXT_DIR
        if not directory.is_dir():
            return []
        out = []
        for path in sorted(directory.glob("*.bundle")):
            bundle = self._load(path)
            if bundle is not None:
                out.append((path, bundle))
        return out
