"""The field network's EAP users: the file hostapd reads, and keeping a running hostapd in step."""

from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from cloudlet.access import (
    EapUser,
    HostapdControl,
    NetworkAccessError,
    render_eap_users,
    sync_users,
)
from cloudlet.errors import FormatError

N1 = EapUser("device-1", "first-device-password")
N2 = EapUser("device-2", "second-device-password")


def test_the_user_file_lists_allowed_devices_sorted_with_hex_passwords():
    text = render_eap_users([N2, N1, EapUser("device-3", "lost-device-password", revoked=True)])
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        f'"device-1"\tPWD\t{b"first-device-password".hex()}',
        f'"device-2"\tPWD\t{b"second-device-password".hex()}',
    ]
    assert "first-device-password" not in text


@pytest.mark.parametrize("identity", ['dev"ice', "Device-1", "device 1", "", "-device"])
def test_an_identity_outside_the_device_alphabet_is_refused(identity):
    with pytest.raises(FormatError):
        EapUser(identity, "a-password-long-enough")


def test_short_passwords_and_unknown_methods_are_refused():
    with pytest.raises(FormatError):
        EapUser("device-1", "short")
    with pytest.raises(FormatError, match="lacks 'password'"):
        EapUser.from_dict({"identity": "device-1"})


def test_a_visitor_identity_is_allowed():
    assert '"device-1@cloudlet-b"' in render_eap_users([EapUser("device-1@cloudlet-b", "x" * 20)])


class FakeHostapd:
    def __init__(self, stations):
        self.stations = stations
        self.commands: list[str] = []

    def request(self, command):
        self.commands.append(command)
        if command == "STA-FIRST":
            return self._at(0)
        if command.startswith("STA-NEXT "):
            addrs = [s["addr"] for s in self.stations]
            return self._at(addrs.index(command.split()[1]) + 1)
        return "OK\n"

    def _at(self, index):
        if index >= len(self.stations):
            return ""
        s = self.stations[index]
        return "\n".join([s["addr"]] + [f"{k}={v}" for k, v in s.items() if k != "addr"]) + "\n"


class Control(HostapdControl):
    def __init__(self, fake):
        self.fake = fake

    def request(self, command):
        return self.fake.request(command)


def station(mac, user, authorized=True):
    return {"addr": mac, "flags": "[AUTHORIZED]" if authorized else "",
            "dot1xAuthSessionUserName": user}


def test_sync_writes_the_file_reloads_hostapd_and_kicks_only_revoked_authorized_stations(tmp_path):
    fake = FakeHostapd([
        station("02:00:00:00:00:01", "device-1"),
        station("02:00:00:00:00:02", "device-2"),
        station("02:00:00:00:00:03", "device-9", authorized=False),
    ])
    path = tmp_path / "eap_users"
    result = sync_users([N1, EapUser("device-2", "second-device-password", revoked=True)],
                        path, Control(fake))
    assert result.changed and result.allowed == 1 and result.kicked == ["device-2"]
    assert f"SET eap_user_file {path}" in fake.commands
    assert "DEAUTHENTICATE 02:00:00:00:00:02" in fake.commands
    assert not any(c.endswith(":03") for c in fake.commands if c.startswith("DEAUTH"))
    assert os.stat(path).st_mode & 0o777 == 0o600

    fake.stations[1]["flags"] = ""  # hostapd has unauthorized it
    fake.commands.clear()
    again = sync_users([N1, EapUser("device-2", "second-device-password", revoked=True)],
                       path, Control(fake))
    assert not again.changed and again.kicked == []
    assert not any(c.startswith(("SET", "DEAUTH")) for c in fake.commands)


def test_check_mode_reports_without_touching_anything(tmp_path):
    fake = FakeHostapd([station("02:00:00:00:00:01", "device-1")])
    path = tmp_path / "eap_users"
    result = sync_users([], path, Control(fake), check_mode=True)
    assert result.changed and result.kicked == ["device-1"]
    assert not path.exists()
    assert fake.commands == ["STA-FIRST", "STA-NEXT 02:00:00:00:00:01"]


def test_without_hostapd_only_the_file_is_written(tmp_path):
    result = sync_users([N1], tmp_path / "eap_users", None)
    assert result.changed and (tmp_path / "eap_users").exists()


def test_the_control_client_speaks_hostapds_datagram_protocol(tmp_path):
    path = tmp_path / "field0"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    seen = []

    def serve():
        for _ in range(2):
            data, peer = server.recvfrom(4096)
            seen.append(data.decode())
            server.sendto(b"OK\n" if data.startswith(b"SET") else b"FAIL\n", peer)

    thread = threading.Thread(target=serve)
    thread.start()
    control = HostapdControl(tmp_path, "field0", timeout=2)
    control.command("SET eap_user_file /x")
    with pytest.raises(NetworkAccessError, match="hostapd refused DEAUTHENTICATE: FAIL"):
        control.command("DEAUTHENTICATE 02:00:00:00:00:01")
    thread.join()
    server.close()
    assert seen == ["SET eap_user_file /x", "DEAUTHENTICATE 02:00:00:00:00:01"]


def test_a_missing_hostapd_is_named(tmp_path):
    with pytest.raises(NetworkAccessError, match="not running"):
        HostapdControl(tmp_path, "field0").stations()


def run_module(**args) -> dict:
    from ansible_module import load, run

    return run(load("cloudlet_eap_users"), **args)


def test_the_module_writes_the_file_then_changes_nothing_and_hides_passwords(tmp_path):
    users = [{"identity": "device-1", "password": "first-device-password"},
             {"identity": "device-2", "password": "second-device-password", "revoked": True}]
    args = {"users": users, "path": str(tmp_path / "eap_users"), "ctrl_interface": str(tmp_path),
            "interface": "field0"}
    check = run_module(**args, _ansible_check_mode=True)
    assert check["changed"] and not (tmp_path / "eap_users").exists()
    first = run_module(**args)
    assert first["changed"] and first["allowed"] == 1 and first["hostapd_running"] is False
    assert "first-device-password" not in json.dumps(first)
    assert not run_module(**args)["changed"]


def test_the_module_refuses_bad_input_clearly(tmp_path):
    base = {"path": str(tmp_path / "eap_users"), "ctrl_interface": str(tmp_path),
            "interface": "field0"}
    bad = run_module(users=[{"identity": "Dev 1", "password": "long-enough-password"}], **base)
    assert bad["failed"] and "neither a device's nor a paired cloudlet's" in bad["msg"]
    bad = run_module(users=[], nft_set="cloudlet_field authorized", **base)
    assert bad["failed"] and "family table set" in bad["msg"]
    assert not (tmp_path / "eap_users").exists()
