"""The CA and leaf certificates on disk: what is there, what must change, and doing it.

``pki`` builds and checks certificates in memory; this module decides, for
the files of one cloudlet, whether the CA and one leaf certificate are still
good and re-issues only what is not (the ``cloudlet_pki`` module is a thin
wrapper around ``ensure``). A damaged or missing CA key is never replaced:
a new CA would make every paired cloudlet pair again, so that is the
operator's decision, not the tool's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cloudlet import pki
from cloudlet.crypto.identity import normalise_id
from cloudlet.errors import CertificateError, FormatError

__all__ = ["Leaf", "ensure"]


@dataclass(frozen=True)
class Leaf:
    """One leaf certificate to keep current: its files, profile and names."""

    cert: str
    key: str
    profile: pki.Profile
    names: pki.SubjectNames
    days: int = pki.LEAF_DAYS


@dataclass
class _CaPlan:
    action: str  # none | create | reissue
    reasons: list[str]
    key: ec.EllipticCurvePrivateKey | None
    pem: bytes | None  # the current certificate when it stays
    before: str | None


@dataclass
class Outcome:
    """What ``ensure`` did (or would do in check mode); the module returns it."""

    ca_action: str = "none"
    ca_reasons: list[str] = field(default_factory=list)
    ca_fingerprint: str | None = None
    ca_before: str | None = None
    action: str = "none"
    reasons: list[str] = field(default_factory=list)
    key_action: str = "none"
    fingerprint: str | None = None
    before: str | None = None

    @property
    def changed(self) -> bool:
        return self.ca_action != "none" or self.action != "none"


def _read(path: str) -> bytes | None:
    """File bytes, or None when the file does not exist."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def _fingerprint(pem: bytes | None) -> str | None:
    try:
        return pki.fingerprint(pem) if pem else None
    except FormatError:
        return None


def _need_dir(path: str) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise CertificateError(
            f"Directory {directory} does not exist.",
            "Create it first (keys: mode 0700 or 0750, owned by root).",
        )


def ca_reasons(
    cert_pem: bytes | None,
    key: ec.EllipticCurvePrivateKey,
    cloudlet_id: str,
    min_remaining: timedelta,
) -> list[str]:
    """Why the CA certificate should be re-issued from its (good) key."""
    if cert_pem is None:
        return ["missing"]
    try:
        cert = pki.load_certificate(cert_pem)
    except FormatError as exc:
        return [exc.message]
    reasons = []
    if not pki.public_key_matches(cert, key):
        reasons.append("does not match the CA key")
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not basic.ca:
            reasons.append("is not a CA certificate")
    except x509.ExtensionNotFound:
        reasons.append("is not a CA certificate")
    if cert.not_valid_after_utc - datetime.now(UTC) < min_remaining:
        reasons.append(f"expires at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    ou = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
    if not reasons and (not ou or ou[0].value != cloudlet_id):
        raise CertificateError(
            f"The CA certificate belongs to cloudlet {ou[0].value if ou else '?'!r}, "
            f"not {cloudlet_id!r}.",
            "Fix cloudlet_id; a cloudlet keeps its CA for life (a new one means "
            "every peer must pair again).",
        )
    return reasons


def _plan_ca(
    ca_cert: str, ca_key: str, cloudlet_id: str, min_remaining: timedelta, check_mode: bool
) -> _CaPlan:
    key_pem, cert_pem = _read(ca_key), _read(ca_cert)
    before = _fingerprint(cert_pem)
    if key_pem is None:
        if cert_pem is not None:
            raise CertificateError(
                f"The CA certificate {ca_cert} exists but its key {ca_key} does not.",
                "Restore the CA key from backup. To start a new CA instead (every paired "
                "cloudlet must pair again), remove the CA certificate too.",
            )
        key = None if check_mode else pki.generate_key()
        return _CaPlan("create", ["missing"], key, None, before)
    try:
        key = pki.load_key(key_pem)
    except FormatError as exc:
        raise CertificateError(
            f"The CA key {ca_key} is damaged ({exc.message}); it was left untouched.",
            "Restore it from backup. To start a new CA instead (every paired cloudlet "
            "must pair again), remove both the CA key and the CA certificate.",
        ) from None
    reasons = ca_reasons(cert_pem, key, cloudlet_id, min_remaining)
    if reasons:
        return _CaPlan("reissue", reasons, key, None, before)
    return _CaPlan("none", [], key, cert_pem, before)


def _plan_leaf(
    leaf: Leaf, ca_pem: bytes | None, min_remaining: timedelta
) -> tuple[list[str], ec.EllipticCurvePrivateKey | None, str]:
    """Returns (reasons to issue, the key to keep or None, key action)."""
    key_pem = _read(leaf.key)
    key = None
    key_reason = None
    if key_pem is None:
        key_reason = "key missing"
    else:
        try:
            key = pki.load_key(key_pem)
        except FormatError as exc:
            key_reason = f"key unreadable ({exc.message})"
    cert_pem = _read(leaf.cert)
    if cert_pem is None:
        reasons = ["missing"]
    elif ca_pem is None:
        reasons = ["the CA certificate is being created or re-issued"]
    else:
        reasons = pki.check_certificate(
            cert_pem, ca_pem, leaf.profile, leaf.names, key=key, min_remaining=min_remaining
        )
    if key_reason:
        reasons.append(key_reason)
    if not reasons:
        return [], key, "none"
    return reasons, key, "keep" if key is not None else "create"


def ensure(
    cloudlet_id: str,
    ca_cert: str,
    ca_key: str,
    leaf: Leaf | None = None,
    ca_days: int = pki.CA_DAYS,
    renew_before: timedelta = timedelta(days=30),
    check_mode: bool = False,
) -> Outcome:
    """Make sure the CA (and ``leaf``) are present and current; re-issue only what is not."""
    cloudlet_id = normalise_id(cloudlet_id, "cloudlet_id")
    for path in (ca_cert, ca_key, *((leaf.cert, leaf.key) if leaf else ())):
        _need_dir(path)
    out = Outcome()
    ca = _plan_ca(ca_cert, ca_key, cloudlet_id, renew_before, check_mode)
    out.ca_action, out.ca_reasons, out.ca_before = ca.action, ca.reasons, ca.before
    ca_pem = ca.pem
    if ca.action != "none" and not check_mode:
        ca_pem = pki.make_ca(ca.key, cloudlet_id, days=ca_days)
        if ca.action == "create":
            pki.write_private_key(ca_key, ca.key)
        pki.write_certificate(ca_cert, ca_pem)
    out.ca_fingerprint = _fingerprint(ca_pem)
    if leaf is None:
        return out

    out.before = out.fingerprint = _fingerprint(_read(leaf.cert))
    out.reasons, key, out.key_action = _plan_leaf(leaf, ca_pem, renew_before)
    if out.reasons:
        out.action, out.fingerprint = "issue", None
        if not check_mode:
            if key is None:
                key = pki.generate_key()
                pki.write_private_key(leaf.key, key)
            cert_pem = pki.issue_certificate(
                ca.key, ca_pem, key.public_key(), leaf.profile, leaf.names, days=leaf.days
            )
            pki.write_certificate(leaf.cert, cert_pem)
            out.fingerprint = pki.fingerprint(cert_pem)
    return out
