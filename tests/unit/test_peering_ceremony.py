"""Both sides of the pairing ceremony between two real Managers, over loopback.

Only the link is replaced (loopback stands in for the link-local addresses;
the link itself is tested in test_peering_link and, over radios, in the radio
test). The code ledger, the exchange, the Managers' admin and peer APIs, the
mutual-TLS confirmation and libvirt's CA file are all real.
"""

from __future__ import annotations

import json
import socket
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from test_manager_support import call, client_ctx, pair

from cloudlet import formats, pki
from cloudlet.admin_client import AdminClient
from cloudlet.crypto import codes
from cloudlet.errors import CodeFormatError, PairingError
from cloudlet.peering import ceremony
from cloudlet.peering.ceremony import Local


class Loopback:
    """The link, on 127.0.0.1: records that it was brought down."""

    port = 0
    downs: list[str] = []

    def __init__(self, backend, side, interface, timeout, **_):
        self.side = side
        self.address = self.peer_address = "127.0.0.1"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        Loopback.downs.append(self.side)


@pytest.fixture
def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        Loopback.port = probe.getsockname()[1]
    Loopback.downs = []


def local_of(run, pki_, tmp_path: Path) -> Local:
    cid = pki_.cloudlet_id
    params = tmp_path / f"{cid}.params"
    params.write_bytes(formats.encode_params(run.state.master.params))
    (tmp_path / f"trust-{cid}").mkdir()
    (tmp_path / f"trust-{cid}" / "ca.pem").write_bytes(pki_.ca_pem)  # as cloudlet_pki puts it
    return Local(cid, "localhost", run.port, f"net-{cid}", pki_.ca, params,
                 pki_.dir / "server.pem", pki_.dir / "server.key",
                 pki_.dir / "client.pem", pki_.dir / "client.key",
                 str(run.cfg.admin_socket), tmp_path / f"ledger-{cid}",
                 tmp_path / f"trust-{cid}", tmp_path / f"libvirt-{cid}.pem", ("true",))


