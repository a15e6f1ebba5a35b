"""The migration ceremony on the lab (seed steps 2-7): migrate.yml from cloudlet-a to cloudlet-b.

Real libvirt/QEMU (TCG), hostapd, wpa_supplicant, dnsmasq and Managers. On the
session's lab after the pairing modules (run alone, it sets the lab up
itself). The module is one story, in order: a target that is not paired, or
that lacks the base image, refuses before anything moves; a link cut and a
killed libvirtd on the target mid-migration leave the SVM serving on A; then
the whole mission, device-2 being offline during the handoff; then a second
run that changes nothing; then target=auto among three cloudlets; then moves
that leave the SVM silent on the target.
"""

from __future__ import annotations

import json
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_pair_cloudlets import pair_both

from cloudlet.lab.topology import field_ifname

A, B, C = "cloudlet-a", "cloudlet-b", "cloudlet-c"
SVM = "demo-counter"
SVM_IP = "10.200.0.10"  # the store role's default address
URL = f"http://{SVM}.svm.mission.internal/"
STORE = f"/var/lib/cloudlet/svm/{SVM}"
ADMIN = "curl -sS --unix-socket /run/cloudlet-manager/admin.sock http://c"
CLIENT = "/opt/cloudlet/venv/bin/cloudlet-device"


def migrate(lab, *extra: str, target: str = B):
    return lab.ceremony("migrate", "-e", f"svm={SVM}", "-e", f"target={target}", *extra,
                        check=False)


def domain(lab, host: str) -> str:
    return lab.ssh(host, f"virsh -q domstate {SVM}", check=False).stdout.strip() or "absent"


def counter(lab, device: str) -> dict:
    return json.loads(lab.ssh(device, f"curl -sS --max-time 10 {URL}").stdout)


def messages(lab, host: str) -> list[dict]:
    return json.loads(lab.ssh(host, f"{ADMIN}/admin/messages").stdout)["messages"]


def nothing_moved(lab) -> None:
    """The SVM still runs (and serves) on A; nothing of it on B; no credential was queued."""
    assert domain(lab, A) == "running"
    assert domain(lab, B) == "absent"
    assert lab.ssh(B, f"test -e {STORE}/overlay.qcow2", check=False).returncode != 0
    assert json.loads(lab.ssh(B, f"{ADMIN}/admin/svms").stdout)["svms"] == []
    assert [m for m in messages(lab, A) if m["issuer"] == B] == []


def authenticated(lab, device: str, interface: str) -> bool:
    status = lab.ssh(device, f"wpa_cli -p /run/wpa_supplicant -i {interface} status",
                     check=False).stdout
    return "Supplicant PAE state=AUTHENTICATED" in status


def answering(lab, device: str) -> None:
    """Wait until the SVM answers ``device`` by name (after its DHCP lease and DNS)."""
    wait_until(lambda: lab.ssh(device, f"curl -sS --max-time 5 {URL}",
                               check=False).returncode == 0, 60, f"the SVM answering {device}")


