"""The radio layer for real: hostapd and wpa_supplicant over mac80211_hwsim.

Each test is one QEMU TCG guest boot (about 45 s, DESIGN.md §6) with one AP
and two stations, one that must associate and one that must not. They need no
lab: the ``lab`` fixture is built only for tests that ask for it.

The configuration texts come from the helpers below for now; the roles'
rendered configurations (the AP template, the station function) go into the
same harness later.
"""

from __future__ import annotations

import os

import pytest

from cloudlet.lab.radio import RadioResult, run_radio_check

# A boot takes about 45 s on an idle 2-core host; a loaded one (other QEMU
# guests, a lab build) can take twice that under TCG.
TIMEOUT = 240
PAIR_SSID = "cloudlet-pair"
FIELD_SSID = "cloudlet-field"
EAP_USERS = "/etc/radio/eap_user"


def sae_ap_config(ssid: str, password: str) -> str:
    return f"""interface=wlan0
driver=nl80211
ssid={ssid}
hw_mode=g
channel=1
wpa=2
wpa_key_mgmt=SAE
rsn_pairwise=CCMP
ieee80211w=2
sae_pwe=2
sae_password={password}
"""


def sae_station_config(ssid: str, password: str) -> str:
    return f"""sae_pwe=2
network={{
    ssid="{ssid}"
    key_mgmt=SAE
    sae_password="{password}"
    ieee80211w=2
}}
"""


def enterprise_ap_config(ssid: str, eap_user_file: str) -> str:
    return f"""interface=wlan0
driver=nl80211
ssid={ssid}
hw_mode=g
channel=1
ieee8021x=1
eap_server=1
eap_user_file={eap_user_file}
wpa=2
wpa_key_mgmt=WPA-EAP WPA-EAP-SHA256
ieee80211w=1
rsn_pairwise=CCMP
"""


def eap_users(users: dict[str, str]) -> bytes:
    return "".join(f'"{name}" PWD "{password}"\n' for name, password in users.items()).encode()


def eap_pwd_station_config(ssid: str, identity: str, password: str) -> str:
    return f"""network={{
    ssid="{ssid}"
    key_mgmt=WPA-EAP WPA-EAP-SHA256
    eap=PWD
    identity="{identity}"
    password="{password}"
    ieee80211w=1
}}
"""


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("The radio tests need root: they download into /var/cache/cloudlet-radio.")


def _explain(result: RadioResult) -> str:
    parts = [f"--- hostapd\n{result.ap_log_tail}"]
    parts += [f"--- {s.name} ({s.interface}, {s.wpa_state})\n{s.log_tail}"
              for s in result.stations.values()]
    return "\n".join(parts)


def test_wpa3_sae_pairing_link_admits_only_the_right_password():
    password = "tactical pairing link 7"
    result = run_radio_check(
        sae_ap_config(PAIR_SSID, password),
        {"right": sae_station_config(PAIR_SSID, password),
         "wrong": sae_station_config(PAIR_SSID, "tactical pairing link 8")},
        timeout=TIMEOUT,
    )
    right, wrong = result.stations["right"], result.stations["wrong"]
    assert right.wpa_state == "COMPLETED", _explain(result)
    assert right.key_mgmt == "SAE"
    assert right.status.get("pmf") == "2"
    assert wrong.wpa_state != "COMPLETED", _explain(result)
    assert "CTRL-EVENT-AUTH-REJECT" in wrong.log_tail
    assert result.ap_stations.count("[AUTHORIZED]") == 1


def test_eap_pwd_field_network_admits_only_a_paired_identity():
    result = run_radio_check(
        enterprise_ap_config(FIELD_SSID, EAP_USERS),
        {"paired": eap_pwd_station_config(FIELD_SSID, "device-1", "field secret one"),
         "unknown": eap_pwd_station_config(FIELD_SSID, "stranger", "field secret one")},
        files={EAP_USERS: eap_users({"device-1": "field secret one"})},
        timeout=TIMEOUT,
    )
    paired, unknown = result.stations["paired"], result.stations["unknown"]
    assert paired.wpa_state == "COMPLETED", _explain(result)
    assert paired.eap == "success"
    assert paired.key_mgmt == "WPA2-EAP-SHA256"
    assert paired.status.get("EAP state") == "SUCCESS"
    assert unknown.wpa_state != "COMPLETED", _explain(result)
    assert unknown.eap == "failure", _explain(result)
