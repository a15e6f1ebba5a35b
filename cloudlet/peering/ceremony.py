"""One side of the cloudlet pairing ceremony, from the code to stored, confirmed trust.

``pair`` is what ``library/cloudlet_pairing.py`` runs on each cloudlet:

1. the code is parsed (a typo is caught by its check word before anything
   else) and held in the code ledger (``ledger``);
2. a peer already paired is only replaced when the admin said so (a pending
   one, left by a run that crashed, is simply paired again);
3. the temporary link comes up (``link``), the host side listens on it and
   the join side dials, and the exchange runs (``exchange``): PAKE, sealed
   pairing bundles, FINISH. What the peer sent is *staged*: the Manager
   records the peer pending (its CA, IBE params, the network credential it
   issued us, the one we issued it) and libvirt trusts its CA;
4. still on the same connection, the two cloudlets make their first
   authenticated call: a mutual-TLS handshake with their long-term
   certificates (the host side's Manager server certificate, the join
   side's peer client certificate), each checked against the CA it just
   received. A side confirms the peer in its Manager only once it knows the
   peer holds it too (the host when the handshake completes, the join side
   when the host's answer arrives over TLS). A side that cannot confirm
   keeps the peer pending, and the Managers' first POST /peer/hello confirms
   it later; a peer that failed its side never answers that hello;
5. the link comes down, whatever happened.

A failure before the exchange's end drops what was staged; nothing else is
written before it.
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cloudlet import formats, pki
from cloudlet.admin_client import AdminClient
from cloudlet.bundles import NetworkCredential, PairingBundle
from cloudlet.crypto import codes
from cloudlet.crypto.pake import Pairing, link_password
from cloudlet.errors import CloudletError, PairingError
from cloudlet.manager.config import Config
from cloudlet.peering.exchange import Channel, Exchange
from cloudlet.peering.ledger import CodeLedger
from cloudlet.peering.link import Link, new_ssid

__all__ = ["Local", "Report", "new_code", "pair", "trust_libvirt", "unpair"]

_CONFIRMED = b"CLOUDLET-V01-PAIRED\n"


@dataclass(frozen=True)
class Local:
    """What this cloudlet brings to a pairing: its names, files and Manager."""

    cloudlet_id: str
    fqdn: str
    api_port: int
    field_ssid: str
    ca_cert: Path
    params: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    admin_socket: str
    ledger_dir: Path
    libvirt_trust_dir: Path
    libvirt_ca_file: Path
    # Makes libvirtd re-read its CA file; running domains are not touched.
    libvirt_reload: tuple[str, ...] = ("virt-admin", "server-update-tls", "libvirtd")

    @classmethod
    def from_manager(cls, config: Config, **files) -> Local:
        """Names, TLS files and admin socket from the Manager's configuration; ``files``
        the rest (params, client_cert, client_key, ledger_dir, libvirt_*)."""
        return cls(cloudlet_id=config.cloudlet_id, fqdn=config.fqdn, api_port=config.listen_port,
                   field_ssid=config.ssid, ca_cert=config.ca_cert,
                   server_cert=config.server_cert, server_key=config.server_key,
                   admin_socket=str(config.admin_socket), **files)


@dataclass(frozen=True)
class Report:
    peer: str
    ca_fingerprint: str
    replaced: bool
    confirmed: bool
    note: str = ""


def trust_libvirt(local: Local, peer_id: str, ca_pem: str | None) -> None:
    """Add (or, with ``ca_pem=None``, remove) a peer's CA in libvirt's CA file.

    The rule, shared with the cloudlet_pki role: libvirt's CA file is the
    concatenation of ``ca.pem`` (this cloudlet's CA, put there by the role)
    and every ``peer-<id>.pem`` in ``libvirt_trust_dir``, in name order. Then
    libvirtd is told to re-read it; running domains are not touched.
    """
    trust = local.libvirt_trust_dir
    if not (trust / "ca.pem").is_file():
        raise PairingError(f"{trust}/ca.pem is missing: libvirt's trust is not set up here.",
                           "Run the setup ceremony on this cloudlet first.")
    fragment = trust / f"peer-{peer_id}.pem"
    if ca_pem is None:
        fragment.unlink(missing_ok=True)
    else:
        formats.write_secret_file(fragment, ca_pem.encode(), mode=0o644)
    parts = [(trust / "ca.pem").read_bytes()]
    parts += [p.read_bytes() for p in sorted(trust.glob("peer-*.pem"))]
    formats.write_secret_file(local.libvirt_ca_file, b"".join(parts), mode=0o644)
    done = subprocess.run(local.libvirt_reload, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PairingError(f"libvirtd did not reload its TLS CAs: {done.stderr.strip()}",
                           "Check that libvirtd runs (systemctl status libvirtd).")


def unpair(local: Local, peer_id: str, check: bool = False) -> bool:
    """Forget a paired cloudlet: Manager trust (and both network credentials), libvirt trust."""
    admin = AdminClient(local.admin_socket)
    known = any(c["cloudlet_id"] == peer_id for c in admin.get("/admin/cloudlets")["cloudlets"])
    trusted = (local.libvirt_trust_dir / f"peer-{peer_id}.pem").exists()
    if check or not (known or trusted):
        return known or trusted
    admin.request("DELETE", f"/admin/cloudlets/{peer_id}")
    trust_libvirt(local, peer_id, None)
    return True


def check_peer(admin: AdminClient, peer_id: str, replace: bool) -> dict:
    """The cloudlets this one is paired with; refuses to replace an established one unasked.

    A pending peer (a run that crashed, or whose confirmation never came) is
    no established trust: pairing again simply completes it.
    """
    known = {c["cloudlet_id"]: c for c in admin.get("/admin/cloudlets")["cloudlets"]}
    if peer_id in known and not replace and not known[peer_id]["pending"]:
        raise PairingError(
            f"Cloudlet {peer_id} is already paired with this cloudlet "
            f"(CA sha256 {known[peer_id]['ca_fingerprint']}).",
            "To pair again and replace its credentials, run with replace=true on both sides.",
        )
    return known


def new_code(local: Local, backend: str, peer_id: str | None = None,
             replace: bool = False) -> tuple[codes.VoiceCode, str | None]:
    """A fresh code (and a network name on a radio); its ledger record starts its lifetime.

    With ``peer_id``, first the same check as ``pair``: no code is shown for a
    pairing that would be refused.
    """
    if peer_id is not None:
        check_peer(AdminClient(local.admin_socket), peer_id, replace)
    code = codes.generate_code()
    with CodeLedger(local.ledger_dir).hold(code):
        pass
    return code, new_ssid() if backend == "radio" else None


def _own_bundle(local: Local, peer_id: str, eap_password: str) -> PairingBundle:
    try:
        ca_pem = local.ca_cert.read_text()
        params = formats.decode_params(local.params.read_bytes())
    except OSError as exc:
        raise PairingError(f"Cannot read this cloudlet's identity: {exc}.",
                           "Run the setup ceremony on this cloudlet first.") from None
    network = NetworkCredential(local.field_ssid, f"peer:{peer_id}", eap_password)
    return PairingBundle(local.cloudlet_id, ca_pem, params, network, local.fqdn, local.api_port)


def _connect(side: str, link: Link, deadline: float) -> socket.socket:
    """The host listens on its link address for one connection; the join side dials it."""
    if side == "host":
        with socket.create_server((link.address, link.port)) as server:
            server.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                conn, _ = server.accept()
            except TimeoutError:
                raise PairingError(
                    "Timed out: the other cloudlet never connected.",
                    "Check that the other admin runs the join side with the same code and "
                    "network, then start again on both.",
                ) from None
            return conn
    while True:
        try:
            return socket.create_connection((link.peer_address, link.port), timeout=2)
        except OSError:
            if time.monotonic() >= deadline:
                raise PairingError(
                    "Timed out: the other cloudlet is not waiting on the pairing link.",
                    "Ask the other admin to start the host side (it shows the code) first.",
                ) from None
            time.sleep(0.5)


def _confirm(side: str, sock: socket.socket, local: Local, peer: PairingBundle) -> None:
    """The first authenticated call: mutual TLS with both long-term certificates."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if side == "host" else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=peer.tls_ca_pem)
    if side == "host":
        ctx.load_cert_chain(local.server_cert, local.server_key)
        with ctx.wrap_socket(sock, server_side=True) as tls:
            tls.sendall(_CONFIRMED)  # the handshake showed the peer holds our CA
    else:
        ctx.load_cert_chain(local.client_cert, local.client_key)
        with ctx.wrap_socket(sock, server_hostname=peer.fqdn) as tls:
            if tls.recv(len(_CONFIRMED)) != _CONFIRMED:  # the host accepted our certificate
                raise PairingError("The other cloudlet did not confirm over TLS.")


def pair(
    local: Local,
    side: str,
    peer_id: str,
    code_text: str,
    backend: str,
    interface: str,
    ssid: str | None = None,
    timeout: float = 300.0,
    replace: bool = False,
    link_factory: Callable[..., Link] = Link,
) -> Report:
    code = codes.parse_code(code_text)
    admin = AdminClient(local.admin_socket)
    known = check_peer(admin, peer_id, replace)
    eap_password = secrets.token_urlsafe(24)
    bundle = _own_bundle(local, peer_id, eap_password)

    def stage(peer: PairingBundle) -> None:
        trust_libvirt(local, peer.cloudlet_id, peer.tls_ca_pem)
        admin.request("PUT", f"/admin/cloudlets/{peer.cloudlet_id}", {
            "ca_pem": peer.tls_ca_pem,
            "params": base64.b64encode(formats.encode_params(peer.params)).decode(),
            "api_host": peer.fqdn,
            "api_port": peer.api_port,
            "pending": True,
            "eap_password": eap_password,
            "network": {"ssid": peer.network.ssid, "identity": peer.network.identity,
                        "password": peer.network.password, "method": peer.network.eap_method},
        })

    def unstage(peer: PairingBundle) -> None:
        admin.request("DELETE", f"/admin/cloudlets/{peer.cloudlet_id}")
        trust_libvirt(local, peer.cloudlet_id, None)

    deadline = time.monotonic() + timeout
    link_args = {}
    if backend == "radio":
        link_args = {"ssid": ssid, "password": link_password(code, local.cloudlet_id, peer_id)}
    with CodeLedger(local.ledger_dir).hold(code) as attempts, \
            link_factory(backend, side, interface, timeout=timeout, **link_args) as link, \
            contextlib.closing(_connect(side, link, deadline)) as sock:
        pairing = Pairing(local.cloudlet_id, peer_id, code, attempts)
        outcome = Exchange(pairing, bundle, stage, unstage).run(Channel(sock, deadline))
        fingerprint = pki.fingerprint(outcome.peer.tls_ca_pem)
        try:
            sock.settimeout(max(1.0, min(30.0, deadline - time.monotonic())))
            _confirm(side, sock, local, outcome.peer)
        except (OSError, ssl.SSLError, CloudletError) as exc:
            return Report(peer_id, fingerprint, peer_id in known, False,
                          f"stored pending: the TLS check with {peer_id} did not complete "
                          f"({exc}); the first call between the two Managers confirms it")
    admin.request("POST", f"/admin/cloudlets/{peer_id}/confirm")
    return Report(peer_id, fingerprint, peer_id in known, True)

