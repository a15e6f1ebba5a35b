"""Modes are set on what exists, not only on what is created: the database and the socket dir."""

from __future__ import annotations

import errno
import os
import stat

import pytest
from test_manager_support import Running, make_config, make_pki

from cloudlet.errors import ConfigError, StorageError
from cloudlet.manager import perms
from cloudlet.manager.store import Store


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _db_files(db) -> list:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def test_an_existing_readable_database_and_its_wal_are_made_0600(tmp_path):
    db = tmp_path / "manager.db"
    Store(db).close()
    os.chmod(db, 0o644)  # restored from a backup, or written by an older release
    for leftover in _db_files(db)[1:]:  # left by a crash, as SQLite made them: like the db
        leftover.touch(mode=0o644)
        os.chmod(leftover, 0o644)
    store = Store(db)
    try:
        assert [_mode(p) for p in _db_files(db)] == [0o600, 0o600, 0o600]
        assert store.schema_version() >= 1
    finally:
        store.close()


def test_a_database_that_cannot_be_made_private_is_refused(tmp_path, monkeypatch):
    db = tmp_path / "manager.db"
    Store(db).close()
    os.chmod(db, 0o644)

    def refuse(path, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(perms.os, "chmod", refuse)
    with pytest.raises(StorageError, match="Cannot make the Manager database file") as refused:
        Store(db)
    assert f"chmod 600 {db}" in refused.value.hint
    assert _mode(db) == 0o644  # nothing else was done to it


def test_a_mode_the_file_system_does_not_keep_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "f"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    monkeypatch.setattr(perms.os, "chmod", lambda _path, _mode: None)  # like vfat
    with pytest.raises(StorageError, match="stays mode 644"):
        perms.ensure_mode(path, 0o600, "test file")
    assert perms.ensure_mode(tmp_path / "missing", 0o600, "test file") is False


def test_an_existing_admin_socket_directory_is_made_0700(tmp_path, master_a):
    cfg = make_config(tmp_path, make_pki(tmp_path, "cl-alpha"), master_a)
    cfg.admin_socket.parent.mkdir(mode=0o755)
    os.chmod(cfg.admin_socket.parent, 0o755)
    run = Running(cfg)
    try:
        assert _mode(cfg.admin_socket.parent) == 0o700
        assert _mode(cfg.admin_socket) == 0o600
    finally:
        run.stop()


def test_a_shared_directory_is_refused_not_locked(tmp_path, master_a):
    cfg = make_config(tmp_path, make_pki(tmp_path, "cl-alpha"), master_a)
    shared = cfg.admin_socket.parent
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    (shared / "other-service.sock").touch()
    with pytest.raises(ConfigError, match="not the Manager's own"):
        Running(cfg)
    assert _mode(shared) == 0o755
