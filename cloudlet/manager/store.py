"""The Manager's state: SQLite repositories for SVMs, devices, peers and messages.

All state lives in one SQLite file (WAL, foreign keys, a schema version), so
a restart or a power cut in a vehicle loses nothing that was acknowledged:
every change is one transaction, committed before the API answers. The
file holds per-device EAP passwords, so it and its -wal and -shm files are
made 0600 at every open, not only when created (``perms``).

Messages are kept until the device acknowledges them (KD-Cloudlet deleted
them on read, so a dropped reply lost the credentials for good).

Devices are stored under their *name* on this cloudlet: the bare id for
this cloudlet's own devices, ``<id>@<home>`` for a visitor whose home is
another cloudlet (``Identity.device_name``), so a visitor and a local device
with the same id are two records that can never be confused. A visitor also
records ``via``, the paired cloudlet that brought it: only that peer may ask
for its credentials again.

A service VM received from a peer is ``pending`` until its migration has
completed (the peer commits it once the VM runs here); a pending record is
not shown to devices and is dropped when the migration is aborted or after
``PENDING_SVM_TTL``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloudlet.crypto.auth import ReplayCache
from cloudlet.errors import (
    ConflictError,
    NotFoundError,
    ReplayError,
    StorageError,
)
from cloudlet.manager import perms

__all__ = [
    "SCHEMA_VERSION",
    "CloudletRecord",
    "DeviceRecord",
    "MessageRecord",
    "PersistentReplayCache",
    "Store",
    "SvmRecord",
]

SCHEMA_VERSION = 3
PENDING_SVM_TTL = 6 * 3600  # seconds: longer than any migration over a tactical link

_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE cloudlets (
    cloudlet_id    TEXT PRIMARY KEY,
    ca_pem         TEXT NOT NULL,
    ca_fingerprint TEXT NOT NULL UNIQUE,
    params         BLOB NOT NULL,
    api_host       TEXT NOT NULL,
    api_port       INTEGER NOT NULL CHECK (api_port BETWEEN 1 AND 65535),
    updated_at     INTEGER NOT NULL,
    pending        INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1)),
    eap_password   TEXT NOT NULL DEFAULT '',
    network        TEXT NOT NULL DEFAULT ''
);
CREATE TABLE devices (
    device_id    TEXT PRIMARY KEY,
    not_before   INTEGER NOT NULL,
    not_after    INTEGER NOT NULL CHECK (not_after > not_before),
    revoked      INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    eap_password TEXT NOT NULL,
    updated_at   INTEGER NOT NULL,
    via          TEXT NOT NULL DEFAULT '' CHECK ((via = '') = (instr(device_id, '@') = 0))
);
CREATE TABLE device_services (
    device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    service_id TEXT NOT NULL,
    PRIMARY KEY (device_id, service_id)
);
CREATE TABLE svms (
    service_id TEXT PRIMARY KEY,
    fqdn       TEXT NOT NULL,
    memory_mib INTEGER NOT NULL CHECK (memory_mib > 0),
    ports      TEXT NOT NULL,
    origin     TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    state      TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'pending'))
);
CREATE TABLE svm_images (
    service_id TEXT NOT NULL REFERENCES svms (service_id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    sha256     TEXT NOT NULL CHECK (length(sha256) = 64),
    PRIMARY KEY (service_id, name)
);
CREATE TABLE messages (
    message_id TEXT PRIMARY KEY,
    device_id  TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    issuer     TEXT NOT NULL,
    body       BLOB,
    created_at INTEGER NOT NULL,
    acked_at   INTEGER
);
CREATE INDEX messages_pending ON messages (device_id, acked_at);
CREATE TABLE seen_proofs (
    identity   TEXT NOT NULL,
    nonce      BLOB NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (identity, nonce)
);
CREATE INDEX seen_proofs_expiry ON seen_proofs (expires_at);
"""

# From each older schema version to the next; a release that reads version N
# can open every database an earlier release wrote.
_UPGRADES = {
    1: """
ALTER TABLE devices ADD COLUMN
    via TEXT NOT NULL DEFAULT '' CHECK ((via = '') = (instr(device_id, '@') = 0));
ALTER TABLE svms ADD COLUMN
    state TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'pending'));
""",
    2: """
ALTER TABLE cloudlets ADD COLUMN
    pending INTEGER NOT NULL DEFAULT 0 CHECK (pending IN (0, 1));
ALTER TABLE cloudlets ADD COLUMN eap_password TEXT NOT NULL DEFAULT '';
ALTER TABLE cloudlets ADD COLUMN network TEXT NOT NULL DEFAULT '';
""",
}


