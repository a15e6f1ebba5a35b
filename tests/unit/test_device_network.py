"""The device joins a cloudlet network: wpa_supplicant's configuration, EAP outcome, DHCP lease."""

from __future__ import annotations

import json
import subprocess

import pytest

from cloudlet.bundles import NetworkCredential
from cloudlet.device.network import Supplicant, station_config
from cloudlet.errors import DeviceClientError

CRED = NetworkCredential("cloudlet-cloudlet-a", "device-1", "a-long-eap-password")


def test_the_wired_configuration_is_8021x_eap_pwd():
    text = station_config(CRED, "wired")
    assert "ap_scan=0" in text and "key_mgmt=IEEE8021X" in text
    assert 'identity="device-1"' in text and "eap=PWD" in text
    assert "ssid" not in text


def test_the_radio_configuration_is_wpa2_3_enterprise():
    text = station_config(CRED, "nl80211")
    assert 'ssid="cloudlet-cloudlet-a"' in text
    assert "key_mgmt=WPA-EAP WPA-EAP-SHA256" in text and "ieee80211w=1" in text
    assert "psk" not in text


def test_a_value_that_would_break_the_configuration_is_refused():
    with pytest.raises(DeviceClientError, match="password"):
        station_config(NetworkCredential("ssid", "device-1", 'pass"word\nnetwork={'), "wired")
    with pytest.raises(DeviceClientError, match="driver"):
        station_config(CRED, "wext")


class Device:
    """Scripted answers of systemctl, wpa_cli, networkctl and ip."""

    def __init__(self, eap_states, lease_after=0, running=True):
        self.running = running
        self.eap_states = list(eap_states)
        self.lease_after = lease_after
        self.calls = []

    def __call__(self, args):
        self.calls.append(list(args))
        out = ""
        if args[:2] == ["systemctl", "is-active"] and not self.running:
            return subprocess.CompletedProcess(args, 3, "", "")
        if args[0] == "wpa_cli" and not self.running:
            return subprocess.CompletedProcess(args, 255, "", "Failed to connect")
        if args[0] == "wpa_cli":
            state = self.eap_states.pop(0) if len(self.eap_states) > 1 else self.eap_states[0]
            out = {"none": "wpa_state=DISCONNECTED\n",
                   "ok": "Supplicant PAE state=AUTHENTICATED\nEAP state=SUCCESS\n",
                   "fail": "Supplicant PAE state=HELD\nEAP state=FAILURE\n"}[state]
        elif args[0] == "ip":
            addr = [] if self.lease_after > 0 else [
                {"family": "inet", "local": "10.77.2.150", "dynamic": True}]
            self.lease_after -= 1
            out = json.dumps([{"ifindex": 7, "addr_info": addr}])
        return subprocess.CompletedProcess(args, 0, out, "")


def joiner(tmp_path, device, clock=None):
    leases = tmp_path / "leases"
    leases.mkdir(exist_ok=True)
    (leases / "7").write_text("ADDRESS=10.77.2.150\nDNS=10.77.2.1\n")
    ticks = iter(range(10_000))
    (tmp_path / "net" / "f-cloudlet-a").mkdir(parents=True, exist_ok=True)
    return Supplicant("f-cloudlet-a", "wired", conf_dir=tmp_path / "wpa",
                      resolv_conf=tmp_path / "resolv.conf", leases_dir=leases, run=device,
                      sys_net=tmp_path / "net",
                      clock=clock or (lambda: next(ticks) * 0.2), sleep=lambda s: None)


