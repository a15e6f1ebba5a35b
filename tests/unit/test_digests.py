"""digests.sha256_file: blockwise, and O_NOFOLLOW when asked."""

from __future__ import annotations

import hashlib

import pytest

from cloudlet.digests import sha256_file


def test_matches_hashlib_across_blocks(tmp_path):
    data = bytes(range(256)) * 9000  # more than two 1 MiB blocks
    path = tmp_path / "image"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "image", follow_symlinks=False) == sha256_file(path)


def test_a_symlink_is_refused_when_not_following(tmp_path):
    (tmp_path / "target").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    assert sha256_file(tmp_path / "link") == hashlib.sha256(b"x").hexdigest()
    with pytest.raises(OSError):
        sha256_file(tmp_path / "link", follow_symlinks=False)