def wait_until(probe, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not probe():
        assert time.monotonic() < deadline, f"no {what} within {seconds:.0f} s"
        time.sleep(1)


@pytest.fixture(scope="module")
def devices(lab):
    """Setup if need be; device-1 and device-2 paired with A, using the SVM, on A's network."""
    if lab.ssh(A, "test -S /run/cloudlet-manager/admin.sock", check=False).returncode:
        lab.ceremony("setup")
    for device in ("device-1", "device-2"):
        lab.ceremony("pair_device", "-e", f"device={device}")
    assert domain(lab, A) == "running"
    for device in ("device-1", "device-2"):
        assert counter(lab, device)["service"] == "counter"


@pytest.fixture(scope="module")
def paired(lab, devices):
    run = pair_both(lab, extra=("-e", "replace=true"))
    assert run.returncode == 0, run.stdout


def test_a_cloudlet_that_is_not_paired_is_refused_before_anything_moves(lab, devices):
    for host, peer in ((A, B), (B, A)):
        lab.ceremony("unpair_cloudlet", "-e", f"cloudlet={host}", "-e", f"peer={peer}")
    run = migrate(lab)
    assert run.returncode != 0
    assert f"Cloudlet '{B}' is not paired with this cloudlet" in run.stdout, run.stdout
    nothing_moved(lab)


def test_a_target_without_the_base_image_refuses_the_metadata(lab, paired):
    lab.ssh(B, f"mv {STORE}/manifest.json {STORE}/manifest.away")
    try:
        run = migrate(lab)
    finally:
        lab.ssh(B, f"mv {STORE}/manifest.away {STORE}/manifest.json")
    assert run.returncode != 0
    assert f"Cloudlet '{B}' does not hold the images of service VM '{SVM}'" in run.stdout
    assert "Nothing was moved" in run.stdout
    nothing_moved(lab)


def _break_mid_migration(lab, breaker, settle: float = 8.0):
    """Migrate slowly (1 MiB/s) and call ``breaker`` once the memory copy runs; meanwhile
    device-1 keeps calling the SVM: every call must be answered, from the same boot."""
    answers, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            try:
                answers.append(counter(lab, "device-1"))
            except (subprocess.SubprocessError, ValueError) as exc:
                answers.append({"error": str(exc)})
            time.sleep(1)

    before = counter(lab, "device-1")
    result = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("run", migrate(lab, "-e", "migrate_bandwidth=1",
                                                        "-e", "migrate_stall=20")))
    watcher = threading.Thread(target=probe)
    thread.start()
    time.sleep(settle)
    watcher.start()
    try:
        breaker()
        thread.join(300)
    finally:
        stop.set()
        watcher.join(30)
    run = result["run"]
    assert run.returncode != 0
    assert "The SVM is running here" in run.stdout, run.stdout
    assert answers and all(a.get("boot_id") == before["boot_id"] for a in answers), answers
    return run


def test_a_link_cut_mid_migration_leaves_the_svm_serving_on_a(lab, paired):
    port = lab.host_port(A, "f-cloudlet-b")
    try:
        run = _break_mid_migration(
            lab, lambda: subprocess.run(["ip", "link", "set", port, "down"], check=True))
    finally:
        subprocess.run(["ip", "link", "set", port, "up"], check=True)
    assert "nothing crossed the link for 20 s" in run.stdout
    # B drops its half once our connection to it is gone; its empty overlay, if the
    # dead link kept us from removing it, is named and replaced by the next migration.
    wait_until(lambda: domain(lab, B) == "absent", 60, "domain gone from B")
    assert domain(lab, A) == "running"
    assert [m for m in messages(lab, A) if m["issuer"] == B] == []


def test_the_targets_libvirtd_killed_mid_migration_leaves_the_svm_on_a(lab, paired):
    run = _break_mid_migration(
        lab, lambda: lab.ssh(B, "systemctl kill --signal=KILL libvirtd"))
    assert "The live migration failed" in run.stdout
    lab.ssh(B, "systemctl start libvirtd")
    wait_until(lambda: domain(lab, B) == "absent", 60, "domain gone from B")
    nothing_moved(lab)


