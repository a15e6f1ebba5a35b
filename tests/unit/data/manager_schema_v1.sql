-- The Manager database as release 0.1.0 (schema version 1) created it: the upgrade test starts from it.
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE cloudlets (
    cloudlet_id    TEXT PRIMARY KEY,
    ca_pem         TEXT NOT NULL,
    ca_fingerprint TEXT NOT NULL UNIQUE,
    params         BLOB NOT NULL,
    api_host       TEXT NOT NULL,
    api_port       INTEGER NOT NULL CHECK (api_port BETWEEN 1 AND 65535),
    updated_at     INTEGER NOT NULL
);
CREATE TABLE devices (
    device_id    TEXT PRIMARY KEY,
    not_before   INTEGER NOT NULL,
    not_after    INTEGER NOT NULL CHECK (not_after > not_before),
    revoked      INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    eap_password TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
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
    updated_at INTEGER NOT NULL
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
