"""The device pairing ceremony on the lab: push, 802.1X, DHCP, use, capture, revocation.

On the session's lab, after test_setup_delivery.py (conftest's LAB_ORDER;
run alone, this module runs setup itself): device-1 is paired with its home
cloudlet-a, joins cloudlet-a's network over EAP-pwd, gets its address and
DNS from cloudlet-a's DHCP, and reaches the Manager and the SVM by name; a
second run and a check run change nothing. device-2, unpaired, gets EAP
failure and nothing through the gate. A capture on the field segment shows
no secret in clear. Revoking device-1 cuts it off within 5 s while device-2,
paired meanwhile, stays connected.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

CLIENT = "/opt/cloudlet/venv/bin/cloudlet-device"
SVM_URL = "http://demo-counter.svm.mission.internal/"
FIELD_IF = "f-cloudlet-a"  # a device's port on cloudlet-a's field network
WPA_CLI = f"wpa_cli -p /run/wpa_supplicant -i {FIELD_IF}"


@pytest.fixture(scope="module")
def paired(lab):
    if lab.ssh("cloudlet-a", "test -S /run/cloudlet-manager/admin.sock", check=False).returncode:
        lab.ceremony("setup")
    return lab.ceremony("pair_device", "-e", "device=device-1")


@pytest.fixture(scope="module")
def field_ip(lab, paired) -> str:
    return lab.address("cloudlet-a", "field0")


def eap_password(lab, device: str) -> str:
    users = json.loads(lab.ssh("cloudlet-a", "curl -sS --unix-socket "
                               "/run/cloudlet-manager/admin.sock http://c/admin/eap-users").stdout)
    return {u["identity"]: u["password"] for u in users["users"]}[device]


def wait_for(lab, host: str, state: str, seconds: float) -> None:
    """Poll wpa_supplicant until its status shows ``state``."""
    deadline = time.monotonic() + seconds
    while True:
        status = lab.ssh(host, f"{WPA_CLI} status", check=False).stdout
        if state in status:
            return
        assert time.monotonic() < deadline, f"{host}: no {state} within {seconds} s:\n{status}"
        time.sleep(0.2)


def test_pairing_pushes_the_bundle_and_a_second_run_changes_nothing(lab, paired):
    assert paired.recap["cloudlet-a"]["changed"] > 0
    assert "Paired device-1 with cloudlet-a" in paired.stdout
    status = json.loads(lab.ssh("device-1", f"{CLIENT} status --json").stdout)
    assert status["current"]["identity"].startswith("cloudlet-id-v1/cloudlet-a/device-1/")
    assert status["current"]["eap_identity"] == "device-1"
    assert status["pairing_request"] is False  # the one-time key is gone after the import
    ca = lab.ssh("cloudlet-a", "openssl x509 -in /etc/cloudlet/pki/ca.pem -outform DER "
                               "| sha256sum").stdout.split()[0]
    assert status["ca_fingerprint"] == ca
    again = lab.ceremony("pair_device", "-e", "device=device-1")
    assert {h: r["changed"] for h, r in again.recap.items()} == {
        h: 0 for h in again.recap}, again.recap
    check = lab.ceremony("pair_device", "-e", "device=device-1", "--check")
    assert {r["changed"] for r in check.recap.values()} == {0}


def test_the_paired_device_joined_over_eap_and_took_address_and_dns_from_dhcp(lab, field_ip):
    state = lab.ssh("device-1", f"{WPA_CLI} status").stdout
    assert "EAP state=SUCCESS" in state and "selectedMethod=52 (EAP-PWD)" in state
    addrs = json.loads(lab.ssh("device-1", f"ip -j -4 addr show dev {FIELD_IF}").stdout)
    leased = [a for a in addrs[0]["addr_info"] if a.get("dynamic")]
    assert leased and leased[0]["local"].rsplit(".", 1)[0] == field_ip.rsplit(".", 1)[0]
    assert lab.ssh("device-1", "cat /etc/resolv.conf").stdout.strip().endswith(
        f"nameserver {field_ip}")
    assert f"via {field_ip} " in lab.ssh("device-1", "ip -4 route get 10.200.0.10").stdout


def test_the_paired_device_reaches_the_manager_and_the_svm_by_name(lab, paired):
    # No --api: the bundle names the Manager's FQDN, which the cloudlet's DNS answers.
    ok = lab.ssh("device-1", f"{CLIENT} messages", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    counts = [json.loads(lab.ssh("device-1", f"curl -sS --max-time 10 {SVM_URL}").stdout)["count"]
              for _ in range(2)]
    assert counts[1] > counts[0]


def test_the_device_client_service_stays_on_the_network_without_rejoining(lab, paired):
    """The cloudlet-device service (device_client role): its round finds the device on."""
    show = "systemctl show -P InvocationID cloudlet-wpa-wired@" + FIELD_IF
    supplicant = lab.ssh("device-1", show).stdout
    lab.ssh("device-1", "systemctl restart cloudlet-device")  # a round now, not in 30 s
    deadline = time.monotonic() + 30
    this_run = ("journalctl -o cat --no-pager _SYSTEMD_INVOCATION_ID="
                "$(systemctl show -P InvocationID cloudlet-device)")
    while "messages: 0 credential(s)" not in (log := lab.ssh("device-1", this_run).stdout):
        assert time.monotonic() < deadline, log
        time.sleep(0.5)
    assert f"on cloudlet-cloudlet-a ({FIELD_IF}, " in log and "error" not in log
    assert lab.ssh("device-1", show).stdout == supplicant


def test_an_unpaired_device_gets_eap_failure_and_nothing_through(lab, field_ip):
    """device-2, not paired yet, tries a credential the cloudlet does not know."""
    conf = ("ctrl_interface=/run/wpa_supplicant\nap_scan=0\nnetwork={\n key_mgmt=IEEE8021X\n"
            ' eap=PWD\n identity="device-stranger"\n password="a-guessed-password"\n'
            " eapol_flags=0\n}\n")
    lab.ssh("device-2", f"umask 077; cat > /etc/wpa_supplicant/cloudlet-wired-{FIELD_IF}.conf "
                        f"<<'EOF'\n{conf}EOF\nsystemctl restart cloudlet-wpa-wired@{FIELD_IF}")
    wait_for(lab, "device-2", "EAP state=FAILURE", 30)
    lab.ssh("device-2", f"networkctl reconfigure {FIELD_IF}; sleep 8")
    assert " inet " not in lab.ssh("device-2", f"ip -4 -o addr show dev {FIELD_IF}").stdout
    # An address taken by hand gets no further: only EAPOL passes the gate.
    intruder = field_ip.rsplit(".", 1)[0] + ".250"
    svm_ip = lab.ssh(
        "cloudlet-a", "grep demo-counter /etc/cloudlet-dns/svm-hosts").stdout.split()[0]
    lab.ssh("device-2", f"ip addr add {intruder}/24 dev {FIELD_IF}; "
                        f"ip route replace 10.200.0.0/24 via {field_ip}; "
                        f"echo 'nameserver {field_ip}' > /etc/resolv.conf")
    try:
        for probe in (f"ping -c 2 -W 2 {field_ip}",
                      "getent ahostsv4 manager.cloudlet-a.cloudlet",
                      f"curl -sk --max-time 4 https://{field_ip}:8443/openapi.json",
                      f"curl -s --max-time 4 http://{svm_ip}/"):
            assert lab.ssh("device-2", probe, check=False).returncode != 0, probe
    finally:
        lab.ssh("device-2", f"systemctl stop cloudlet-wpa-wired@{FIELD_IF}; "
                            f"ip addr flush dev {FIELD_IF}; ip route del 10.200.0.0/24",
                check=False)
        # hostapd holds a station that failed EAP off for 60 s (802.1X's quiet
        # period); forget it, so pairing device-2 later is not delayed.
        mac = json.loads(lab.ssh("device-2", f"ip -j link show dev {FIELD_IF}").stdout)[0]
        lab.ssh("cloudlet-a", "hostapd_cli -p /run/cloudlet-network -i field0 "
                              f"deauthenticate {mac['address']}", check=False)


def test_a_capture_on_the_field_segment_holds_no_secret_in_clear(lab, paired, tmp_path):
    pcap = tmp_path / "field.pcap"
    port = lab.host_port("device-1", FIELD_IF)
    capture = subprocess.Popen(["tcpdump", "-i", port, "-U", "-s", "0", "-w", str(pcap)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(2)
        # A new EAP exchange (wpa_supplicant starts it about 2 s after the request).
        lab.ssh("device-1", f"{WPA_CLI} reassociate; sleep 4")
        wait_for(lab, "device-1", "Supplicant PAE state=AUTHENTICATED", 20)
        lab.ssh("device-1", f"{CLIENT} messages; curl -sS --max-time 10 {SVM_URL}")
        time.sleep(1)
    finally:
        capture.terminate()
        capture.wait(10)
    data = pcap.read_bytes()
    eapol = subprocess.run(["tcpdump", "-r", str(pcap), "ether proto 0x888e"],
                           capture_output=True, text=True, check=False).stdout
    tls = subprocess.run(["tcpdump", "-r", str(pcap), "tcp port 8443"],
                         capture_output=True, text=True, check=False).stdout
    assert eapol and tls, f"the capture on {port} missed the EAP exchange or the API call: " \
        f"{capture.stderr.read().decode()}"
    identity = json.loads(lab.ssh("device-1", f"{CLIENT} status --json").stdout)["current"]
    for secret in (eap_password(lab, "device-1"), identity["identity"], "ibe_master"):
        assert secret.encode() not in data, f"{secret[:12]}… crossed the field segment in clear"


# Run on a paired device with its own credential: the device API refuses a
# proof for another device's identity, one for another period, and a replayed one.
FORGERIES = """
import json
from dataclasses import replace
import cloudlet.device.api as api
from cloudlet.crypto.identity import device_identity
from cloudlet.device.store import CredentialStore
from cloudlet.errors import CloudletRefused
from cloudlet.manager import protocol
bundle = CredentialStore().current()
key, audience = bundle.device_key, bundle.params.cloudlet_id
def status(device_key):
    try:
        api.DeviceApi(replace(bundle, device_key=device_key)).messages()
        return 200
    except CloudletRefused as exc:
        return exc.status
