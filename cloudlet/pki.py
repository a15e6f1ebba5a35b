"""The cloudlet's own TLS CA and the certificates it issues.

Each cloudlet is its own certificate authority: there is no Internet CA in
the field, and peers learn each other's CA only through the voice-code
pairing. The CA issues four kinds of leaf certificate (``Profile``):

* the Manager API server certificate (what devices and peers connect to);
* the peer client certificate this cloudlet presents when it calls a paired
  cloudlet's peer API (mutual TLS: the peer maps it back to us by our CA);
* libvirt's TLS server and client certificates for live migration.

Keys are ECDSA P-256: the one curve that OpenSSL (Python ``ssl``), GnuTLS
(libvirt, QEMU) and every TLS stack on Debian 12 all accept. Builders are
pure (keys and names in, PEM out; the clock and serial generator can be
injected for known-answer tests); only the ``write_*`` helpers touch disk,
and private keys go through ``formats.write_secret_file`` (atomic, 0600).

``check_certificate`` answers "is what is on disk still good for these
names?", so an idempotent Ansible module re-issues only on a real change.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudlet import formats
from cloudlet.crypto.identity import normalise_id
from cloudlet.errors import CertificateError, CloudletError, FormatError

__all__ = [
    "CA_DAYS",
    "LEAF_DAYS",
    "LIBVIRT_PATHS",
    "Profile",
    "SubjectNames",
    "check_certificate",
    "fingerprint",
    "generate_key",
    "issue_certificate",
    "key_to_pem",
    "load_certificate",
    "load_key",
    "make_ca",
    "public_key_matches",
    "subject_names",
    "write_certificate",
    "write_private_key",
]

CA_DAYS = 3650
LEAF_DAYS = 397
_BACKDATE = timedelta(minutes=5)  # tolerate clocks a little behind ours
_MAX_SERIAL_BYTES = 19  # RFC 5280: at most 20 octets, positive

# Where libvirt (and QEMU's migration TLS, which libvirt points at the same
# files by default on Debian) looks for its certificates.
LIBVIRT_PATHS = {
    "ca": "/etc/pki/CA/cacert.pem",
    "server_cert": "/etc/pki/libvirt/servercert.pem",
    "server_key": "/etc/pki/libvirt/private/serverkey.pem",
    "client_cert": "/etc/pki/libvirt/clientcert.pem",
    "client_key": "/etc/pki/libvirt/private/clientkey.pem",
}

Clock = Callable[[], datetime]
Rng = Callable[[int], bytes]


class Profile(enum.Enum):
    """What a leaf certificate is for; fixes its key usages."""

    MANAGER_SERVER = "manager-server"
    PEER_CLIENT = "peer-client"
    LIBVIRT_SERVER = "libvirt-server"
    LIBVIRT_CLIENT = "libvirt-client"

    @property
    def is_server(self) -> bool:
        return self in (Profile.MANAGER_SERVER, Profile.LIBVIRT_SERVER)

    @property
    def eku(self) -> x509.ObjectIdentifier:
        if self.is_server:
            return ExtendedKeyUsageOID.SERVER_AUTH
        return ExtendedKeyUsageOID.CLIENT_AUTH

    @property
    def for_libvirt(self) -> bool:
        return self in (Profile.LIBVIRT_SERVER, Profile.LIBVIRT_CLIENT)


@dataclass(frozen=True)
class SubjectNames:
    """Who a certificate names: CN plus DNS names and IP addresses for the SAN.

    libvirt checks the migration host name against the server certificate,
    and Python ``ssl`` checks only the SAN (never the CN), so every name a
    peer may dial must be listed here.
    """

    common_name: str
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.common_name, str) or not 0 < len(self.common_name) <= 64:
            raise CertificateError(f"Common name {self.common_name!r} must be 1-64 characters.")
        object.__setattr__(self, "dns_names", tuple(_dns(n) for n in self.dns_names))
        object.__setattr__(self, "ip_addresses", tuple(str(_ip(a)) for a in self.ip_addresses))

    def comparable(self) -> tuple[str, frozenset[str], frozenset[str]]:
        """Order of SAN entries does not matter when deciding to re-issue."""
        return self.common_name, frozenset(self.dns_names), frozenset(self.ip_addresses)

    def san(self) -> x509.SubjectAlternativeName:
        entries: list[x509.GeneralName] = [x509.DNSName(n) for n in self.dns_names]
        entries += [x509.IPAddress(_ip(a)) for a in self.ip_addresses]
        return x509.SubjectAlternativeName(entries)


def _dns(name: str) -> str:
    if not isinstance(name, str):
        raise CertificateError(f"DNS name {name!r} is not a string.")
    labels = name.rstrip(".").lower().split(".")
    try:
        return ".".join(normalise_id(label, "DNS label") for label in labels)
    except CloudletError:
        raise CertificateError(f"{name!r} is not a valid DNS name.") from None


def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(addr)
    except (ValueError, TypeError):
        raise CertificateError(f"{addr!r} is not an IP address.") from None


def _now(clock: Clock | None) -> datetime:
    when = clock() if clock else datetime.now(UTC)
    if when.tzinfo is None:
        raise ValueError("naive datetime: the clock must return aware (UTC) times")
    return when.astimezone(UTC).replace(microsecond=0)


def _serial(rng: Rng | None) -> int:
    if rng is None:
        return x509.random_serial_number()
    raw = rng(_MAX_SERIAL_BYTES)
    return int.from_bytes(raw, "big") >> 1 or 1


def _check_days(days: int) -> None:
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 36500:
        raise CertificateError(f"Validity of {days!r} days is out of range (1..36500).")


# --- keys ------------------------------------------------------------------


def generate_key(rng: Rng | None = None) -> ec.EllipticCurvePrivateKey:
    """A new P-256 key; ``rng`` (48 bytes, reduced mod n) only for known-answer tests."""
    if rng is None:
        return ec.generate_private_key(ec.SECP256R1())
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    scalar = int.from_bytes(rng(48), "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP256R1())


def key_to_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """Unencrypted PKCS#8: what both OpenSSL and GnuTLS (libvirt) read."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise FormatError(f"The private key is not a readable PEM key ({exc}).") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise FormatError("The private key is not an ECDSA P-256 key.")
    return key


