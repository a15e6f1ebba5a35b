"""The radio layer for real: hostapd and wpa_supplicant over mac80211_hwsim.

Each test is one QEMU TCG guest boot (about 45 s, DESIGN.md §6) with one AP
and two stations, one that must associate and one that must not. They need no
lab: the ``lab`` fixture is built only for tests that ask for it.

The configurations are the ones the product renders: for the pairing link,
``cloudlet.peering.link`` with the password the voice code derives
(``pake.link_password``); for the field network, the cloudlet_network role's
hostapd template, the EAP user file of ``cloudlet.access`` and the station
configuration of the device client. Only the control-interface directory is
the harness's, where its guest reads the daemons' state.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2
import pytest
import yaml

from cloudlet.access import EapUser, render_eap_users
from cloudlet.bundles import NetworkCredential
from cloudlet.crypto import codes
from cloudlet.crypto.pake import link_password
from cloudlet.device.network import station_config
from cloudlet.lab.radio import RadioResult, run_radio_check
from cloudlet.peering import link

# A boot takes about 45 s on an idle 2-core host; a loaded one (other QEMU
# guests, a lab build) can take twice that under TCG.
TIMEOUT = 240
FIELD_SSID = "cloudlet-field"
FIELD_DIR = "/etc/cloudlet-network"
ROLE = Path(__file__).resolve().parents[2] / "roles" / "cloudlet_network"


def field_ap_config(ssid: str) -> str:
    """The AP configuration the cloudlet_network role renders for a radio (nl80211)."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(ROLE / "templates"),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    settings = {k: v for k, v in defaults.items() if "{{" not in str(v)}
    settings.update(ansible_managed="test", cloudlet_network_driver="nl80211",
                    cloudlet_network_interface="wlan0", cloudlet_network_ssid=ssid,
                    cloudlet_network_config_dir=FIELD_DIR)
    return env.get_template("hostapd.conf.j2").render(settings)


def field_station_config(ssid: str, identity: str, password: str) -> str:
    """What the device client writes to join a radio network (cloudlet.device.network)."""
    return station_config(NetworkCredential(ssid, identity, password), "nl80211")


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.fail("The radio tests need root: they download into /var/cache/cloudlet-radio.")


def _explain(result: RadioResult) -> str:
    parts = [f"--- hostapd\n{result.ap_log_tail}"]
    parts += [f"--- {s.name} ({s.interface}, {s.wpa_state})\n{s.log_tail}"
              for s in result.stations.values()]
    return "\n".join(parts)


def test_the_pairing_link_admits_only_the_codes_password():
    """What pair_cloudlets.yml brings up on a radio: SAE with the code-derived password."""
    code, other = codes.generate_code(), codes.generate_code()
    assert code != other
    ssid = link.new_ssid()
    password = link_password(code, "cloudlet-a", "cloudlet-b")
    result = run_radio_check(
        link.ap_config("wlan0", ssid, password, "/run/hostapd"),
        {"right": link.station_config(ssid, password, "/run/wpa_supplicant"),
         "wrong": link.station_config(ssid, link_password(other, "cloudlet-a", "cloudlet-b"),
                                      "/run/wpa_supplicant")},
        timeout=TIMEOUT,
    )
    right, wrong = result.stations["right"], result.stations["wrong"]
    assert right.wpa_state == "COMPLETED", _explain(result)
    assert right.key_mgmt == "SAE"
    assert right.status.get("pmf") == "2"
    assert wrong.wpa_state != "COMPLETED", _explain(result)
    assert "CTRL-EVENT-AUTH-REJECT" in wrong.log_tail
    assert result.ap_stations.count("[AUTHORIZED]") == 1


def test_the_rendered_field_network_admits_only_a_paired_device():
    """The role's WPA2/3-Enterprise AP, its EAP user file, the client's station configuration."""
    users = [EapUser("device-1", "field secret one of device-1"),
             EapUser("device-2", "field secret of a revoked one", revoked=True)]
    result = run_radio_check(
        field_ap_config(FIELD_SSID),
        {"paired": field_station_config(FIELD_SSID, "device-1", "field secret one of device-1"),
         "unknown": field_station_config(FIELD_SSID, "device-2", "field secret of a revoked one")},
        files={f"{FIELD_DIR}/eap_users": render_eap_users(users).encode()},
        timeout=TIMEOUT,
    )
    paired, unknown = result.stations["paired"], result.stations["unknown"]
    assert paired.wpa_state == "COMPLETED", _explain(result)
    assert paired.eap == "success"
    assert paired.key_mgmt == "WPA2-EAP-SHA256"
    assert paired.status.get("EAP state") == "SUCCESS"
    assert unknown.wpa_state != "COMPLETED", _explain(result)
    assert unknown.eap == "failure", _explain(result)