@dataclass(frozen=True)
class CloudletRecord:
    cloudlet_id: str
    ca_pem: str
    ca_fingerprint: str
    params: bytes
    api_host: str
    api_port: int
    # Stored by a pairing exchange, not yet confirmed by the first
    # authenticated call between the two Managers (POST /peer/hello): trusted
    # for that call only.
    pending: bool = False
    # The EAP-pwd password of identity ``peer:<cloudlet_id>`` on our field
    # network, which we issued to the peer ("" for none) ...
    eap_password: str = field(default="", repr=False)
    # ... and the credential the peer issued us for its own network, as JSON
    # {ssid, identity, password, method} ("" for none).
    network: str = field(default="", repr=False)

    @property
    def eap_identity(self) -> str:
        """Our field network's name for the peer: no device id can take it (no colon)."""
        return f"peer:{self.cloudlet_id}"


_CLOUDLET_COLUMNS = (
    "cloudlet_id, ca_pem, ca_fingerprint, params, api_host, api_port, pending, eap_password, "
    "network"
)


def _cloudlet_row(row: tuple) -> CloudletRecord:
    *fields, pending, eap_password, network = row
    return CloudletRecord(*fields, pending=bool(pending), eap_password=eap_password,
                          network=network)


@dataclass(frozen=True, repr=False)
class DeviceRecord:
    device_id: str  # the name here: ``tablet-07``, or ``tablet-07@cl-bravo`` for a visitor
    not_before: int
    not_after: int
    revoked: bool
    eap_password: str
    services: tuple[str, ...]
    via: str = ""  # the peer that brought a visitor; "" for this cloudlet's own devices

    def __repr__(self) -> str:
        return f"DeviceRecord({self.device_id!r}, revoked={self.revoked}, <password>)"

    @property
    def home(self) -> str | None:
        """A visitor's home cloudlet; None for this cloudlet's own devices."""
        return self.device_id.partition("@")[2] or None

    def public(self) -> dict:
        """What the admin API shows: everything but the EAP password."""
        return {
            "device_id": self.device_id,
            "home": self.home,
            "via": self.via or None,
            "not_before": self.not_before,
            "not_after": self.not_after,
            "revoked": self.revoked,
            "services": list(self.services),
        }


@dataclass(frozen=True)
class SvmRecord:
    service_id: str
    fqdn: str
    memory_mib: int
    ports: tuple[int, ...]
    images: tuple[tuple[str, str], ...]  # (name, sha256), sorted by name
    origin: str  # "local", or the peer it is migrating (or has migrated) from
    state: str = "active"  # "pending" while its migration from ``origin`` runs

    def public(self) -> dict:
        return {
            "service_id": self.service_id,
            "fqdn": self.fqdn,
            "memory_mib": self.memory_mib,
            "ports": list(self.ports),
            "images": [{"name": n, "sha256": h} for n, h in self.images],
            "origin": self.origin,
            "state": self.state,
        }


@dataclass(frozen=True)
class MessageRecord:
    message_id: str
    device_id: str
    kind: str
    issuer: str
    body: bytes | None
    created_at: int
    acked_at: int | None


