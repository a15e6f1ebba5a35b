"""The device client as a service: rounds of join-then-fetch against a real Manager.

The network is a scripted joiner (the supplicant itself is covered in
test_device_network and, for real, in the pairing integration test); the
Manager, TLS and messages are real.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from test_device_client import PERIOD, push_bundle
from test_manager_support import admin, call, client_ctx, pair

from cloudlet.device.agent import Agent, parse_interfaces
from cloudlet.device.client import DeviceClient
from cloudlet.errors import DeviceClientError


class Network:
    """A joiner that records what the agent asked of it."""

    def __init__(self, interface, driver, refused=False):
        self.interface, self.driver, self.refused = interface, driver, refused
        self.joined = []
        self.running = None
        self.left = False

    def runs(self, credential):
        return self.running == credential

    def refresh(self, credential):
        if self.refused:
            raise DeviceClientError("The cloudlet refused this device's credential (EAP failure).")
        return {"ADDRESS": "10.77.2.150"}

    def join(self, credential, timeout):
        self.joined.append(credential.identity)
        self.running = credential
        return {"ADDRESS": "10.77.2.150", "DNS": "10.77.2.1"}

    def leave(self):
        self.left, self.running = True, None


@pytest.fixture
def world(tmp_path):
    lines, nets = [], {}

    def network(interface, driver):
        nets[interface] = Network(interface, driver)
        return nets[interface]

    client = DeviceClient(tmp_path / "state", timeout=10)
    agent = Agent(client, {"cl-alpha": "f-alpha"}, "wired", lines.append, network=network)
    return agent, lines, nets


def test_interfaces_are_given_per_cloudlet_or_for_all():
    assert parse_interfaces(["cl-a=f-a", "cl-b=f-b"]) == {"cl-a": "f-a", "cl-b": "f-b"}
    assert parse_interfaces(["wlan0"]) == {"": "wlan0"}
    with pytest.raises(ValueError, match="no interface"):
        parse_interfaces(["cl-a="])


def test_without_a_credential_it_waits_and_says_so_once(world):
    agent, lines, nets = world
    agent.round()
    agent.round()
    assert lines == ["no credential yet: waiting for an admin to pair this device"]
    assert nets == {}


def test_once_paired_it_joins_fetches_and_then_stays_quiet(world, alpha, pkis, master_a):
    agent, lines, nets = world
    agent.round()
    agent.client.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    agent.round()
    assert nets["f-alpha"].joined == ["tablet-07"]
    assert lines[1:] == [
        "joining net-cl-alpha on f-alpha as tablet-07",
        f"on net-cl-alpha (f-alpha, 10.77.2.150) as cloudlet-id-v1/cl-alpha/tablet-07/{PERIOD}",
        "messages: 0 credential(s) kept for the next cloudlet",
    ]
    agent.round()
    agent.round()
    assert len(lines) == 4 and nets["f-alpha"].joined == ["tablet-07"]


def test_a_lost_manager_is_reported_once_and_the_return_too(world, alpha, pkis, master_a):
    agent, lines, _ = world
    agent.client.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    agent.round()
    agent.client.api_override = "127.0.0.1:1"  # nothing listens there: the Manager is gone
    agent.round()
    agent.round()
    assert len(lines) == 4 and lines[3].startswith("error: ")
    agent.client.api_override = None
    agent.round()
    assert len(lines) == 5 and lines[4] == lines[2]


def test_a_refused_device_is_reported_not_rejoined(world, alpha, pkis, master_a):
    agent, lines, nets = world
    agent.client.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    agent.round()
    nets["f-alpha"].refused = True
    agent.round()
    agent.round()
    assert lines[-1].startswith("error: The cloudlet refused this device's credential")
    assert len(lines) == 4
    assert nets["f-alpha"].joined == ["tablet-07"]  # the supplicant retries by itself


def test_a_cloudlet_without_an_interface_is_an_error_with_the_fix(tmp_path, alpha, pkis, master_a):
    lines = []
    client = DeviceClient(tmp_path / "state", timeout=10)
    client.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    Agent(client, {"cl-bravo": "f-bravo"}, "wired", lines.append, network=Network).round()
    assert lines == ["error: No interface is set for cloudlet cl-alpha's network. "
                     "(Start the agent with --interface cl-alpha=IF (or one --interface IF "
                     "for a radio).)"]


def test_credentials_from_the_next_cloudlet_are_followed_there(
        tmp_path, alpha, bravo, pkis, master_a, master_b):
    """Steps 5 and 6: the message from B arrives via A; the device moves to B's network."""
    lines, nets = [], {}

    def network(interface, driver):
        nets[interface] = Network(interface, driver)
        return nets[interface]

    client = DeviceClient(tmp_path / "state", timeout=10)
    agent = Agent(client, {"cl-alpha": "f-alpha", "cl-bravo": "f-bravo"}, "wired",
                  lines.append, network=network)
    client.import_bundle(push_bundle(alpha, pkis["cl-alpha"], master_a))
    agent.round()
    pair(alpha, pkis["cl-bravo"], master_b, port=bravo.port)
    pair(bravo, pkis["cl-alpha"], master_a)
    ident = f"cloudlet-id-v1/cl-alpha/tablet-07/{PERIOD}"
    status, issued = call(bravo, client_ctx(pkis["cl-bravo"], pkis["cl-alpha"]), "POST",
                          "/peer/device-credentials",
                          {"devices": [{"device_id": "tablet-07", "identity": ident}]})
    assert status == 200, issued
    (cred,) = issued["credentials"]
    admin(alpha, "POST", "/admin/messages", {"device_id": "tablet-07", "kind": "credentials",
                                              "issuer": "cl-bravo", "body": cred["bundle"]})
    agent.round()
    assert nets["f-alpha"].left and nets["f-bravo"].joined == ["tablet-07@cl-alpha"]
    assert client.store.current().params.cloudlet_id == "cl-bravo"
    assert client.store.next_bundles() == []
    assert any(line.startswith("following the SVMs to cl-bravo") for line in lines)
    assert lines[-1].startswith("on net-cl-bravo (f-bravo, 10.77.2.150) as ")
    agent.round()  # on B now, and nothing more to follow
    assert nets["f-bravo"].joined == ["tablet-07@cl-alpha"]


def test_run_stops_when_told(world):
    agent, lines, _ = world
    agent.interval = 0.01
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,))
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and lines[-1] == "stopped"


def test_the_service_command_runs_until_sigterm(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloudlet.device", "--state-dir", str(tmp_path / "s"), "run",
         "--interface", "cl-a=f-a", "--driver", "wired", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert "started" in proc.stdout.readline()
    assert "no credential yet" in proc.stdout.readline()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert out.strip().endswith("cloudlet-device: stopped")


def test_the_service_command_needs_an_interface(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CLOUDLET_DEVICE_INTERFACES"}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    done = subprocess.run(
        [sys.executable, "-m", "cloudlet.device", "--state-dir", str(tmp_path), "run"],
        capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 1 and "No interface given" in done.stderr