def test_join_authenticates_then_takes_the_lease_and_its_dns(tmp_path):
    device = Device(["none", "none", "ok"], lease_after=2)
    lease = joiner(tmp_path, device).join(CRED, timeout=30)
    conf = tmp_path / "wpa" / "cloudlet-wired-f-cloudlet-a.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    assert 'password="a-long-eap-password"' in conf.read_text()
    assert ["systemctl", "restart", "cloudlet-wpa-wired@f-cloudlet-a.service"] in device.calls
    assert ["networkctl", "reconfigure", "f-cloudlet-a"] in device.calls
    # DHCP is asked for only once the cloudlet has authenticated the device.
    first_dhcp = device.calls.index(["networkctl", "reconfigure", "f-cloudlet-a"])
    assert all(c[0] != "wpa_cli" for c in device.calls[first_dhcp:])
    assert lease["ADDRESS"] == "10.77.2.150"
    assert (tmp_path / "resolv.conf").read_text().endswith("nameserver 10.77.2.1\n")


def test_a_second_join_on_the_same_network_changes_nothing(tmp_path):
    first = joiner(tmp_path, Device(["ok"]))
    first.join(CRED, timeout=30)
    assert first.changed
    device = Device(["ok"])
    again = joiner(tmp_path, device)
    assert again.join(CRED, timeout=30)["ADDRESS"] == "10.77.2.150"
    assert not again.changed
    assert not any(c[:2] == ["systemctl", "restart"] for c in device.calls)


def test_an_eap_refusal_fails_at_once_with_what_to_do(tmp_path):
    device = Device(["none", "fail"])
    with pytest.raises(DeviceClientError, match="refused this device's credential") as err:
        joiner(tmp_path, device).join(CRED, timeout=30)
    assert "pair it again" in err.value.hint
    assert not any(c[:2] == ["networkctl", "reconfigure"] for c in device.calls)  # no DHCP
    assert not (tmp_path / "resolv.conf").exists()


def test_a_supplicant_that_died_is_named_with_its_log(tmp_path):
    with pytest.raises(DeviceClientError, match="wpa_supplicant is not running") as err:
        joiner(tmp_path, Device(["none"], running=False)).join(CRED, timeout=30)
    assert "journalctl -u cloudlet-wpa-wired@f-cloudlet-a.service" in err.value.hint


def test_no_answer_times_out_naming_the_interface(tmp_path):
    device = Device(["none"])
    with pytest.raises(DeviceClientError, match="Timed out: 802.1X authentication .* f-cloudlet-a"):
        joiner(tmp_path, device).join(CRED, timeout=5)


def test_a_running_supplicant_is_left_alone_and_its_late_lease_taken_up(tmp_path):
    first = joiner(tmp_path, Device(["ok"]))
    first.join(CRED, timeout=30)
    (tmp_path / "resolv.conf").unlink()
    device = Device(["none", "ok"])
    again = joiner(tmp_path, device)
    assert again.runs(CRED) and not again.runs(NetworkCredential("other", "device-1", "pw-pw-pw"))
    assert again.refresh(CRED) is None  # still authenticating: nothing to do yet
    assert again.refresh(CRED)["ADDRESS"] == "10.77.2.150"
    assert (tmp_path / "resolv.conf").read_text().endswith("nameserver 10.77.2.1\n")
    assert not any(c[:2] == ["systemctl", "restart"] for c in device.calls)
    assert (tmp_path / "wpa" / ".cloudlet-wired-f-cloudlet-a.lock").exists()


def test_leaving_stops_the_supplicant_and_drops_the_address(tmp_path):
    device = Device(["ok"])
    net = joiner(tmp_path, device)
    net.join(CRED, timeout=30)
    net.leave()
    assert device.calls[-2:] == [
        ["systemctl", "stop", "cloudlet-wpa-wired@f-cloudlet-a.service"],
        ["networkctl", "down", "f-cloudlet-a"],
    ]
    assert net.current_ssid() is None


def test_leaving_an_interface_the_device_lacks_is_quiet(tmp_path):
    device = Device(["ok"])
    net = joiner(tmp_path, device)
    (tmp_path / "net" / "f-cloudlet-a").rmdir()  # say, a radio that is not there
    net.leave()
    assert device.calls == [["systemctl", "stop", "cloudlet-wpa-wired@f-cloudlet-a.service"]]
