"""pki.py: the cloudlet CA, its four certificate profiles, and re-issue checks."""

from __future__ import annotations

import hashlib
import shutil
import ssl
import stat
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from conftest import DetRng
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from cloudlet import pki
from cloudlet.errors import CertificateError, FormatError
from cloudlet.pki import Profile

CLOCK = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


def _clock():
    return CLOCK


@pytest.fixture(scope="module")
def ca():
    key = pki.generate_key()
    return key, pki.make_ca(key, "cl-alpha")


def _issue(ca, profile, names, **kw):
    ca_key, ca_pem = ca
    key = pki.generate_key()
    return key, pki.issue_certificate(ca_key, ca_pem, key.public_key(), profile, names, **kw)


SERVER_NAMES = pki.subject_names(
    "manager.alpha.cloudlet", ["manager.alpha.cloudlet"], ["10.20.0.1"]
)


def test_known_answer_with_injected_clock_and_rng():
    """Same key seed, clock and serial stream -> the same to-be-signed bytes."""

    def tbs():
        key = pki.generate_key(DetRng(b"ca-key"))
        pem = pki.make_ca(key, "cl-alpha", clock=_clock, rng=DetRng(b"serial"))
        return pki.load_certificate(pem).tbs_certificate_bytes

    first, second = tbs(), tbs()
    assert first == second
    other = pki.make_ca(pki.generate_key(DetRng(b"ca-key")), "cl-alpha", clock=_clock)
    assert pki.load_certificate(other).tbs_certificate_bytes != first  # random serial


def test_ca_is_a_pathlen_0_signing_ca(ca):
    cert = pki.load_certificate(ca[1])
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.key_cert_sign and not ku.digital_signature
    assert cert.subject == cert.issuer
    assert cert.signature_hash_algorithm.name == "sha256"
    assert cert.public_key().curve.name == "secp256r1"


@pytest.mark.parametrize("profile", list(Profile))
def test_profiles_have_the_right_purpose_and_usage(ca, profile):
    _key, pem = _issue(ca, profile, SERVER_NAMES)
    cert = pki.load_certificate(pem)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    want = ExtendedKeyUsageOID.SERVER_AUTH if profile.is_server else ExtendedKeyUsageOID.CLIENT_AUTH
    assert list(eku) == [want]
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.value.digital_signature
    # libvirt 9.0/QEMU 7.2 refuse a critical key usage without keyEncipherment.
    assert ku.value.key_encipherment == profile.for_libvirt
    assert ku.critical == (not profile.for_libvirt)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(pki.load_certificate(ca[1]))


def test_san_lists_every_name_and_address(ca):
    names = pki.subject_names(
        "cl-alpha", ["cl-alpha.lab", "Manager.Alpha.Cloudlet."], ["10.0.0.1", "fd00::1"]
    )
    _key, pem = _issue(ca, Profile.LIBVIRT_SERVER, names)
    san = pki.load_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["cl-alpha.lab", "manager.alpha.cloudlet"]
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == [
        "10.0.0.1",
        "fd00::1",
    ]


def test_leaf_never_outlives_the_ca():
    key = pki.generate_key()
    ca_pem = pki.make_ca(key, "cl-alpha", days=10, clock=_clock)
    _k, pem = _issue(
        (key, ca_pem), Profile.PEER_CLIENT, pki.subject_names("cl-alpha"), days=400, clock=_clock
    )
    assert (
        pki.load_certificate(pem).not_valid_after_utc
        == pki.load_certificate(ca_pem).not_valid_after_utc
    )


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("x" * 65, (), ()), "Common name"),
        (("ok", ("bad_name",), ()), "not a valid DNS name"),
        (("ok", (), ("10.0.0.300",)), "not an IP address"),
    ],
)
def test_bad_names_are_refused(args, match):
    with pytest.raises(CertificateError, match=match):
        pki.SubjectNames(*args)


def test_server_cert_needs_a_name(ca):
    with pytest.raises(CertificateError, match="at least one DNS name"):
        _issue(ca, Profile.MANAGER_SERVER, pki.subject_names("nobody"))


def test_wrong_ca_key_is_refused(ca):
    with pytest.raises(CertificateError, match="does not belong"):
        pki.issue_certificate(
            pki.generate_key(), ca[1], pki.generate_key().public_key(), Profile.PEER_CLIENT,
            pki.subject_names("x"),
        )  # fmt: skip


