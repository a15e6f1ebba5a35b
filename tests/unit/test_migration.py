"""The migration package without libvirt: the uplink, the peer link and client, the handoff,
the choice of a target.

The Managers, their admin sockets and the peer API's mutual TLS are real (on
127.0.0.1); wpa_supplicant and systemd are scripted. The libvirt part and
the whole ceremony run on the lab (tests/integration/test_migrate.py).
"""

from __future__ import annotations

import json
import socket
import stat
import subprocess
import threading
import types

import pytest
from test_manager_support import admin, pair, stock

from cloudlet.admin_client import AdminClient
from cloudlet.bundles import NetworkCredential
from cloudlet.errors import MigrationError
from cloudlet.migration import handoff, select
from cloudlet.migration.discover import Target, Uplink
from cloudlet.migration.peer import PeerClient, peer_link
from cloudlet.migration.select import Candidate, choose, rank, survey
from cloudlet.migration.svm import (
    Settings,
    _check_multifd,
    _Downtime,
    check_health,
    job_request,
    metadata,
    svm_address,
)

CRED = NetworkCredential("cloudlet-cl-bravo", "peer:cl-alpha", "p" * 24)


class Host:
    """Scripted systemctl, systemd-run and wpa_cli: EAP answers ``outcome`` once started."""

    def __init__(self, outcome="AUTHENTICATED"):
        self.outcome, self.active, self.calls = outcome, False, []

    def __call__(self, args):
        args = list(args)
        self.calls.append(args)
        out, rc = "", 0
        if args[0] == "systemd-run":
            self.active = True
        elif args[:2] == ["systemctl", "stop"]:
            self.active = False
        elif args[:2] == ["systemctl", "is-active"]:
            rc = 0 if self.active else 3
        elif args[0] == "wpa_cli":
            if self.outcome == "FAILURE":
                out = "EAP state=FAILURE\n"
            else:
                out = f"Supplicant PAE state={self.outcome}\nEAP state=SUCCESS\n"
        return subprocess.CompletedProcess(args, rc, out, "")


def uplink(tmp_path, host):
    return Uplink("f-cl-bravo", state_dir=tmp_path / "uplink", run=host,
                  clock=iter(range(10_000)).__next__, sleep=lambda s: None)


def test_the_uplink_joins_once_with_a_private_configuration(tmp_path):
    host = Host()
    assert uplink(tmp_path, host).join(CRED, timeout=30) is True
    (started,) = [c for c in host.calls if c[0] == "systemd-run"]
    assert "--unit=cloudlet-uplink-f-cl-bravo.service" in started
    conf = tmp_path / "uplink" / "f-cl-bravo.conf"
    assert started[-2:] == ["-c", str(conf)]
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert 'identity="peer:cl-alpha"' in conf.read_text()
    # A second run finds it on the network with this credential and leaves it alone.
    host.calls.clear()
    assert uplink(tmp_path, host).join(CRED, timeout=30) is False
    assert not any(c[0] == "systemd-run" for c in host.calls)


def test_a_refused_uplink_says_the_pairing_is_gone(tmp_path):
    with pytest.raises(MigrationError, match="refused this cloudlet's credential") as err:
        uplink(tmp_path, Host("FAILURE")).join(CRED, timeout=30)
    assert "Pair the two cloudlets again" in err.value.hint


def test_an_uplink_that_never_authenticates_times_out_and_stops(tmp_path):
    host = Host("CONNECTING")
    with pytest.raises(MigrationError, match="Timed out joining cloudlet-cl-bravo"):
        uplink(tmp_path, host).join(CRED, timeout=5)
    assert not host.active  # its supplicant was stopped


def test_an_unpaired_target_is_refused_before_anything_is_sent(alpha):
    with pytest.raises(MigrationError, match="not paired with this cloudlet") as err:
        peer_link(AdminClient(str(alpha.cfg.admin_socket)), "cl-bravo")
    assert "Nothing was moved" in err.value.hint


