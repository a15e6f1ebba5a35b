"""The Manager's configuration file (TOML or JSON), checked before anything starts.

The cloudlet_manager role renders it. Every key is checked here with a
message naming the key, so a typo fails at start-up with a clear error
instead of at the first migration. Example (TOML)::

    cloudlet_id = "cl-alpha"
    zone = "alpha.cloudlet"
    fqdn = "manager.alpha.cloudlet"
    listen_hosts = ["10.20.0.1", "10.30.0.1"]
    listen_port = 8443
    db = "/var/lib/cloudlet/manager.db"
    admin_socket = "/run/cloudlet-manager/admin.sock"

    [tls]
    ca_cert = "/etc/cloudlet/pki/ca.pem"
    server_cert = "/etc/cloudlet/pki/manager.pem"
    server_key = "/etc/cloudlet/pki/private/manager.key"

    [ibe]
    master_key = "/etc/cloudlet/ibe_master.key"

    [network]
    ssid = "cloudlet-alpha"
    eap_method = "pwd"

    [discovery]
    enabled = true
    interfaces = ["10.20.0.1"]

    [limits]                      # all optional; LIMITS lists each range
    max_connections = 1024        # keep below the unit's LimitNOFILE
    header_timeout = 10           # seconds
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudlet.crypto.identity import normalise_id
from cloudlet.errors import CloudletError, ConfigError

__all__ = ["DEFAULT_MAX_BODY", "LIMITS", "Config", "load_config"]

DEFAULT_MAX_BODY = 256 * 1024

# The [limits] keys and their allowed ranges (the defaults are Config's). A
# limit of 0 or less would switch the protection off, so neither is allowed
# (credential_workers is no protection: 0 means one per CPU).
LIMITS: dict[str, tuple[type, float, float]] = {
    "max_body_bytes": (int, 1024, 64 * 1024 * 1024),
    "device_max_body_bytes": (int, 256, 64 * 1024),
    "max_devices_per_request": (int, 1, 1000),
    "credential_workers": (int, 0, 64),
    "max_connections": (int, 1, 65536),
    "handshake_timeout": (float, 0.1, 600),
    "header_timeout": (float, 0.1, 600),
    "body_timeout": (float, 0.1, 3600),
    "keepalive_timeout": (float, 0.1, 3600),
    "auth_failures": (int, 1, 10_000),
    "auth_failure_window": (float, 1, 86_400),
    "auth_cooldown": (float, 1, 86_400),
    "auth_max_sources": (int, 16, 1_000_000),
}


@dataclass(frozen=True)
class Config:
    cloudlet_id: str
    zone: str
    fqdn: str
    db: Path
    admin_socket: Path
    ca_cert: Path
    server_cert: Path
    server_key: Path
    master_key: Path
    # The field and pairing-link addresses; "0.0.0.0" would answer on every network.
    listen_hosts: tuple[str, ...] = ("0.0.0.0",)
    listen_port: int = 8443
    api_host: str = ""  # what devices are told to dial; defaults to fqdn
    ssid: str = "cloudlet"
    eap_method: str = "pwd"
    discovery: bool = True
    discovery_interfaces: tuple[str, ...] = field(default_factory=tuple)
    max_body_bytes: int = DEFAULT_MAX_BODY
    max_devices_per_request: int = 1000
    # Processes that seal device credentials for a peer (the peer API); 0: one per
    # CPU the Manager may use.
    credential_workers: int = 0
    # Device bodies are tiny ({} at most); a small cap keeps unauthenticated
    # uploads from holding memory.
    device_max_body_bytes: int = 4096
    # Every phase of a public connection is bounded (cloudlet.manager.guard).
    max_connections: int = 1024
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    body_timeout: float = 30.0  # 256 KiB over a slow radio link
    keepalive_timeout: float = 15.0
    # Per source address: this many failed device proofs within the window
    # earn a 429, with no pairing computed, for the cool-down.
    auth_failures: int = 10
    auth_failure_window: float = 60.0
    auth_cooldown: float = 60.0
    auth_max_sources: int = 10_000
    # The SVM store (a directory per service holding its manifest.json): what a
    # peer's migrating SVM is checked against. None: this cloudlet takes none.
    svm_dir: Path | None = None
    # The SVM bridge's subnet: after a migration here, the peer may ask whether
    # the SVM answers at an address on it (POST /peer/svms/{id}/health).
    svm_network: ipaddress.IPv4Network | None = None


def _get(data: dict, key: str, kind: type, default: Any = None, required: bool = False) -> Any:
    if key not in data:
        if required:
            raise ConfigError(f"The configuration has no {key!r}.")
        return default
    value = data[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"The configuration key {key!r} must be a {kind.__name__}.")
    return value


def _section(data: dict, name: str) -> dict:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"The configuration key {name!r} must be a table.")
    return value


def _limits(section: dict) -> dict[str, int | float]:
    """The [limits] table, each value range-checked; missing keys keep Config's default.

    A misspelt key is an error, not a silently ignored limit.
    """
    unknown = set(section) - set(LIMITS)
    if unknown:
        raise ConfigError(f"Unknown key(s) in [limits]: {', '.join(sorted(unknown))}.")
    out: dict[str, int | float] = {}
    for key, (kind, low, high) in LIMITS.items():
        if key not in section:
            continue
        value = section[key]
        number = isinstance(value, int) or (kind is float and isinstance(value, float))
        if isinstance(value, bool) or not number or not low <= value <= high:
            what = "an integer" if kind is int else "a number of seconds"
            raise ConfigError(
                f"limits.{key} must be {what} in {low}..{high}, not {value!r}."
            )
        out[key] = kind(value)
    return out


_TOP = {
    "cloudlet_id", "zone", "fqdn", "listen_hosts", "listen_port", "api_host", "db",
    "admin_socket", "tls", "ibe", "network", "discovery", "limits", "svm_dir", "svm_network",
}  # fmt: skip


def parse_config(data: dict, base: Path) -> Config:
    """Build a Config from parsed TOML/JSON; relative paths are relative to ``base``."""
    unknown = set(data) - _TOP
    if unknown:
        raise ConfigError(f"Unknown configuration key(s): {', '.join(sorted(unknown))}.")
    tls, ibe, net = _section(data, "tls"), _section(data, "ibe"), _section(data, "network")
    disc, limits = _section(data, "discovery"), _section(data, "limits")

    def path(section: dict, key: str) -> Path:
        p = Path(_get(section, key, str, required=True))
        return p if p.is_absolute() else base / p

    try:
        cloudlet_id = normalise_id(_get(data, "cloudlet_id", str, required=True), "cloudlet id")
    except ConfigError:
        raise
    except CloudletError as exc:
        raise ConfigError(f"cloudlet_id: {exc.message}") from None
    fqdn = _get(data, "fqdn", str, required=True)
    port = _get(data, "listen_port", int, 8443)
    if not 0 <= port < 65536:
        raise ConfigError("listen_port must be in 0..65535 (0 picks a free port).")
    hosts = _get(data, "listen_hosts", list, ["0.0.0.0"])
    if not hosts or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError("listen_hosts must be a non-empty list of addresses.")
    if port == 0 and len(hosts) > 1:
        raise ConfigError("listen_port 0 (a free port) needs a single listen host.")
    interfaces = _get(disc, "interfaces", list, [])
    if not all(isinstance(i, str) for i in interfaces):
        raise ConfigError("discovery.interfaces must be a list of addresses.")
    return Config(
        cloudlet_id=cloudlet_id,
        zone=_get(data, "zone", str, required=True),
        fqdn=fqdn,
        db=path(data, "db"),
        admin_socket=path(data, "admin_socket"),
        ca_cert=path(tls, "ca_cert"),
        server_cert=path(tls, "server_cert"),
        server_key=path(tls, "server_key"),
        master_key=path(ibe, "master_key"),
        listen_hosts=tuple(hosts),
        listen_port=port,
        api_host=_get(data, "api_host", str, fqdn),
        ssid=_get(net, "ssid", str, "cloudlet"),
        eap_method=_get(net, "eap_method", str, "pwd"),
        discovery=_get(disc, "enabled", bool, True),
        discovery_interfaces=tuple(interfaces),
        svm_dir=path(data, "svm_dir") if "svm_dir" in data else None,
        svm_network=_network(data),
        **_limits(limits),
    )


def _network(data: dict) -> ipaddress.IPv4Network | None:
    value = _get(data, "svm_network", str)
    if value is None:
        return None
    try:
        return ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ConfigError(
            f"svm_network must be an IPv4 subnet (10.200.0.0/24), not {value!r}."
        ) from None


def load_config(path: str | Path) -> Config:
    """Read ``path`` (``.json`` is JSON, anything else TOML)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"Cannot read the configuration {path}: {exc.strerror}.") from exc
    try:
        is_json = path.suffix == ".json"
        data = json.loads(raw) if is_json else tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"The configuration {path} cannot be parsed: {exc}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The configuration {path} must be a table/object at the top.")
    return parse_config(data, path.parent)
