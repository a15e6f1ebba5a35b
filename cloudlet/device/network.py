"""Joining a cloudlet's network: 802.1X with wpa_supplicant, then DHCP.

``Supplicant`` joins with a bundle's ``NetworkCredential`` (EAP-pwd or
EAP-TLS, never a PSK):

1. it writes wpa_supplicant's configuration for the interface (0600) and
   restarts the ``device_client`` role's templated unit for it
   (``cloudlet-wpa-wired@IF`` on an Ethernet segment, ``cloudlet-wpa-nl80211@IF``
   on a radio; Debian's own units require a udev device unit, which a
   container has not);
2. it waits for the EAP outcome on the control interface; a refusal (an
   unpaired or revoked device) fails at once, with what to do;
3. it asks systemd-networkd for a DHCP lease on the interface (the
   ``device_client`` role writes the ``.network`` file), and waits for the
   address: the cloudlet hands out its own address as DNS server and a route
   to the SVM subnet through itself;
4. it makes the lease's DNS server the device's resolver.

Until the cloudlet has authenticated the device, its gate drops everything
but EAPOL, so DHCP can only succeed after step 2.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from cloudlet.bundles import NetworkCredential
from cloudlet.device.progress import Progress, Silent
from cloudlet.errors import DeviceClientError

__all__ = ["DRIVERS", "ManualNetwork", "NetworkJoiner", "Supplicant", "eap_outcome",
           "station_config"]

DRIVERS = ("wired", "nl80211")
# What wpa_supplicant's quoted strings may hold: printable ASCII but the quote.
_QUOTABLE = re.compile(r'^[\x20-\x21\x23-\x7e]+$')
_EAP = {"pwd": "PWD", "tls": "TLS"}


class NetworkJoiner(Protocol):
    def join(self, credential: NetworkCredential, timeout: float) -> None:
        """Associate and authenticate with the network, or raise a CloudletError."""

    def runs(self, credential: NetworkCredential) -> bool:
        """Whether the supplicant already runs with this credential (joined or trying)."""

    def refresh(self, credential: NetworkCredential) -> dict[str, str] | None:
        """The lease if on the network now (DNS kept current), None while still trying."""

    def current_ssid(self) -> str | None:
        """The SSID the device is on now, if known."""

    def leave(self) -> None:
        """Leave the network: no supplicant, no address, no route through it."""


class ManualNetwork:
    """For a device without a supplicant the client drives: joining is the user's job."""

    def join(self, credential: NetworkCredential, timeout: float) -> None:
        raise DeviceClientError(
            "This device client does not join networks here.",
            f"Join SSID {credential.ssid!r} with EAP-{credential.eap_method.upper()} as "
            f"{credential.identity!r} using the device's network settings.",
        )

    def current_ssid(self) -> str | None:
        return None

    def leave(self) -> None:
        return None


def _quoted(value: str, what: str) -> str:
    if not _QUOTABLE.match(value):
        raise DeviceClientError(
            f"The network credential's {what} holds characters wpa_supplicant cannot take.",
            "Ask the admin to pair the device again.",
        )
    return f'"{value}"'


def _check_driver(driver: str) -> None:
    if driver not in DRIVERS:
        raise DeviceClientError(f"Network driver {driver!r} is not known; use one of {DRIVERS}.")