@pytest.fixture
def both(alpha, bravo, pkis, master_a, master_b):
    """A and B paired both ways; A's devices tablet-07 (using face-rec) and tablet-08."""
    network = {"ssid": "net-cl-bravo", "identity": "peer:cl-alpha", "password": "p" * 24,
               "method": "pwd"}
    pair(alpha, pkis["cl-bravo"], master_b, port=bravo.port, network=network)
    pair(bravo, pkis["cl-alpha"], master_a)
    for device, services in (("tablet-07", ["face-rec"]), ("tablet-08", [])):
        admin(alpha, "PUT", f"/admin/devices/{device}",
              {"valid_from": "2026-01", "valid_until": "2099-12", "services": services})
    link = peer_link(AdminClient(str(alpha.cfg.admin_socket)), "cl-bravo")
    client = PeerClient(link, "127.0.0.1", bravo.port, pkis["cl-alpha"].dir / "client.pem",
                        pkis["cl-alpha"].dir / "client.key")
    return AdminClient(str(alpha.cfg.admin_socket)), client


def test_the_peer_link_carries_what_pairing_stored(both):
    _admin, client = both
    assert client.link.network == NetworkCredential("net-cl-bravo", "peer:cl-alpha", "p" * 24)
    assert (client.link.api_host, client.link.pending) == ("127.0.0.1", False)
    assert client.request("GET", "/peer/info")["caller"] == "cl-alpha"


def test_a_peer_with_another_ca_does_not_pass_as_the_target(both, pkis, alpha):
    _admin, client = both
    imposter = PeerClient(client.link, "127.0.0.1", alpha.port,
                          pkis["cl-alpha"].dir / "client.pem", pkis["cl-alpha"].dir / "client.key")
    with pytest.raises(MigrationError, match="did not prove it is the cloudlet paired"):
        imposter.request("GET", "/peer/info")


def test_credentials_are_asked_once_for_the_svms_devices(both, alpha):
    admin_client, client = both
    messages, already = handoff.request_credentials(admin_client, client, "cl-alpha",
                                                    "face-rec", moved_now=True)
    assert [(m["device_id"], m["kind"], m["issuer"]) for m in messages] == [
        ("tablet-07", "credentials", "cl-bravo")]
    assert already == []
    for m in messages:
        admin(alpha, "POST", "/admin/messages", m)
    assert handoff.delivery(admin_client, "face-rec", "cl-bravo") == {
        "taken": [], "waiting": ["tablet-07"]}
    # A second run asks for nothing while the message waits.
    again, already = handoff.request_credentials(admin_client, client, "cl-alpha", "face-rec",
                                                 moved_now=False)
    assert again == [] and already == ["tablet-07"]


# -- target=auto ------------------------------------------------------------------------

SVM_META = {"service_id": "face-rec", "fqdn": "face-rec.svc.alpha.cloudlet", "memory_mib": 64,
            "ports": [], "images": [{"name": "base", "sha256": "ab" * 32}]}


def test_the_fastest_link_that_fits_is_chosen_and_memory_breaks_a_tie():
    cands = [Candidate("slow", "if1", 19.5, 9000, True), Candidate("fast", "if2", 95.0, 900, True),
             Candidate("fast-roomy", "if3", 91.0, 4000, True),
             Candidate("fastest-no-image", "if4", 400.0, 9000, False, "no images")]
    assert [c.cloudlet_id for c in rank(cands)] == ["fast-roomy", "fast", "slow"]
    assert choose(cands).cloudlet_id == "fast-roomy"


def test_no_candidate_that_fits_fails_and_says_why_for_each():
    cands = [Candidate("cl-b", "if1", reason="not in reach"),
             Candidate("cl-c", "if2", 90.0, 9000, False, "does not hold the images")]
    with pytest.raises(MigrationError) as err:
        choose(cands)
    assert "cl-b: rate ?, memory ?, not eligible: not in reach" in err.value.message
    assert "cl-c: 90.0 Mbit/s, 9000 MiB free, not eligible: does not hold the images" \
        in err.value.message
    assert "Nothing was moved" in err.value.hint