def load_certificate(pem: bytes | str) -> x509.Certificate:
    try:
        # Inside the try: PEM is ASCII, and text that is not fails like any bad PEM.
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        return x509.load_pem_x509_certificate(data)
    except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
        raise FormatError(f"The certificate is not a readable PEM certificate ({exc}).") from None


def fingerprint(cert: bytes | str | x509.Certificate) -> str:
    """SHA-256 over the DER encoding, lowercase hex: for delivery records and DNS-SD."""
    if not isinstance(cert, x509.Certificate):
        cert = load_certificate(cert)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def public_key_matches(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


# --- builders --------------------------------------------------------------


def _name(common_name: str, cloudlet_id: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tactical cloudlet"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, cloudlet_id),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(
    key: ec.EllipticCurvePrivateKey,
    cloudlet_id: str,
    days: int = CA_DAYS,
    clock: Clock | None = None,
    rng: Rng | None = None,
) -> bytes:
    """The cloudlet's self-signed CA certificate (PEM).

    pathlen 0: it signs leaf certificates only, so a leaked leaf key cannot
    mint more certificates under it.
    """
    cid = normalise_id(cloudlet_id, "cloudlet id")
    _check_days(days)
    now = _now(clock)
    name = _name(f"{cid} cloudlet CA", cid)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial(rng))
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _leaf_usage(profile: Profile) -> x509.KeyUsage:
    # libvirt 9.0 and QEMU 7.2 (Debian 12) predate the RFC 8813 exemption for
    # ECDSA and refuse a *critical* key usage without keyEncipherment; so the
    # libvirt certificates carry it, non-critical (see _leaf_usage_critical).
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=profile.for_libvirt,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def issue_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_pem: bytes,
    public_key: ec.EllipticCurvePublicKey,
    profile: Profile,
    names: SubjectNames,
    days: int = LEAF_DAYS,
    clock: Clock | None = None,
    rng: Rng | None = None,
) -> bytes:
    """Issue a leaf certificate of ``profile`` for ``names`` under our CA (PEM).

    Refuses a CA key that does not belong to ``ca_pem``: a mismatch would give
    certificates that no peer can verify, found only at migration time. The
    leaf never outlives the CA.
    """
    if not isinstance(profile, Profile) or not isinstance(names, SubjectNames):
        raise TypeError("expected a Profile and SubjectNames")
    _check_days(days)
    ca = load_certificate(ca_pem)
    if not public_key_matches(ca, ca_key):
        raise CertificateError("The CA key does not belong to the CA certificate.")
    if not names.dns_names and not names.ip_addresses and profile.is_server:
        raise CertificateError(
            "A server certificate needs at least one DNS name or IP address.",
            "List the FQDN and every address peers use to reach this cloudlet.",
        )
    now = _now(clock)
    not_after = min(now + timedelta(days=days), ca.not_valid_after_utc)
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cid = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names.common_name, str(cid)))
        .issuer_name(ca.subject)
        .public_key(public_key)
        .serial_number(_serial(rng))
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_leaf_usage(profile), critical=not profile.for_libvirt)
        .add_extension(x509.ExtendedKeyUsage([profile.eku]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
    if names.dns_names or names.ip_addresses:
        builder = builder.add_extension(names.san(), critical=False)
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


# --- checks for idempotent re-issue ----------------------------------------


def check_certificate(
    cert_pem: bytes,
    ca_pem: bytes,
    profile: Profile,
    names: SubjectNames,
    key: ec.EllipticCurvePrivateKey | None = None,
    min_remaining: timedelta = timedelta(days=30),
    clock: Clock | None = None,
) -> list[str]:
    """Why ``cert_pem`` should be re-issued; an empty list means keep it.

    Checked: issued (directly) by this CA, the profile's purpose, exactly the
    requested names (a removed address must disappear from the SAN too),
    matches ``key`` if given, and valid now with at least ``min_remaining``
    left, so a renewal happens well before libvirt refuses the file.
    """
    try:
        cert = load_certificate(cert_pem)
        ca = load_certificate(ca_pem)
    except FormatError as exc:
        return [exc.message]
    problems: list[str] = []
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        problems.append("not issued by this cloudlet's CA")
    now = _now(clock)
    if cert.not_valid_before_utc > now + _BACKDATE:
        problems.append(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_after_utc - now < min_remaining:
        problems.append(f"expires at {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if list(eku) != [profile.eku]:
            problems.append(f"purpose is not {profile.value}")
    except x509.ExtensionNotFound:
        problems.append("no extended key usage")
    if _names_of(cert).comparable() != names.comparable():
        problems.append(f"names differ from {names}")
    if key is not None and not public_key_matches(cert, key):
        problems.append("does not match the private key")
    return problems


def _names_of(cert: x509.Certificate) -> SubjectNames:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    return SubjectNames(str(cn[0].value) if cn else "?", dns, ips)


def subject_names(
    common_name: str, dns: Iterable[str] = (), ips: Sequence[str] = ()
) -> SubjectNames:
    """Shorthand for SubjectNames with iterables."""
    return SubjectNames(common_name, tuple(dns), tuple(ips))


# --- files -----------------------------------------------------------------


def write_private_key(
    path: str | os.PathLike,
    key: ec.EllipticCurvePrivateKey,
    uid: int | None = None,
    gid: int | None = None,
) -> None:
    """Atomic write, mode 0600 from the first byte."""
    formats.write_secret_file(path, key_to_pem(key), 0o600, uid, gid)


def write_certificate(
    path: str | os.PathLike,
    cert_pem: bytes,
    mode: int = 0o644,
    uid: int | None = None,
    gid: int | None = None,
) -> None:
    """Certificates are public, but an atomic write still avoids a half file."""
    load_certificate(cert_pem)
    formats.write_secret_file(path, cert_pem, mode, uid, gid)
