"""Shared fixtures: a deterministic rng, a fixed clock, ready-made PKGs and Managers."""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cloudlet.crypto import ibe  # noqa: E402
from cloudlet.crypto.identity import device_identity  # noqa: E402

settings.register_profile(
    "cloudlet",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("cloudlet")

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PEM = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


class DetRng:
    """Deterministic byte stream (SHA-256 in counter mode) for known-answer tests."""

    def __init__(self, seed: bytes | str = b"seed") -> None:
        self.seed = seed.encode() if isinstance(seed, str) else seed
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


@pytest.fixture
def rng():
    return DetRng(b"unit-test")


@pytest.fixture(scope="session")
def master_a():
    return ibe.setup("cl-alpha", DetRng(b"pkg-a"))


@pytest.fixture(scope="session")
def master_b():
    return ibe.setup("cl-bravo", DetRng(b"pkg-b"))


@pytest.fixture(scope="session")
def dev_id():
    return device_identity("cl-alpha", "tablet-07", "2026-11")


@pytest.fixture(scope="session")
def dev_key(master_a, dev_id):
    return ibe.extract(master_a, dev_id)


@pytest.fixture(scope="session")
def pkis(tmp_path_factory):
    """TLS PKIs of the cloudlets the Manager tests run (charlie: a third peer, rogue: unpaired)."""
    from test_manager_support import make_pki

    root = tmp_path_factory.mktemp("pki")
    return {cid: make_pki(root, cid) for cid in ("cl-alpha", "cl-bravo", "cl-charlie", "cl-rogue")}


def _manager(tmp_path, pki, master):
    from test_manager_support import Running, make_config

    run = Running(make_config(tmp_path, pki, master))
    yield run
    run.stop()


@pytest.fixture
def alpha(tmp_path, pkis, master_a):
    """Cloudlet A's Manager on 127.0.0.1, stopped after the test."""
    yield from _manager(tmp_path, pkis["cl-alpha"], master_a)


@pytest.fixture
def bravo(tmp_path, pkis, master_b):
    """Cloudlet B's Manager (the migration target, not yet paired with A)."""
    yield from _manager(tmp_path, pkis["cl-bravo"], master_b)