other = replace(key, identity=device_identity(audience, "device-1", key.identity.period))
period = replace(key, identity=replace(key.identity, period=key.identity.period.next()))
result = {"own": status(key), "other_device": status(other), "other_period": status(period)}
proof = protocol.authorization_header(key, audience, "GET", "/device/messages", b"")
api.protocol.authorization_header = lambda *args, **kwargs: proof
result["first_use"], result["replayed"] = status(key), status(key)
print(json.dumps(result))
"""


def test_the_api_refuses_another_identity_another_period_and_a_replay(lab, paired):
    lab.ceremony("pair_device", "-e", "device=device-2")
    out = lab.ssh("device-2", f"/opt/cloudlet/venv/bin/python - <<'EOF'\n{FORGERIES}EOF")
    result = json.loads(out.stdout)
    assert result["own"] == result["first_use"] == 200, result
    assert {result["other_device"], result["other_period"], result["replayed"]} <= {401, 403}, \
        result


def test_unknown_device_fails_clearly(lab, paired):
    run = lab.ceremony("pair_device", "-e", "device=device-99", check=False)
    assert run.returncode != 0
    assert "Unknown device device-99" in run.stdout


def test_revoking_a_device_cuts_it_off_at_once_and_leaves_the_other_connected(lab, field_ip):
    lab.ceremony("pair_device", "-e", "device=device-2")
    assert "Supplicant PAE state=AUTHENTICATED" in lab.ssh("device-2", f"{WPA_CLI} status").stdout
    lab.ceremony("revoke_device", "-e", "device=device-1")
    # Within 5 s of the ceremony's end: the gate drops device-1's API call (dialled
    # by address, so no DNS timeout counts) ...
    start = time.monotonic()
    refused = lab.ssh("device-1", f"{CLIENT} --api {field_ip}:8443 --timeout 3 messages",
                      check=False)
    assert refused.returncode == 1 and time.monotonic() - start < 5, refused.stderr
    # ... and its next EAP attempt fails (wpa_supplicant starts it about 2 s after asked).
    lab.ssh("device-1", f"{WPA_CLI} reassociate")
    wait_for(lab, "device-1", "EAP state=FAILURE", 5)
    # device-2 never had to authenticate again.
    assert "Supplicant PAE state=AUTHENTICATED" in lab.ssh("device-2", f"{WPA_CLI} status").stdout
    lab.ssh("device-2", f"ping -c 1 -W 2 {field_ip}")
    ok = lab.ssh("device-2", f"{CLIENT} messages", check=False)
    assert ok.returncode == 0, ok.stdout + ok.stderr
