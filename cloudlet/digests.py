"""SHA-256 of a file, the one way every part of the project computes it.

Manifests, SVM images and the modules that report digests all read files
that can be large (disk images), so the file is hashed in blocks, never
read whole.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["sha256_file"]

_BLOCK = 1 << 20


def sha256_file(path: str | os.PathLike, follow_symlinks: bool = True) -> str:
    """Lowercase hex SHA-256 of the file's bytes.

    ``follow_symlinks=False`` opens with O_NOFOLLOW, for a scanner that has
    already lstat()ed the path: a file swapped for a symlink since then is
    refused (OSError), not followed.
    """
    flags = os.O_RDONLY | (0 if follow_symlinks else os.O_NOFOLLOW)
    digest = hashlib.sha256()
    with os.fdopen(os.open(path, flags), "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()