def both(local_a, local_b, code_a, code_b, **kw):
    """Run the host side on A and the join side on B at once; each returns or raises."""
    out = {}

    def side(name, local, role, peer, code):
        try:
            out[name] = ceremony.pair(local, role, peer, str(code), "wired", "lo", timeout=10,
                                      link_factory=Loopback, **kw)
        except PairingError as exc:
            out[name] = exc

    threads = [threading.Thread(target=side, args=("a", local_a, "host", "cl-bravo", code_a)),
               threading.Thread(target=side, args=("b", local_b, "join", "cl-alpha", code_b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return out["a"], out["b"]


@pytest.fixture
def locals_(alpha, bravo, pkis, tmp_path, free_port):
    return local_of(alpha, pkis["cl-alpha"], tmp_path), local_of(bravo, pkis["cl-bravo"], tmp_path)


def peers(local):
    return AdminClient(local.admin_socket).get("/admin/cloudlets")["cloudlets"]


def test_pairing_gives_each_side_confirmed_trust_in_the_other(locals_, alpha, bravo, pkis):
    local_a, local_b = locals_
    code, _ = ceremony.new_code(local_a, "wired")
    report_a, report_b = both(local_a, local_b, code, code)
    assert report_a.confirmed and report_b.confirmed, (report_a, report_b)
    assert report_a.ca_fingerprint == pki.fingerprint(pkis["cl-bravo"].ca_pem)
    assert report_b.ca_fingerprint == pki.fingerprint(pkis["cl-alpha"].ca_pem)
    (on_a,), (on_b,) = peers(local_a), peers(local_b)
    assert (on_a["cloudlet_id"], on_a["pending"]) == ("cl-bravo", False)
    assert on_a["network"] == {"ssid": "net-cl-bravo", "identity": "peer:cl-alpha",
                               "method": "pwd"}
    assert on_b["eap_identity"] == "peer:cl-alpha"  # B's name for A on B's network
    # Each Manager's peer API now answers the other over mutual TLS.
    ctx = client_ctx(pkis["cl-bravo"], pkis["cl-alpha"])
    assert call(bravo, ctx, "GET", "/peer/info")[1]["caller"] == "cl-alpha"
    ctx = client_ctx(pkis["cl-alpha"], pkis["cl-bravo"])
    assert call(alpha, ctx, "GET", "/peer/info")[1]["caller"] == "cl-bravo"
    # The EAP password A issued B for A's network is what B holds for it.
    (user,) = AdminClient(local_a.admin_socket).get("/admin/eap-users")["users"]
    held_by_b = json.loads(bravo.state.store.get_cloudlet("cl-alpha").network)
    assert user["identity"] == held_by_b["identity"] == "peer:cl-bravo"
    assert user["password"] == held_by_b["password"] and len(user["password"]) >= 32
    # libvirt trusts both CAs on each side, ours first.
    pems = local_a.libvirt_ca_file.read_text()
    assert pems.startswith(pkis["cl-alpha"].ca_pem.decode()) and pems.count("BEGIN") == 2
    assert Loopback.downs.count("host") == 1 and Loopback.downs.count("join") == 1


def test_a_wrong_code_fails_on_both_sides_and_stores_nothing(locals_):
    local_a, local_b = locals_
    code, _ = ceremony.new_code(local_a, "wired")
    other = codes.generate_code()
    result_a, result_b = both(local_a, local_b, code, other)
    for result in (result_a, result_b):
        assert str(result).startswith("The code did not match. Ask the other admin to read it "
                                      "again")
    assert peers(local_a) == [] and peers(local_b) == []
    assert not list(local_a.libvirt_trust_dir.glob("peer-*"))
    assert sorted(Loopback.downs) == ["host", "join"]


def test_a_known_peer_is_replaced_only_when_asked(locals_):
    local_a, local_b = locals_
    code, _ = ceremony.new_code(local_a, "wired")
    both(local_a, local_b, code, code)
    first = peers(local_a)
    again, _ = ceremony.new_code(local_a, "wired")
    refused_a, refused_b = both(local_a, local_b, again, again)
    assert "already paired" in str(refused_a) and "replace=true" in str(refused_a)
    assert peers(local_a) == first
    report_a, report_b = both(local_a, local_b, again, again, replace=True)
    assert report_a.replaced and report_b.replaced and report_a.confirmed
    assert peers(local_a)[0]["ca_fingerprint"] == first[0]["ca_fingerprint"]


def test_a_pending_peer_left_by_a_crashed_run_is_paired_again_without_asking(
        locals_, alpha, pkis, master_b):
    local_a, local_b = locals_
    pair(alpha, pkis["cl-bravo"], master_b, pending=True)  # what a killed run leaves
    code, _ = ceremony.new_code(local_a, "wired")
    report_a, report_b = both(local_a, local_b, code, code)
    assert report_a.confirmed and report_a.replaced and report_b.confirmed
    assert [p["pending"] for p in peers(local_a)] == [False]


def test_a_misheard_code_is_caught_before_anything_runs(locals_):
    local_a, _ = locals_
    code, _ = ceremony.new_code(local_a, "wired")
    words = code.words
    typo = " ".join((*words[:-1], codes.WORDS[(codes.WORDS.index(words[-1]) + 1) % 257]))
    with pytest.raises(CodeFormatError, match="does not check out"):
        ceremony.pair(local_a, "host", "cl-bravo", typo, "wired", "lo", link_factory=Loopback)
    assert Loopback.downs == []


def test_a_peer_that_never_comes_ends_at_the_timeout_with_the_link_down(locals_):
    local_a, _ = locals_
    code, _ = ceremony.new_code(local_a, "wired")
    with pytest.raises(PairingError, match="never connected"):
        ceremony.pair(local_a, "host", "cl-bravo", str(code), "wired", "lo", timeout=1,
                      link_factory=Loopback)
    assert Loopback.downs == ["host"] and peers(local_a) == []


def test_a_side_that_cannot_confirm_keeps_the_peer_pending(locals_, pkis):
    """If the TLS check cannot complete, the peer stays pending (never trusted, never lost)."""
    local_a, local_b = locals_
    # B presents a client certificate A's CA copy cannot verify: B's server cert as client.
    local_b = replace(local_b, client_cert=pkis["cl-rogue"].dir / "client.pem",
                      client_key=pkis["cl-rogue"].dir / "client.key")
    code, _ = ceremony.new_code(local_a, "wired")
    report_a, report_b = both(local_a, local_b, code, code)
    assert not report_a.confirmed and not report_b.confirmed
    assert "stored pending" in report_a.note
    assert [p["pending"] for p in peers(local_a) + peers(local_b)] == [True, True]
