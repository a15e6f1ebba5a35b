"""Step 2: join the target cloudlet's network, find its Manager, check it is the paired one.

1. ``Uplink`` joins the peer's field network as a station with the 802.1X
   (EAP-pwd) credential the peer issued us at pairing. wpa_supplicant runs as
   a transient systemd unit, ``cloudlet-uplink-<interface>``, so it outlives
   the Ansible module and a second run finds it authenticated and leaves it.
2. ``discover`` asks DNS-SD on that network for ``<peer>._cloudlet._tcp.local.``
   and accepts the answer only if its TXT record names the CA fingerprint
   stored at pairing.
3. ``reach`` then calls the peer API over mutual TLS, with the paired CA as
   the only anchor and the paired Manager name as the name checked, so
   nothing that discovery said is trusted on its own. A pairing still
   pending is confirmed here (``POST /peer/hello``).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudlet import formats
from cloudlet.admin_client import AdminClient
from cloudlet.bundles import NetworkCredential
from cloudlet.device.network import Runner, eap_outcome, station_config
from cloudlet.errors import MigrationError
from cloudlet.manager.discovery import SERVICE_TYPE
from cloudlet.migration.peer import PeerClient, PeerLink

__all__ = ["Target", "Uplink", "discover", "reach"]

def _run(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, check=False)


class Uplink:
    """This cloudlet as a station on a peer's field network (wired 802.1X or a radio)."""

    def __init__(self, interface: str, driver: str = "wired", *,
                 state_dir: str | Path = "/run/cloudlet-uplink", run: Runner = _run,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interface = interface
        self.driver = driver
        self.state_dir = Path(state_dir)
        self.ctrl_dir = str(self.state_dir / "ctrl")
        self.conf = self.state_dir / f"{interface}.conf"
        self.unit = f"cloudlet-uplink-{interface}.service"
        self.run = run
        self.clock = clock
        self.sleep = sleep

    def _active(self) -> bool:
        return self.run(["systemctl", "is-active", "--quiet", self.unit]).returncode == 0

    def _authenticated(self) -> bool:
        done = self.run(["wpa_cli", "-p", self.ctrl_dir, "-i", self.interface, "status"])
        outcome = eap_outcome(done.stdout, self.driver) if done.returncode == 0 else None
        if outcome == "failure":
            raise MigrationError(
                f"The target's network refused this cloudlet's credential on {self.interface} "
                "(EAP failure).",
                "The target no longer accepts this cloudlet: its admin removed the pairing. "
                "Pair the two cloudlets again. Nothing was moved.",
            )
        return outcome == "authenticated"

    def join(self, credential: NetworkCredential, timeout: float) -> bool:
        """Authenticate on the peer's network; False if already on it with this credential."""
        config = station_config(credential, self.driver, self.ctrl_dir)
        try:
            same = self.conf.read_text() == config
        except OSError:
            same = False
        if same and self._active() and self._authenticated():
            return False
        self.leave()
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        formats.write_secret_file(self.conf, config.encode())
        started = self.run([
            "systemd-run", f"--unit={self.unit}", "--collect",
            f"--description=Cloudlet uplink to {credential.ssid} on {self.interface}",
            "/usr/sbin/wpa_supplicant", "-D", self.driver, "-i", self.interface,
            "-c", str(self.conf),
        ])
        if started.returncode != 0:
            raise MigrationError(
                f"Cannot start wpa_supplicant on {self.interface}: "
                f"{(started.stderr or started.stdout).strip()}",
                "Check that wpasupplicant is installed (setup.yml installs it).",
            )
        deadline = self.clock() + timeout
        while not self._authenticated():
            if not self._active():
                raise MigrationError(
                    f"wpa_supplicant stopped on {self.interface}.",
                    f"Read its log: journalctl -u {self.unit}. Nothing was moved.",
                )
            if self.clock() >= deadline:
                self.leave()
                raise MigrationError(
                    f"Timed out joining {credential.ssid} on {self.interface} "
                    f"(802.1X as {credential.identity}).",
                    "Check the target is in reach (radio range, cable) and try again. "
                    "Nothing was moved.",
                )
            self.sleep(0.2)
        return True

    def leave(self) -> None:
        self.run(["systemctl", "stop", self.unit])
        self.run(["systemctl", "reset-failed", self.unit])

    def address(self, timeout: float) -> str:
        """Our IPv4 address on the interface (static, or the peer's DHCP once joined)."""
        deadline = self.clock() + timeout
        while True:
            done = self.run(["ip", "-j", "-4", "addr", "show", "dev", self.interface])
            try:
                links = json.loads(done.stdout or "[]")
            except ValueError:
                links = []
            found = [a["local"] for link in links for a in link.get("addr_info", [])
                     if a.get("family") == "inet"]
            if found:
                return found[0]
            if self.clock() >= deadline:
                raise MigrationError(f"{self.interface} has no IPv4 address on the target's "
                                     "network.")
            self.sleep(0.2)


def discover(link: PeerLink, local_address: str, timeout: float) -> tuple[str, int]:
    """The peer Manager's address and port, from DNS-SD on the interface we joined."""
    from zeroconf import IPVersion, Zeroconf

    name = f"{link.cloudlet_id}.{SERVICE_TYPE}"
    deadline = time.monotonic() + timeout
    zc = Zeroconf(interfaces=[local_address], ip_version=IPVersion.V4Only)
    try:
        info = None
        while info is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MigrationError(
                    f"No DNS-SD answer for {name} from {local_address} in {timeout:.0f} s.",
                    "The target's Manager is not running, or does not advertise on its field "
                    "network. Nothing was moved.",
                )
            info = zc.get_service_info(SERVICE_TYPE, name, timeout=int(min(3.0, left) * 1000))
    finally:
        zc.close()
    props = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
    if props.get("id") != link.cloudlet_id or props.get("ca") != link.ca_fingerprint:
        raise MigrationError(
            f"The DNS-SD answer for {name} names CA {props.get('ca', '?')[:16]}..., not the CA "
            f"paired as {link.cloudlet_id} ({link.ca_fingerprint[:16]}...).",
            "Another cloudlet claims the target's name. Nothing was sent or moved.",
        )
    addresses = info.parsed_addresses(IPVersion.V4Only)
    if not addresses:
        raise MigrationError(f"The DNS-SD answer for {name} carries no IPv4 address.")
    return addresses[0], info.port


@dataclass
class Target:
    client: PeerClient
    address: str
    port: int
    info: dict
    joined: bool
    confirmed: bool


def reach(admin: AdminClient, link: PeerLink, uplink: Uplink, cert: str | Path,
          key: str | Path, timeout: float) -> Target:
    """Steps 2's whole: join, discover, then the first mutual-TLS call."""
    if link.network is None:
        raise MigrationError(
            f"Cloudlet {link.cloudlet_id} issued this cloudlet no credential for its network.",
            "Pair the two cloudlets again (pair_cloudlets.yml -e replace=true). "
            "Nothing was moved.",
        )
    joined = uplink.join(link.network, timeout)
    address, port = discover(link, uplink.address(timeout), timeout)
    client = PeerClient(link, address, port, cert, key)
    confirmed = False
    if link.pending:
        client.request("POST", "/peer/hello")
        admin.request("POST", f"/admin/cloudlets/{link.cloudlet_id}/confirm")
        confirmed = True
    info = client.request("GET", "/peer/info")
    return Target(client, address, port, info, joined, confirmed)