class Store:
    """One SQLite connection; each public method is one transaction.

    The Manager calls it from the event loop thread only, so one connection
    without extra locking is enough and keeps every write serialised.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            if not self.path.exists():
                # Create it 0600 before SQLite writes a byte (it holds EAP passwords).
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
            self._make_private()  # a file that existed keeps its old mode otherwise
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"Cannot open the Manager database {self.path}: {exc}.") from exc
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA foreign_keys = ON")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA busy_timeout = 5000")
        self._migrate()
        self._make_private()  # the -wal and -shm files SQLite has created by now

    def _make_private(self) -> None:
        """The database and its -wal and -shm files: 0600 each, however they came to be.

        SQLite gives the -wal and -shm files the database's mode, and the
        -wal holds recent pages (EAP passwords among them) in clear.
        """
        for suffix in ("", "-wal", "-shm"):
            perms.ensure_mode(Path(f"{self.path}{suffix}"), 0o600, "Manager database file")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: no half writes."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _migrate(self) -> None:
        with self._tx() as db:
            exists = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
            ).fetchone()
            if not exists:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            (version,) = db.execute("SELECT version FROM schema_version").fetchone()
            while version in _UPGRADES:
                for statement in _UPGRADES[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                version += 1
                db.execute("UPDATE schema_version SET version = ?", (version,))
            if version != SCHEMA_VERSION:
                raise StorageError(
                    f"The Manager database {self.path} has schema version {version}; "
                    f"this release uses {SCHEMA_VERSION}.",
                    "Install the cloudlet release that wrote it, or restore a matching backup.",
                )

    def schema_version(self) -> int:
        return self._db.execute("SELECT version FROM schema_version").fetchone()[0]

    # --- paired cloudlets ---------------------------------------------------

    def put_cloudlet(self, rec: CloudletRecord) -> bool:
        """Insert or replace a paired cloudlet; True if anything changed."""
        with self._tx() as db:
            old = self._cloudlet(db, rec.cloudlet_id)
            if old == rec:
                return False
            clash = db.execute(
                "SELECT cloudlet_id FROM cloudlets WHERE ca_fingerprint = ? AND cloudlet_id != ?",
                (rec.ca_fingerprint, rec.cloudlet_id),
            ).fetchone()
            if clash:
                raise ConflictError(
                    f"Cloudlet {clash[0]!r} is already paired with this CA certificate.",
                    "Each cloudlet has its own CA; remove the stale pairing first.",
                )
            db.execute(
                "INSERT OR REPLACE INTO cloudlets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    rec.cloudlet_id,
                    rec.ca_pem,
                    rec.ca_fingerprint,
                    rec.params,
                    rec.api_host,
                    rec.api_port,
                    int(time.time()),
                    int(rec.pending),
                    rec.eap_password,
                    rec.network,
                ),
            )
            return True

    def confirm_cloudlet(self, cloudlet_id: str) -> bool:
        """End a peer's pending state; True if it was pending."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE cloudlets SET pending = 0, updated_at = ? "
                "WHERE cloudlet_id = ? AND pending = 1",
                (int(time.time()), cloudlet_id),
            )
            return cur.rowcount > 0

    def remove_cloudlet(self, cloudlet_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM cloudlets WHERE cloudlet_id = ?", (cloudlet_id,))
            return cur.rowcount > 0

    @staticmethod
    def _cloudlet(db: sqlite3.Connection, cloudlet_id: str) -> CloudletRecord | None:
        row = db.execute(
            f"SELECT {_CLOUDLET_COLUMNS} FROM cloudlets WHERE cloudlet_id = ?", (cloudlet_id,)
        ).fetchone()
        return _cloudlet_row(row) if row else None

    def get_cloudlet(self, cloudlet_id: str) -> CloudletRecord | None:
        return self._cloudlet(self._db, cloudlet_id)

    def cloudlets(self) -> list[CloudletRecord]:
        rows = self._db.execute(
            f"SELECT {_CLOUDLET_COLUMNS} FROM cloudlets ORDER BY cloudlet_id"
        ).fetchall()
        return [_cloudlet_row(r) for r in rows]

    # --- paired devices -----------------------------------------------------

    def put_device(
        self,
        device_id: str,
        not_before: int,
        not_after: int,
        revoked: bool = False,
        services: tuple[str, ...] = (),
        eap_password: str | None = None,
    ) -> bool:
        """Insert or update one of this cloudlet's own devices, or update a visitor.

        Keeps its EAP password unless one is given. Visitors (``id@home``)
        only arrive through ``adopt_devices``; here they can be revoked or
        changed, never created.
        """
        with self._tx() as db:
            via = ""
            if "@" in device_id:
                old = self._device(db, device_id)
                if old is None:
                    raise NotFoundError(
                        f"No visiting device {device_id!r} on this cloudlet.",
                        "Pair devices under their own id; visitors come with a migration.",
                    )
                via = old.via
            return self._put_device(
                db, device_id, not_before, not_after, revoked, services, eap_password, via
            )

    def _put_device(
        self,
        db: sqlite3.Connection,
        device_id: str,
        not_before: int,
        not_after: int,
        revoked: bool,
        services: tuple[str, ...],
        eap_password: str | None,
        via: str = "",
    ) -> bool:
        old = self._device(db, device_id)
        password = eap_password or (old.eap_password if old else secrets.token_urlsafe(24))
        new = DeviceRecord(
            device_id, not_before, not_after, revoked, password, tuple(sorted(set(services))), via
        )
        if old == new:
            return False
        db.execute(
            "INSERT INTO devices (device_id, not_before, not_after, revoked, eap_password, "
            "updated_at, via) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE "
            "SET not_before = excluded.not_before, not_after = excluded.not_after, "
            "revoked = excluded.revoked, eap_password = excluded.eap_password, "
            "updated_at = excluded.updated_at, via = excluded.via",
            (device_id, not_before, not_after, int(revoked), password, int(time.time()), via),
        )
        db.execute("DELETE FROM device_services WHERE device_id = ?", (device_id,))
        db.executemany(
            "INSERT INTO device_services (device_id, service_id) VALUES (?, ?)",
            [(device_id, s) for s in new.services],
        )
        return True

    def check_adoptable(self, devices: list[str], via: str) -> list[DeviceRecord | None]:
        """The records of visitors ``via`` may bring (``id@home`` names); refuse the rest.

        A peer is trusted for its own devices only: never for this
        cloudlet's own devices, never for a visitor another peer brought,
        and never for a device revoked here. Nothing stored here (key,
        EAP password) is ever handed to another peer.
        """
        return self._check_adoptable(self._db, devices, via)

    def _check_adoptable(
        self, db: sqlite3.Connection, devices: list[str], via: str
    ) -> list[DeviceRecord | None]:
        out, refused = [], []
        for name in devices:
            if "@" not in name or not via:
                raise ValueError(f"{name!r} is not a visitor's name")
            old = self._device(db, name)
            if old is not None and (old.via != via or old.revoked):
                why = "revoked here" if old.revoked else f"brought by {old.via}"
                refused.append(f"{name} ({why})")
            out.append(old)
        if refused:
            raise ConflictError(
                f"Device(s) {', '.join(refused)} cannot be issued credentials for {via!r}.",
                "Nothing was issued. A cloudlet may only ask for its own devices; leave these "
                "out, or the admin here removes the stale record first.",
            )
        return out

    def adopt_devices(
        self, devices: list[tuple[str, int, int, str]], service_id: str | None, via: str
    ) -> None:
        """Pair visitors (``id@home``, not_before, not_after, EAP password) brought by ``via``.

        The passwords are those sealed into the bundles just issued. The
        checks of ``check_adoptable`` run again inside the transaction, so a
        device revoked or taken over meanwhile refuses the whole request.
        """
        with self._tx() as db:
            olds = self._check_adoptable(db, [d[0] for d in devices], via)
            for (device_id, not_before, not_after, password), old in zip(
                devices, olds, strict=True
            ):
                services = set(old.services) if old else set()
                if service_id:
                    services.add(service_id)
                lo = min(not_before, old.not_before) if old else not_before
                hi = max(not_after, old.not_after) if old else not_after
                self._put_device(db, device_id, lo, hi, False, tuple(services), password, via)

    def remove_device(self, device_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM devices WHERE device_id = ?", (device_id,))
            return cur.rowcount > 0

    @staticmethod
    def _device(db: sqlite3.Connection, device_id: str) -> DeviceRecord | None:
        row = db.execute(
            "SELECT device_id, not_before, not_after, revoked, eap_password, via "
            "FROM devices WHERE device_id = ?",
            (device_id,),
        ).fetchone()
        if not row:
            return None
        services = db.execute(
            "SELECT service_id FROM device_services WHERE device_id = ? ORDER BY service_id",
            (device_id,),
        ).fetchall()
        return DeviceRecord(
            row[0], row[1], row[2], bool(row[3]), row[4], tuple(s[0] for s in services), row[5]
        )

    def get_device(self, device_id: str) -> DeviceRecord | None:
        return self._device(self._db, device_id)

    def devices(self, service_id: str | None = None) -> list[DeviceRecord]:
        if service_id is None:
            rows = self._db.execute("SELECT device_id FROM devices ORDER BY device_id")
        else:
            rows = self._db.execute(
                "SELECT device_id FROM device_services WHERE service_id = ? ORDER BY device_id",
                (service_id,),
            )
        ids = [r[0] for r in rows.fetchall()]
        return [d for i in ids if (d := self._device(self._db, i))]

    # --- service VMs ----------------------------------------------------------

    def put_svm(self, rec: SvmRecord) -> bool:
        """Insert or replace a record as given (the admin's own import)."""
        with self._tx() as db:
            return self._put_svm(db, rec)

    def _put_svm(self, db: sqlite3.Connection, rec: SvmRecord) -> bool:
        if self._svm(db, rec.service_id) == rec:
            return False
        db.execute(
            "INSERT INTO svms (service_id, fqdn, memory_mib, ports, origin, updated_at, state) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (service_id) DO UPDATE "
            "SET fqdn = excluded.fqdn, memory_mib = excluded.memory_mib, "
            "ports = excluded.ports, origin = excluded.origin, "
            "updated_at = excluded.updated_at, state = excluded.state",
            (
                rec.service_id,
                rec.fqdn,
                rec.memory_mib,
                json.dumps(list(rec.ports)),
                rec.origin,
                int(time.time()),
                rec.state,
            ),
        )
        db.execute("DELETE FROM svm_images WHERE service_id = ?", (rec.service_id,))
        db.executemany(
            "INSERT INTO svm_images (service_id, name, sha256) VALUES (?, ?, ?)",
            [(rec.service_id, n, h) for n, h in rec.images],
        )
        return True

    def _peer_svm(self, db: sqlite3.Connection, service_id: str, peer: str) -> SvmRecord | None:
        """The record ``peer`` may act on, after dropping stale pending ones; else refuse."""
        db.execute(
            "DELETE FROM svms WHERE state = 'pending' AND updated_at < ?",
            (int(time.time()) - PENDING_SVM_TTL,),
        )
        old = self._svm(db, service_id)
        if old is None or (old.origin == peer and old.state == "pending"):
            return old
        if old.origin == "local":
            owner = "this cloudlet's own service"
        elif old.state == "active":
            owner = f"already running here (from {old.origin})"
        else:
            owner = f"migrating here from {old.origin}"
        raise ConflictError(
            f"Service VM {service_id!r} is {owner}; {peer!r} cannot change it.",
            "Nothing was changed. A cloudlet may only register the service VMs it is "
            "migrating here itself.",
        )

    def receive_svm(self, rec: SvmRecord) -> bool:
        """Record a service VM that ``rec.origin`` is migrating here, as pending."""
        if rec.state != "pending" or rec.origin == "local":
            raise ValueError("a received service VM is pending and comes from a peer")
        with self._tx() as db:
            self._peer_svm(db, rec.service_id, rec.origin)
            return self._put_svm(db, rec)

    def commit_svm(self, service_id: str, peer: str) -> bool:
        """The migration from ``peer`` has completed: devices may now be sent here."""
        with self._tx() as db:
            old = self._svm(db, service_id)
            if old is not None and old.origin == peer and old.state == "active":
                return False  # committed before: a retried call changes nothing
            if self._peer_svm(db, service_id, peer) is None:
                raise NotFoundError(
                    f"Service VM {service_id!r} is not migrating here from {peer!r}.",
                    "Send its metadata first (POST /peer/svms), or it was dropped after "
                    f"{PENDING_SVM_TTL // 3600} h.",
                )
            db.execute(
                "UPDATE svms SET state = 'active', updated_at = ? WHERE service_id = ?",
                (int(time.time()), service_id),
            )
            return True

    def abort_svm(self, service_id: str, peer: str) -> bool:
        """The migration from ``peer`` failed: forget its pending record."""
        with self._tx() as db:
            if self._peer_svm(db, service_id, peer) is None:
                return False
            db.execute("DELETE FROM svms WHERE service_id = ?", (service_id,))
            return True

    def remove_svm(self, service_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM svms WHERE service_id = ?", (service_id,)).rowcount > 0

    @staticmethod
    def _svm(db: sqlite3.Connection, service_id: str) -> SvmRecord | None:
        row = db.execute(
            "SELECT service_id, fqdn, memory_mib, ports, origin, state FROM svms "
            "WHERE service_id = ?",
            (service_id,),
        ).fetchone()
        if not row:
            return None
        images = db.execute(
            "SELECT name, sha256 FROM svm_images WHERE service_id = ? ORDER BY name",
            (service_id,),
        ).fetchall()
        return SvmRecord(
            row[0],
            row[1],
            row[2],
            tuple(json.loads(row[3])),
            tuple((n, h) for n, h in images),
            row[4],
            row[5],
        )

    def get_svm(self, service_id: str) -> SvmRecord | None:
        return self._svm(self._db, service_id)

    def svms(self) -> list[SvmRecord]:
        ids = [r[0] for r in self._db.execute("SELECT service_id FROM svms ORDER BY service_id")]
        return [s for i in ids if (s := self._svm(self._db, i))]

    # --- messages -------------------------------------------------------------

    def put_message(self, device_id: str, kind: str, issuer: str, body: bytes) -> str:
        """Queue a message for a device; returns its (unguessable) id."""
        return self.put_messages([(device_id, kind, issuer, body)])[0]

    def put_messages(self, messages: list[tuple[str, str, str, bytes]]) -> list[str]:
        """Queue (device_id, kind, issuer, body) messages in one transaction: all or none."""
        ids = [secrets.token_hex(16) for _ in messages]
        now = int(time.time())
        with self._tx() as db:
            for device_id in dict.fromkeys(m[0] for m in messages):
                if not self._device(db, device_id):
                    raise NotFoundError(
                        f"Device {device_id!r} is not paired with this cloudlet.",
                        "Nothing was queued. Pair the device first, or leave it out.",
                    )
            db.executemany(
                "INSERT INTO messages (message_id, device_id, kind, issuer, body, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(mid, *m, now) for mid, m in zip(ids, messages, strict=True)],
            )
        return ids

    def pending_messages(self, device_id: str) -> list[MessageRecord]:
        """Unacknowledged messages, oldest first. Reading changes nothing."""
        rows = self._db.execute(
            "SELECT message_id, device_id, kind, issuer, body, created_at, acked_at "
            "FROM messages WHERE device_id = ? AND acked_at IS NULL "
            "ORDER BY created_at, rowid",
            (device_id,),
        ).fetchall()
        return [MessageRecord(*r) for r in rows]

    def all_messages(self, device_id: str | None = None) -> list[MessageRecord]:
        query = (
            "SELECT message_id, device_id, kind, issuer, body, created_at, acked_at FROM messages"
        )
        if device_id is None:
            rows = self._db.execute(query + " ORDER BY created_at, rowid")
        else:
            rows = self._db.execute(
                query + " WHERE device_id = ? ORDER BY created_at, rowid", (device_id,)
            )
        return [MessageRecord(*r) for r in rows.fetchall()]

    def ack_message(self, device_id: str, message_id: str) -> bool:
        """Mark acknowledged and drop the ciphertext; False if it was acked before.

        Another device's message id answers exactly like an unknown one, so
        ids cannot be probed.
        """
        with self._tx() as db:
            row = db.execute(
                "SELECT acked_at FROM messages WHERE message_id = ? AND device_id = ?",
                (message_id, device_id),
            ).fetchone()
            if row is None:
                raise NotFoundError(f"No message {message_id!r} for this device.")
            if row[0] is not None:
                return False
            db.execute(
                "UPDATE messages SET acked_at = ?, body = NULL WHERE message_id = ?",
                (int(time.time()), message_id),
            )
            return True

    # --- replay protection across restarts ------------------------------------

    def record_proof(self, identity: str, nonce: bytes, expires_at: float, now: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM seen_proofs WHERE expires_at <= ?", (now,))
            try:
                db.execute(
                    "INSERT INTO seen_proofs (identity, nonce, expires_at) VALUES (?, ?, ?)",
                    (identity, nonce, expires_at),
                )
            except sqlite3.IntegrityError:
                raise ReplayError(f"Replayed authentication from {identity}.") from None


class PersistentReplayCache(ReplayCache):
    """The in-memory replay cache, backed by SQLite so a restart forgets nothing.

    Without this, a proof captured just before a restart could be replayed
    right after it, while still inside its time window.
    """

    def __init__(self, store: Store, max_entries: int = 100_000) -> None:
        super().__init__(max_entries)
        self.store = store

    def add(self, identity: str, nonce: bytes, expires_at: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        super().add(identity, nonce, expires_at, now)
        self.store.record_proof(identity, nonce, expires_at, now)