def station_config(credential: NetworkCredential, driver: str = "wired",
                   ctrl_dir: str = "/run/wpa_supplicant") -> str:
    """wpa_supplicant's configuration for ``credential``: wired 802.1X or WPA2/3-Enterprise."""
    _check_driver(driver)
    if credential.eap_method != "pwd":
        raise DeviceClientError(
            f"EAP-{credential.eap_method.upper()} credentials are not supported by this client.",
            "Ask the admin for an EAP-pwd credential.",
        )
    lines = [f"ctrl_interface={ctrl_dir}", "update_config=0"]
    if driver == "wired":
        lines += ["ap_scan=0", "network={", "\tkey_mgmt=IEEE8021X", "\teapol_flags=0"]
    else:
        lines += [
            "ap_scan=1",
            "network={",
            f"\tssid={_quoted(credential.ssid, 'SSID')}",
            "\tscan_ssid=1",
            "\tkey_mgmt=WPA-EAP WPA-EAP-SHA256",
            "\tproto=RSN",
            "\tpairwise=CCMP",
            "\tgroup=CCMP",
            "\tieee80211w=1",
        ]
    lines += [
        f"\teap={_EAP[credential.eap_method]}",
        f"\tidentity={_quoted(credential.identity, 'identity')}",
        f"\tpassword={_quoted(credential.password, 'password')}",
        "}",
    ]
    return "\n".join(lines) + "\n"


Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def _run(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def eap_outcome(status_text: str, driver: str) -> str | None:
    """From ``wpa_cli status``: "failure" (EAP refused), "authenticated", or None (not yet)."""
    state = _status(status_text)
    if state.get("EAP state") == "FAILURE":
        return "failure"
    if driver == "wired":
        done = state.get("Supplicant PAE state") == "AUTHENTICATED"
    else:
        done = state.get("wpa_state") == "COMPLETED" and state.get("EAP state") == "SUCCESS"
    return "authenticated" if done else None


def _status(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Supplicant:
    """Joins with wpa_supplicant and systemd-networkd (see the module's docstring)."""

    def __init__(
        self,
        interface: str,
        driver: str = "wired",
        *,
        conf_dir: str | os.PathLike = "/etc/wpa_supplicant",
        ctrl_dir: str = "/run/wpa_supplicant",
        resolv_conf: str | os.PathLike = "/etc/resolv.conf",
        leases_dir: str | os.PathLike = "/run/systemd/netif/leases",
        sys_net: str | os.PathLike = "/sys/class/net",
        run: Runner = _run,
        progress: Progress | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_driver(driver)
        self.interface = interface
        self.driver = driver
        self.conf = Path(conf_dir) / f"cloudlet-{driver}-{interface}.conf"
        # The service and an admin's `join` may act on one interface at once.
        self.lock_path = Path(conf_dir) / f".cloudlet-{driver}-{interface}.lock"
        self.unit = f"cloudlet-wpa-{driver}@{interface}.service"
        self.ctrl_dir = ctrl_dir
        self.resolv_conf = Path(resolv_conf)
        self.leases_dir = Path(leases_dir)
        self.sys_net = Path(sys_net)
        self.run = run
        self.progress = progress or Silent()
        self.clock = clock
        self.sleep = sleep
        self._ssid: str | None = None
        self.changed = False

    def _must(self, *args: str) -> str:
        done = self.run(args)
        if done.returncode != 0:
            raise DeviceClientError(
                f"{' '.join(args[:3])} failed: {(done.stderr or done.stdout).strip()}",
                "Check that wpasupplicant and systemd-networkd are installed on the device.",
            )
        return done.stdout

    def _wait(self, what: str, deadline: float, probe: Callable[[], bool]) -> None:
        with self.progress.waiting(what):
            while not probe():
                if self.clock() >= deadline:
                    raise DeviceClientError(
                        f"Timed out: {what} on {self.interface}.",
                        "Check the device is within reach of the cloudlet (radio range, cable) "
                        "and try again.",
                    )
                self.sleep(0.2)

    def _unit_active(self) -> bool:
        return self.run(["systemctl", "is-active", "--quiet", self.unit]).returncode == 0

    def _authenticated(self) -> bool:
        done = self.run(["wpa_cli", "-p", self.ctrl_dir, "-i", self.interface, "status"])
        if done.returncode != 0 and not self._unit_active():
            raise DeviceClientError(
                f"wpa_supplicant is not running on {self.interface} ({self.unit}).",
                f"Read its log: journalctl -u {self.unit}.",
            )
        outcome = eap_outcome(done.stdout, self.driver) if done.returncode == 0 else None
        if outcome == "failure":
            raise DeviceClientError(
                f"The cloudlet refused this device's credential on {self.interface} "
                "(EAP failure).",
                "The device is not paired with this cloudlet, or its pairing was revoked: "
                "ask the admin to pair it again.",
            )
        return outcome == "authenticated"

    def _lease(self) -> dict[str, str] | None:
        done = self.run(["ip", "-j", "-4", "addr", "show", "dev", self.interface])
        try:
            links = json.loads(done.stdout or "[]")
        except ValueError:
            return None
        dynamic = [a for link in links for a in link.get("addr_info", [])
                   if a.get("family") == "inet" and a.get("dynamic")]
        if not dynamic:
            return None
        lease = {"ADDRESS": dynamic[0]["local"]}
        path = self.leases_dir / str(links[0].get("ifindex", ""))
        if path.is_file():
            lease.update(_status(path.read_text()))
        return lease

    def _already_on(self, credential: NetworkCredential) -> dict[str, str] | None:
        """The lease, if the supplicant runs this very configuration and is authenticated."""
        if not self.runs(credential):
            return None
        try:
            return self._lease() if self._authenticated() else None
        except DeviceClientError:
            return None

    @contextlib.contextmanager
    def _locked(self):
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def _use_dns(self, ssid: str, dns: str) -> None:
        text = f"# Written by cloudlet-device: {ssid}\nnameserver {dns}\n"
        with contextlib.suppress(OSError):
            if self.resolv_conf.read_text() == text:
                return
        _write_private(self.resolv_conf, text)
        os.chmod(self.resolv_conf, 0o644)

    def runs(self, credential: NetworkCredential) -> bool:
        """Whether the supplicant runs with exactly this credential's configuration."""
        config = station_config(credential, self.driver, self.ctrl_dir)
        try:
            same = self.conf.read_text() == config
        except OSError:
            return False
        return same and self._unit_active()

    def refresh(self, credential: NetworkCredential) -> dict[str, str] | None:
        """The lease once authenticated and leased, with its DNS made the resolver.

        A supplicant left running retries by itself (out of range, cloudlet
        restarting) and networkd takes the lease when the gate opens; this
        catches up on the resolver. An EAP refusal raises, as in ``join``.
        """
        if not self._authenticated():
            return None
        lease = self._lease()
        if lease and lease.get("DNS"):
            self._use_dns(credential.ssid, lease["DNS"].split()[0])
            self._ssid = credential.ssid
        return lease

    def join(self, credential: NetworkCredential, timeout: float = 60.0) -> dict[str, str]:
        """Join and return the DHCP lease; ``changed`` says whether anything was done."""
        with self._locked():
            return self._join(credential, timeout)

    def _join(self, credential: NetworkCredential, timeout: float) -> dict[str, str]:
        deadline = self.clock() + timeout
        config = station_config(credential, self.driver, self.ctrl_dir)
        lease = self._already_on(credential)
        if lease is not None:
            self.changed = False
            self._ssid = credential.ssid
            self.progress.info(f"already on {credential.ssid}: address {lease['ADDRESS']}")
            return lease
        self.changed = True
        _write_private(self.conf, config)
        self._must("networkctl", "up", self.interface)  # after a leave()
        self._must("systemctl", "restart", self.unit)
        self._wait(f"802.1X authentication as {credential.identity} to {credential.ssid}",
                   deadline, self._authenticated)
        self.progress.info(f"authenticated to {credential.ssid} on {self.interface}")
        self._must("networkctl", "reconfigure", self.interface)
        lease = {}

        def leased() -> bool:
            found = self._lease()
            if found and found.get("DNS"):
                lease.update(found)
            return bool(lease)

        self._wait(f"an address from {credential.ssid}", deadline, leased)
        dns = lease["DNS"].split()[0]
        self._use_dns(credential.ssid, dns)
        self._ssid = credential.ssid
        self.progress.info(f"on {credential.ssid}: address {lease['ADDRESS']}, DNS {dns}")
        return lease

    def current_ssid(self) -> str | None:
        return self._ssid

    def leave(self) -> None:
        """Stop the supplicant (an EAPOL-Logoff closes the cloudlet's gate) and take the
        interface down, which drops the lease's address and its route to the SVMs."""
        with self._locked():
            self._must("systemctl", "stop", self.unit)
            if (self.sys_net / self.interface).exists():  # a radio may be absent
                self._must("networkctl", "down", self.interface)
            self._ssid = None