def test_check_certificate_for_idempotent_reissue(ca):
    key, pem = _issue(ca, Profile.MANAGER_SERVER, SERVER_NAMES)
    assert pki.check_certificate(pem, ca[1], Profile.MANAGER_SERVER, SERVER_NAMES, key) == []
    # SAN order does not matter; a changed address does.
    same = pki.subject_names(SERVER_NAMES.common_name, ["manager.alpha.cloudlet"], ["10.20.0.1"])
    assert pki.check_certificate(pem, ca[1], Profile.MANAGER_SERVER, same) == []
    moved = pki.subject_names(SERVER_NAMES.common_name, ["manager.alpha.cloudlet"], ["10.20.0.2"])
    assert any(
        "names differ" in p
        for p in pki.check_certificate(pem, ca[1], Profile.MANAGER_SERVER, moved)
    )
    assert "purpose is not peer-client" in pki.check_certificate(
        pem, ca[1], Profile.PEER_CLIENT, SERVER_NAMES
    )
    other_key = pki.generate_key()
    assert "does not match the private key" in pki.check_certificate(
        pem, ca[1], Profile.MANAGER_SERVER, SERVER_NAMES, other_key
    )
    other_ca = pki.make_ca(pki.generate_key(), "cl-bravo")
    assert "not issued by this cloudlet's CA" in pki.check_certificate(
        pem, other_ca, Profile.MANAGER_SERVER, SERVER_NAMES
    )

    def late():
        return datetime.now(UTC) + timedelta(days=pki.LEAF_DAYS - 20)

    assert any("expires" in p for p in pki.check_certificate(
        pem, ca[1], Profile.MANAGER_SERVER, SERVER_NAMES, clock=late
    ))  # fmt: skip
    assert pki.check_certificate(b"garbage", ca[1], Profile.MANAGER_SERVER, SERVER_NAMES)


def test_fingerprint_is_sha256_of_der(ca):
    der = pki.load_certificate(ca[1]).public_bytes(serialization.Encoding.DER)
    assert pki.fingerprint(ca[1]) == hashlib.sha256(der).hexdigest()
    assert pki.fingerprint(ca[1].decode()) == pki.fingerprint(pki.load_certificate(ca[1]))


def test_keys_are_written_0600_atomically_and_read_back(tmp_path):
    key = pki.generate_key()
    path = tmp_path / "private" / "serverkey.pem"
    path.parent.mkdir()
    pki.write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pki.load_key(path.read_bytes()).private_numbers() == key.private_numbers()
    assert [p.name for p in path.parent.iterdir()] == ["serverkey.pem"]


def test_damaged_pem_is_a_format_error(tmp_path):
    with pytest.raises(FormatError):
        pki.load_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(FormatError):
        pki.load_certificate(b"not a cert")
    with pytest.raises(FormatError):
        pki.write_certificate(tmp_path / "c.pem", b"not a cert")
    assert not list(tmp_path.iterdir())


def test_python_ssl_loads_every_profile(ca, tmp_path):
    for profile in Profile:
        key, pem = _issue(ca, profile, SERVER_NAMES)
        pki.write_certificate(tmp_path / "c.pem", pem)
        pki.write_private_key(tmp_path / "k.pem", key)
        side = ssl.PROTOCOL_TLS_SERVER if profile.is_server else ssl.PROTOCOL_TLS_CLIENT
        ssl.SSLContext(side).load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")


@pytest.mark.skipif(not shutil.which("certtool"), reason="GnuTLS certtool not installed")
def test_gnutls_verifies_the_libvirt_certificates(ca, tmp_path):
    """libvirt reads these with GnuTLS: it must verify the chain and the names."""
    (tmp_path / "cacert.pem").write_bytes(ca[1])
    for profile in (Profile.LIBVIRT_SERVER, Profile.LIBVIRT_CLIENT):
        key, pem = _issue(ca, profile, SERVER_NAMES)
        (tmp_path / "cert.pem").write_bytes(pem)
        out = subprocess.run(
            ["certtool", "--verify", "--load-ca-certificate", str(tmp_path / "cacert.pem"),
             "--infile", str(tmp_path / "cert.pem"), "--verify-hostname", "10.20.0.1"],
            capture_output=True, text=True, timeout=20, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stdout + out.stderr
        assert "Chain verification output: Verified" in out.stdout


def test_pem_text_that_is_not_ascii_is_a_format_error():
    # A client-supplied ca_pem reaches this; it once escaped as a UnicodeEncodeError (a 500).
    with pytest.raises(FormatError, match="not a readable PEM"):
        pki.load_certificate("-----BEGIN CERTIFICATE-----\n\u00aa\n-----END CERTIFICATE-----\n")
