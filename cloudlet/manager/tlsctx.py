"""TLS for the Manager API: the server context, its trust store, and peer lookup.

One HTTPS port serves devices (no client certificate; they prove who they
are with their IBE key) and peers (mutual TLS). So the server asks for a
client certificate but does not require one (``CERT_OPTIONAL``); a
certificate that *is* sent must chain to a paired cloudlet's CA, or the
handshake fails. The peer handlers then require a certificate and map it to
the paired cloudlet record (``identify_peer``), so a peer removed while it
still holds a keep-alive connection is refused at once.

The trust store changes when a cloudlet is paired or removed. An asyncio
server keeps the ``SSLContext`` it was started with, so the listening
context only holds an ``sni_callback`` that moves each new connection onto
the current context (``TrustStore.current``), rebuilt on every change.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from cloudlet import pki
from cloudlet.errors import CertificateError, PeerAuthError
from cloudlet.manager.store import CloudletRecord

__all__ = ["TrustStore", "client_context", "identify_peer", "peer_certificate"]


class TrustStore:
    """The server's SSL context, rebuilt whenever the paired cloudlets change."""

    def __init__(self, cert_file: str | Path, key_file: str | Path) -> None:
        self.cert_file = str(cert_file)
        self.key_file = str(key_file)
        self.current = self._build([])  # fails early on a bad cert/key pair
        self.listening = self._build([])
        self.listening.sni_callback = self._switch

    def _build(self, ca_pems: Iterable[str]) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(
                f"Cannot load the Manager certificate {self.cert_file} "
                f"with key {self.key_file}: {exc}."
            ) from exc
        # The SNI callback swaps only the SSL_CTX (and with it the trust
        # store); the connection keeps the listening context's verify mode,
        # so every context we build uses the same one.
        ctx.verify_mode = ssl.CERT_OPTIONAL
        cadata = "".join(ca_pems)
        if cadata:
            ctx.load_verify_locations(cadata=cadata)
        return ctx

    def rebuild(self, peers: Iterable[CloudletRecord]) -> None:
        """Trust exactly the CAs of ``peers`` for new connections."""
        self.current = self._build(p.ca_pem for p in peers)

    def _switch(self, sslobj: ssl.SSLObject, _name: str | None, _ctx: ssl.SSLContext) -> None:
        sslobj.context = self.current


def peer_certificate(ssl_object: ssl.SSLObject | None) -> x509.Certificate | None:
    """The client certificate of a connection, if it sent one (already verified)."""
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    return x509.load_der_x509_certificate(der)


def identify_peer(cert: x509.Certificate | None, peers: Iterable[CloudletRecord]) -> CloudletRecord:
    """Which paired cloudlet's CA issued ``cert``: checked here, not only by TLS.

    Checking the signature against each stored CA (and not trusting the
    issuer name) means a CA that was unpaired a moment ago, or two CAs with
    the same name, can never be confused.
    """
    if cert is None:
        raise PeerAuthError("The peer API needs a client certificate, and none was sent.")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        client_ok = x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH in eku
    except x509.ExtensionNotFound:
        client_ok = False
    if not client_ok:
        raise PeerAuthError("The client certificate is not a peer client certificate.")
    for peer in peers:
        ca = pki.load_certificate(peer.ca_pem)
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return peer
    raise PeerAuthError("The client certificate was not issued by any paired cloudlet.")


def client_context(
    peer_ca_pem: str | bytes, cert_file: str | Path, key_file: str | Path
) -> ssl.SSLContext:
    """What this cloudlet uses to call a paired peer: its CA only, our client cert.

    The peer's CA is the only trust anchor (never the system store), so a
    server is accepted only if the paired cloudlet's CA signed it for the
    name we dialled.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    pem = peer_ca_pem.decode("ascii") if isinstance(peer_ca_pem, bytes) else peer_ca_pem
    ctx.load_verify_locations(cadata=pem)
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(
            f"Cannot load the peer client certificate {cert_file}: {exc}."
        ) from exc
    return ctx


def cert_fingerprint(cert: x509.Certificate) -> str:
    return pki.fingerprint(cert.public_bytes(serialization.Encoding.PEM))