@pytest.fixture(scope="module")
def mission(lab, paired, tmp_path_factory):
    """The whole ceremony, captured on A's port into B's network; device-2 is offline."""
    before = counter(lab, "device-1")
    lab.ssh("device-2", "systemctl stop cloudlet-device")
    pcap = tmp_path_factory.mktemp("migrate") / "link.pcap"
    port = lab.host_port(A, "f-cloudlet-b")
    capture = subprocess.Popen(["tcpdump", "-i", port, "-U", "-s", "0", "-w", str(pcap)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        sent = wire_bytes(port)
        # The default settings: zstd on parallel connections.
        run = migrate(lab, "-e", "migrate_device_wait=60")
        sent = wire_bytes(port) - sent
        time.sleep(1)
    finally:
        capture.terminate()
        capture.wait(10)
    progress = json.loads(lab.ssh(A, f"cat /run/cloudlet-migrate-{SVM}.json").stdout)
    return {"run": run, "before": before, "pcap": pcap, "figures": progress, "wire": sent}


def wire_bytes(port: str) -> int:
    """Bytes through A's port into B's network, both ways (the host's counters)."""
    stats = Path("/sys/class/net", port, "statistics")
    return sum(int((stats / f"{way}_bytes").read_text()) for way in ("rx", "tx"))


def test_the_whole_mission_moves_the_svm_and_its_devices_follow(lab, mission):
    run = mission["run"]
    assert run.returncode == 0, run.stdout
    assert f"{SVM} runs on {B}: moved in" in run.stdout
    assert "It answers on port(s) 80 there." in run.stdout  # asked of B's Manager
    assert "Devices with their credential for cloudlet-b: device-1." in run.stdout
    assert "Not yet: device-2" in run.stdout
    assert domain(lab, B) == "running" and domain(lab, A) == "absent"
    wait_until(lambda: authenticated(lab, "device-1", "f-cloudlet-b"), 60, "device-1 on B")
    assert not authenticated(lab, "device-1", "f-cloudlet-a")
    answering(lab, "device-1")
    after = counter(lab, "device-1")
    assert after["boot_id"] == mission["before"]["boot_id"]  # the same run of the SVM
    assert after["count"] > mission["before"]["count"]  # its memory came along
    assert "cloudlet-cloudlet-b" in lab.ssh("device-1", "head -1 /etc/resolv.conf").stdout


def test_a_device_offline_during_the_handoff_follows_when_it_is_back(lab, mission):
    lab.ssh("device-2", "systemctl start cloudlet-device")
    wait_until(lambda: authenticated(lab, "device-2", "f-cloudlet-b"), 90, "device-2 on B")
    answering(lab, "device-2")  # its lease and DNS come a moment after 802.1X
    status = json.loads(lab.ssh("device-2", f"{CLIENT} status --json").stdout)
    assert status["current"]["identity"].startswith("cloudlet-id-v1/cloudlet-b/device-2@")
    assert counter(lab, "device-2")["boot_id"] == mission["before"]["boot_id"]
    assert all(m["acked_at"] for m in messages(lab, A) if m["issuer"] == B)


def tcp_openings(pcap: bytes, size: int = 64) -> dict[tuple, bytes]:
    """The first ``size`` bytes each way of every TCP connection that opened during an
    Ethernet capture (tcpdump's pcap), by (source, port, destination, port), placed by
    sequence number (a retransmitted segment lands where it belongs)."""
    order = "<" if pcap[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    starts, heads = {}, {}
    offset = 24
    while offset + 16 <= len(pcap):
        (length,) = struct.unpack_from(order + "I", pcap, offset + 8)
        frame = pcap[offset + 16:offset + 16 + length]
        offset += 16 + length
        if frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4 and TCP only
            continue
        tcp = 14 + (frame[14] & 0x0F) * 4
        (ip_length,) = struct.unpack_from("!H", frame, 16)
        sport, dport, seq = struct.unpack_from("!HHI", frame, tcp)
        flow = (frame[26:30], sport, frame[30:34], dport)
        if frame[tcp + 13] & 0x02:  # SYN, and SYN-ACK: both ways of a new connection
            starts[flow] = seq + 1
            heads[flow] = bytearray(size)
            continue
        payload = frame[tcp + (frame[tcp + 12] >> 4) * 4:14 + ip_length]
        at = (seq - starts.get(flow, seq)) % 2**32
        if payload and flow in starts and at < size:
            heads[flow][at:at + len(payload)] = payload[:size - at]
    return {flow: bytes(head) for flow, head in heads.items() if any(head)}


def nbd_starttls(server: bytes, client: bytes) -> bool:
    """An NBD negotiation that turned to TLS before anything else: the server's greeting
    (NBDMAGIC, IHAVEOPT, flags), the client's flags and NBD_OPT_STARTTLS (5), the
    server's acknowledgement, then a TLS handshake record each way."""
    return (server[:16] == b"NBDMAGICIHAVEOPT" and server[38:40] == b"\x16\x03"
            and client[4:16] == b"IHAVEOPT" + struct.pack("!I", 5)
            and client[20:22] == b"\x16\x03")


def test_every_connection_between_the_cloudlets_is_tls(lab, mission):
    """QEMU's main and parallel channels, libvirt's own and the Managers' connections open
    with a TLS handshake, both ways; the disk's NBD connection turns to TLS
    (NBD_OPT_STARTTLS) before its first request."""
    seen = mission["pcap"].read_bytes()
    assert len(seen) > 10_000_000, "the capture missed the stream"
    openings = tcp_openings(seen)
    plain = {}
    for (src, sport, dst, dport), head in openings.items():
        back = openings.get((dst, dport, src, sport), b"")
        if not (head[:2] == b"\x16\x03" or nbd_starttls(head, back)
                or nbd_starttls(back, head)):
            plain[(sport, dport)] = head
    assert not plain, plain
    # libvirt's, QEMU's main and two parallel channels, NBD, the Managers': each way.
    assert len(openings) >= 10, openings
    # The SVM's boot id lives in guest RAM (its counter serves it): never in clear.
    assert mission["before"]["boot_id"].encode() not in seen


def test_only_the_overlay_crosses_the_link(lab, mission):
    figures = mission["figures"]
    assert figures["phase"] == "done"
    manifest = json.loads(lab.ssh(B, f"cat {STORE}/manifest.json").stdout)
    base = manifest["files"]["base"]
    # What libvirt copied of the disk all landed in B's overlay (the top of the chain),
    # as data or as zero clusters: the base image did not cross, B's own copy served as
    # the backing file. (The figure is rounded to 0.1 MiB.)
    extents = json.loads(lab.ssh(
        B, f"qemu-img map -U --output=json {STORE}/overlay.qcow2").stdout)
    top = sum(e["length"] for e in extents if e["depth"] == 0)
    data = sum(e["length"] for e in extents if e["depth"] == 0 and e["data"])
    assert 0 < figures["disk_total_mib"] * 2**20 <= top + 0.05 * 2**20, (figures, top)
    # On the wire (A's port, the host's counters): the guest's memory, compressed
    # (libvirt's figure for the completed job), and at most the overlay's data, in TLS
    # over TCP; nothing else of size. Under the base image's size (200 MiB of
    # incompressible data that no margin here could hide).
    memory, wire = figures["bytes"], mission["wire"]
    assert memory < wire < (memory + data) * 1.15 + 4 * 2**20 < base["size"], \
        (memory, data, wire, base["size"])
    # B's own base image served as the backing file: untouched.
    digest = lab.ssh(B, f"sha256sum {STORE}/{base['name']}").stdout.split()[0]
    assert digest == base["sha256"]


def test_a_second_run_with_the_svm_on_b_changes_nothing(lab, mission):
    run = migrate(lab)
    assert run.returncode == 0, run.stdout
    assert run.recap[A]["changed"] == 0
    assert f"{A} does not hold {SVM}: nothing to move from here" in run.stdout
    # Named as the source, it finds the SVM on B and has nothing left to do.
    run = migrate(lab, "-e", f"source={A}")
    assert run.returncode == 0, run.stdout
    assert run.recap[A]["changed"] == 0
    assert "it already did, nothing moved" in run.stdout
    assert domain(lab, B) == "running" and domain(lab, A) == "absent"


def shape(lab, host: str, peer: str, rate: str | None) -> None:
    """tbf both ways on ``host``'s veth into ``peer``'s field network (``None``: unshaped):
    a tactical radio's rate, with 200 ms of queue."""
    ifname = field_ifname(peer)
    port = lab.host_port(host, ifname)
    if rate is None:
        lab.ssh(host, f"tc qdisc del dev {ifname} root", check=False)
        subprocess.run(["tc", "qdisc", "del", "dev", port, "root"], check=False)
        return
    tbf = ["root", "tbf", "rate", rate, "burst", "32kb", "latency", "200ms"]
    lab.ssh(host, f"tc qdisc replace dev {ifname} {' '.join(tbf)}")
    subprocess.run(["tc", "qdisc", "replace", "dev", port, *tbf], check=True)


def chosen(run) -> tuple[str, dict[str, str]]:
    """The cloudlet target=auto chose, and its line for each candidate."""
    assert run.returncode == 0, run.stdout
    pick = run.stdout.split("Chosen: ")[1].split()[0]
    lines = {c: next(line.strip(' ",') for line in run.stdout.splitlines()
                     if line.strip(' "').startswith(f"{c}: ")) for c in (A, B, C)
             if f'"{c}: ' in run.stdout}
    return pick, lines


def rate(line: str) -> float:
    return float(line.split(": ")[1].split(" Mbit/s")[0])


def test_target_auto_picks_the_fastest_cloudlet_that_can_take_the_svm(lab, mission):
    """Three cloudlets: the SVM on B; A behind a 20 Mbit/s link; C without the base image."""
    for other in (A, B):
        paired = pair_both(lab, extra=("-e", "replace=true"), sides=(other, C))
        assert paired.returncode == 0, paired.stdout
    shape(lab, B, A, "20mbit")
    lab.ssh(C, f"mv {STORE}/manifest.json {STORE}/manifest.away")
    try:
        run = migrate(lab, "-e", "migrate_device_wait=0", target="auto")
    finally:
        lab.ssh(C, f"mv {STORE}/manifest.away {STORE}/manifest.json")
        shape(lab, B, A, None)
    pick, lines = chosen(run)
    assert pick == A, lines  # the only one that can take it, slow as its link is
    assert 10 < rate(lines[A]) < 25 and lines[A].endswith("fits"), lines
    assert f"not eligible: Cloudlet '{C}' does not hold the images of service VM" in lines[C]
    assert f"{SVM} runs on {A}" in run.stdout
    assert domain(lab, A) == "running" and domain(lab, B) == "absent"
    # From A: B behind 20 Mbit/s, C unshaped and now holding the images: C.
    shape(lab, A, B, "20mbit")
    try:
        run = migrate(lab, "-e", "migrate_device_wait=0", target="auto")
    finally:
        shape(lab, A, B, None)
    pick, lines = chosen(run)
    assert pick == C, lines
    assert rate(lines[B]) < 25 < rate(lines[C]) and lines[B].endswith("fits"), lines
    assert domain(lab, C) == "running" and domain(lab, A) == "absent"


def test_a_silent_svm_is_restarted_on_the_target_or_the_ceremony_stops(lab, mission):
    """The SVM runs on C (target=auto). A prohibit route on the target to the SVM's
    address makes its Manager's connects fail, as a guest the move broke would."""
    block, unblock = (f"ip route {verb} prohibit {SVM_IP}/32" for verb in ("add", "del"))
    # The restart helps: the route goes when A sees the SVM reset (libvirt's reboot event).
    lab.ssh(A, block)
    watcher = subprocess.Popen(
        ["ssh", "-F", f"{lab.state_dir}/ssh_config", A,
         f"virsh event --event reboot --timeout 300; {unblock}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = migrate(lab, "-e", "migrate_health_wait=3", "-e", "migrate_device_wait=0",
                      target=A)
    finally:
        watcher.terminate()
        watcher.wait(10)
        lab.ssh(A, unblock, check=False)
    assert run.returncode == 0, run.stdout
    assert "It answers on port(s) 80 there after a restart" in run.stdout
    assert domain(lab, A) == "running" and domain(lab, C) == "absent"
    # Still silent after the restart: the ceremony stops before any device is sent there.
    queued = [m["message_id"] for m in messages(lab, A) if m["issuer"] == C]
    lab.ssh(C, block)
    try:
        run = migrate(lab, "-e", "migrate_health_wait=3", "-e", "migrate_restart_wait=10",
                      target=C)
    finally:
        lab.ssh(C, unblock, check=False)
    assert run.returncode != 0
    assert (f"{SVM} moved to {C} but does not answer there on port(s) 80 at {SVM_IP}, "
            "not even after a restart.") in run.stdout
    assert domain(lab, C) == "running" and domain(lab, A) == "absent"
    assert [m["message_id"] for m in messages(lab, A) if m["issuer"] == C] == queued
    # Once it answers, a second run finishes the handoff and moves nothing.
    run = migrate(lab, "-e", f"source={A}", "-e", "migrate_device_wait=0", target=C)
    assert run.returncode == 0, run.stdout
    assert "it already did, nothing moved" in run.stdout
    # A's repository no longer lists it, so it may come back to A.
    assert SVM not in [s["service_id"] for s in
                       json.loads(lab.ssh(A, f"{ADMIN}/admin/svms").stdout)["svms"]]