def test_the_survey_checks_the_images_times_the_link_and_leaves_its_uplink(
        both, bravo, tmp_path, monkeypatch):
    admin_client, client = both
    host = Host()

    def reached(admin_, link, up, cert, key, timeout):
        assert link.cloudlet_id == "cl-bravo"
        return Target(client, "127.0.0.1", bravo.port, client.request("GET", "/peer/info"),
                      up.join(link.network, timeout), False)

    monkeypatch.setattr(select, "reach", reached)
    cand = survey(admin_client, Candidate("cl-bravo", "f-cl-bravo"), SVM_META, "c", "k", 30,
                  lambda ifname: uplink(tmp_path, host))
    assert not cand.fits and cand.reason.startswith("Cloudlet 'cl-bravo' does not hold the images")
    assert cand.rate_mbit > 0 and cand.mem_available_mib > 0
    assert not host.active  # the uplink it brought up is down again
    stock(bravo.cfg, "face-rec", {"base": "ab" * 32})
    cand = survey(admin_client, Candidate("cl-bravo", "f-cl-bravo"), SVM_META, "c", "k", 30,
                  lambda ifname: uplink(tmp_path, host))
    assert cand.fits and cand.reason == ""
    # Nothing was recorded on B: the check is not the metadata.
    assert client.request("GET", "/peer/info")["services"] == []


def test_an_unpaired_candidate_is_never_chosen(alpha, tmp_path):
    cand = survey(AdminClient(str(alpha.cfg.admin_socket)), Candidate("cl-bravo", "f-cl-bravo"),
                  SVM_META, "c", "k", 30, lambda ifname: uplink(tmp_path, Host()))
    assert not cand.fits and "not paired with this cloudlet" in cand.reason


# -- after the move: does the SVM answer on the target? ----------------------------------


class _Dom:
    def __init__(self, cmdline: str) -> None:
        self.cmdline = cmdline

    def XMLDesc(self, _flags):  # noqa: N802 (libvirt's name)
        return f"<domain><os><cmdline>{self.cmdline}</cmdline></os></domain>"


def test_the_svms_address_and_ports_come_from_its_domain_and_manifest(tmp_path):
    dom = _Dom("console=ttyS0 svm.hostname=x svm.ip=10.200.0.10/24 svm.dhcp=0")
    assert svm_address(dom) == "10.200.0.10"
    assert svm_address(_Dom("console=ttyS0 svm.dhcp=1")) is None
    manifest = tmp_path / "manifest.json"
    files = {r: {"name": r, "sha256": "ab" * 32} for r in ("kernel", "initrd", "base", "overlay")}
    manifest.write_text(json.dumps({
        "id": "demo", "memory_mib": 64, "vcpus": 1, "files": files,
        "ports": [{"guest": 80, "protocol": "tcp", "name": "http"}, 8080, {"name": "x"}]}))
    assert metadata("demo", manifest, "demo.svm")["ports"] == [80, 8080]


def test_health_waits_for_every_port_then_says_which_stay_silent(both, bravo, pkis):
    _admin, client = both
    with socket.socket() as listener, socket.socket() as late:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        late.bind(("127.0.0.1", 0))
        up, down = listener.getsockname()[1], late.getsockname()[1]
        stock(bravo.cfg, "face-rec", {"base": "ab" * 32})
        client.request("POST", "/peer/svms", {**SVM_META, "ports": [up, down]})
        threading.Timer(1.5, late.listen).start()  # the SVM's second port opens late
        health = check_health(client, "face-rec", "127.0.0.1", [up, down], wait=10)
        assert health["healthy"] and health["answering"] == sorted([up, down])
        assert 1.0 <= health["waited_s"] < 5
        late.close()
        health = check_health(client, "face-rec", "127.0.0.1", [up, down], wait=1)
        assert not health["healthy"] and health["silent"] == [down]
        assert health["waited_s"] >= 1


class _AimedDomain:
    def __init__(self) -> None:
        self.aims: list[int] = []

    def migrateSetMaxDowntime(self, ms: int, flags: int) -> None:  # noqa: N802 - libvirt's name
        self.aims.append(ms)


