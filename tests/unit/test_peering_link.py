"""The temporary pairing link: its configurations, and that it always comes down."""

from __future__ import annotations

import subprocess

import pytest
from conftest import DetRng

from cloudlet.crypto import codes
from cloudlet.crypto.pake import link_password
from cloudlet.errors import PairingError
from cloudlet.peering.link import Link, ap_config, new_ssid, station_config

PASSWORD = link_password(codes.generate_code(rng=DetRng(b"link")), "cloudlet-a", "cloudlet-b")


class Host:
    """Scripted ip, hostapd, wpa_supplicant and wpa_cli."""

    def __init__(self, fail=(), associate_after=0):
        self.calls, self.fail, self.associate_after = [], fail, associate_after

    def __call__(self, args):
        args = list(args)
        self.calls.append(args)
        if args[0] in self.fail:
            return subprocess.CompletedProcess(args, 1, "", f"{args[0]}: failed")
        out = ""
        if args[0] == "wpa_cli":
            self.associate_after -= 1
            out = "wpa_state=COMPLETED\n" if self.associate_after < 0 else "wpa_state=SCANNING\n"
        return subprocess.CompletedProcess(args, 0, out, "")


def link(tmp_path, host, backend="wired", side="host", **kw):
    return Link(backend, side, "pair0", run_dir=tmp_path / "run", run=host,
                sleep=lambda s: None, **kw)


def test_ssids_are_fresh_and_easy_to_read():
    names = {new_ssid() for _ in range(50)}
    assert len(names) == 50
    assert all(n.startswith("cloudlet-pair-") and len(n) == 20 for n in names)
    assert not any(c in n[14:] for n in names for c in "01ilo")


def test_the_radio_configurations_are_sae_only_with_pmf():
    ssid = new_ssid(DetRng(b"ssid"))
    ap = ap_config("wlan0", ssid, PASSWORD)
    assert "wpa_key_mgmt=SAE\n" in ap and "ieee80211w=2\n" in ap
    assert f"sae_password={PASSWORD}\n" in ap
    assert "wpa_passphrase" not in ap
    sta = station_config(ssid, PASSWORD)
    assert "key_mgmt=SAE\n" in sta and "ieee80211w=2" in sta and f'ssid="{ssid}"' in sta


def test_a_misread_network_name_or_a_foreign_password_is_refused():
    with pytest.raises(PairingError, match="not a pairing network name"):
        station_config('cloudlet-pair-x"\nnetwork={', PASSWORD)
    with pytest.raises(PairingError, match="not a pairing network name"):
        station_config("home-wifi", PASSWORD)
    with pytest.raises(PairingError, match="derived"):
        ap_config("wlan0", new_ssid(), "pass word\n")


def test_a_wired_link_takes_the_side_address_and_gives_it_back(tmp_path):
    host = Host()
    with link(tmp_path, host) as up:
        assert ["ip", "addr", "add", "169.254.77.1/30", "dev", "pair0"] in host.calls
        assert up.peer_address == "169.254.77.2"
    assert host.calls[-1] == ["ip", "addr", "del", "169.254.77.1/30", "dev", "pair0"]
    assert not any(c[0] in ("hostapd", "wpa_supplicant") for c in host.calls)


def test_the_link_comes_down_when_the_exchange_fails(tmp_path):
    host = Host()
    with pytest.raises(RuntimeError), link(tmp_path, host, side="join"):
        raise RuntimeError("the exchange failed")
    assert host.calls[-1] == ["ip", "addr", "del", "169.254.77.2/30", "dev", "pair0"]


def test_the_radio_join_side_waits_to_associate_then_cleans_up(tmp_path):
    host = Host(associate_after=3)
    ssid = new_ssid()
    with link(tmp_path, host, "radio", "join", ssid=ssid, password=PASSWORD):
        conf = tmp_path / "run" / "wpa_supplicant.conf"
        assert conf.stat().st_mode & 0o777 == 0o600 and ssid in conf.read_text()
        assert sum(c[0] == "wpa_cli" for c in host.calls) == 4
    assert not (tmp_path / "run" / "wpa_supplicant.conf").exists()


def test_a_radio_that_never_associates_ends_at_the_timeout_and_cleans_up(tmp_path):
    ticks = iter(range(1000))
    host = Host(associate_after=10**6)
    radio = link(tmp_path, host, "radio", "join", ssid=new_ssid(), password=PASSWORD,
                 timeout=5, clock=lambda: next(ticks))
    with pytest.raises(PairingError, match="Could not join the pairing network"), radio:
        pass
    assert not (tmp_path / "run" / "wpa_supplicant.conf").exists()
    assert host.calls[-1][:3] == ["ip", "addr", "del"]


def test_a_missing_daemon_is_named(tmp_path):
    host = Host(fail=("hostapd",))
    with pytest.raises(PairingError, match="hostapd -B -P .* failed") as err, \
            link(tmp_path, host, "radio", "host", ssid=new_ssid(), password=PASSWORD):
        pass
    assert "hostapd and wpasupplicant are installed" in err.value.hint