def test_the_downtime_aim_rises_only_while_the_copy_does_not_converge():
    dom = _AimedDomain()
    aim = _Downtime(dom, Settings(max_downtime_ms=50, downtime_ceiling_ms=500))
    mib = 1 << 20

    def poll(second: float, number: int, left_mib: float) -> None:
        aim.check({"memory_iteration": number, "memory_remaining": int(left_mib * mib)}, second)

    poll(0, 1, 384)  # the first pass, however long
    poll(100, 1, 10)
    for second, number, left in ((100, 2, 96), (140, 3, 40), (157, 4, 17), (164, 5, 7.1)):
        poll(second, number, left)  # each pass starts with much less than the last
    assert dom.aims == []
    poll(165, 6, 7.0)  # no longer shrinking: doubled
    poll(166, 7, 7.0)  # not again within 2 s
    poll(166.5, 7, 1.0)  # the same pass: nothing
    poll(167.5, 9, 7.0)  # doubled again
    poll(170, 12, 3.0)  # shrinking again: left alone
    poll(172, 15, 3.0)  # doubled again
    poll(175, 18, 3.0)  # the ceiling, no further
    poll(178, 21, 3.0)
    assert dom.aims == [100, 200, 400, 500] and aim.limit == 500


def test_libvirts_own_downtime_aim_is_left_alone():
    dom = _AimedDomain()
    aim = _Downtime(dom, Settings(max_downtime_ms=0))
    for second in range(60):
        aim.check({"memory_iteration": second, "memory_remaining": 1 << 20}, float(second))
    assert dom.aims == []


# libvirt's constants, as python3-libvirt defines them (the binding is not in the venv).
_LIBVIRT = types.SimpleNamespace(
    VIR_MIGRATE_LIVE=1, VIR_MIGRATE_PEER2PEER=2, VIR_MIGRATE_PERSIST_DEST=8,
    VIR_MIGRATE_UNDEFINE_SOURCE=16, VIR_MIGRATE_NON_SHARED_INC=128, VIR_MIGRATE_COMPRESSED=2048,
    VIR_MIGRATE_TLS=65536, VIR_MIGRATE_PARALLEL=131072, VIR_MIGRATE_PARAM_URI="migrate_uri",
    VIR_MIGRATE_PARAM_COMPRESSION="compression", VIR_MIGRATE_PARAM_BANDWIDTH="bandwidth",
    VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS="parallel.connections")
_ALWAYS = 1 | 2 | 8 | 16 | 128 | 65536


def test_zstd_is_sent_on_parallel_connections_and_xbzrle_on_one():
    flags, params = job_request(_LIBVIRT, Settings(), "10.0.0.2")
    assert flags == _ALWAYS | 2048 | 131072
    assert params == {"migrate_uri": "tcp://10.0.0.2", "compression": "zstd",
                      "parallel.connections": 2}
    flags, params = job_request(_LIBVIRT, Settings(compression="xbzrle", bandwidth_mib=2),
                                "10.0.0.2")
    assert flags == _ALWAYS | 2048
    assert params == {"migrate_uri": "tcp://10.0.0.2", "compression": "xbzrle", "bandwidth": 2}
    assert job_request(_LIBVIRT, Settings(compression=""), "h") == (
        _ALWAYS, {"migrate_uri": "tcp://h"})


class _Libvirtd:
    def __init__(self, version: int) -> None:
        self.version = version

    def getLibVersion(self) -> int:  # noqa: N802 - libvirt's name
        return self.version


def test_zstd_is_refused_before_anything_moves_when_a_libvirt_is_older_than_9_4():
    _check_multifd("zstd", {"here": _Libvirtd(11_003_000), "on the target": _Libvirtd(9_004_000)})
    with pytest.raises(MigrationError) as caught:
        _check_multifd("zstd", {"here": _Libvirtd(11_003_000),
                                "on the target": _Libvirtd(9_000_000)})
    assert caught.value.message.startswith(
        "The libvirt on the target (9.0) cannot ask QEMU for zstd compression")
    assert "migrate_compression=''" in caught.value.hint
    assert "Nothing was moved" in caught.value.hint
