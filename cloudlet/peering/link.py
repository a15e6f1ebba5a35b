"""The temporary link the pairing exchange runs over, and nothing after it.

Two backends, one protocol above them:

* ``radio``: the host side runs hostapd (nl80211) as a WPA3-SAE access point
  on a random SSID, its password derived from the voice code
  (``pake.link_password``, so the radio layer is itself a PAKE and a wrong
  code's station never associates); the join side runs wpa_supplicant with
  the same password and waits until it is associated.
* ``wired``: an Ethernet interface that already joins the two cloudlets (the
  lab's pairing segment, or a cable between two admins' vehicles); there is
  no radio to protect, and the exchange above is a PAKE anyway.

Either way each side then takes a fixed link-local address on the interface
(host ``169.254.77.1``, join ``169.254.77.2``, a /30 that no DHCP server
hands out), and the exchange runs over TCP between those. ``Link`` is a
context manager: on the way out, whatever happened (success, failure,
timeout, interrupt), it stops the daemon it started, removes the address and
deletes its configuration; and before it starts it clears what a crashed run
left behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cloudlet import formats
from cloudlet.errors import PairingError

__all__ = [
    "BACKENDS",
    "HOST_ADDRESS",
    "JOIN_ADDRESS",
    "PORT",
    "SIDES",
    "Link",
    "ap_config",
    "new_ssid",
    "station_config",
]

BACKENDS = ("radio", "wired")
SIDES = ("host", "join")
HOST_ADDRESS = "169.254.77.1"
JOIN_ADDRESS = "169.254.77.2"
PREFIX = 30
PORT = 7747
SSID_PREFIX = "cloudlet-pair-"
_SSID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read over a radio
RUN_DIR = Path("/run/cloudlet-pairing")

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def new_ssid(rng: Callable[[int], bytes] = secrets.token_bytes) -> str:
    """A fresh network name for one pairing, shown to the admins with the code."""
    return SSID_PREFIX + "".join(_SSID_ALPHABET[b % len(_SSID_ALPHABET)] for b in rng(6))


def _check_ssid(ssid: str) -> str:
    if not (isinstance(ssid, str) and ssid.startswith(SSID_PREFIX) and len(ssid) <= 32
            and all(c in _SSID_ALPHABET for c in ssid[len(SSID_PREFIX):])):
        raise PairingError(f"{ssid!r} is not a pairing network name.",
                           f"It starts with {SSID_PREFIX}; ask the other admin to read it again.")
    return ssid


def _check_password(password: str) -> str:
    # What pake.link_password makes: base32, safe unquoted and quoted.
    if not (isinstance(password, str) and 8 <= len(password) <= 63 and password.isalnum()):
        raise PairingError("The link password is not one the pairing code derived.")
    return password


def ap_config(interface: str, ssid: str, password: str, ctrl_dir: str = str(RUN_DIR)) -> str:
    """hostapd: a WPA3-SAE-only access point (PMF required, hash-to-element allowed)."""
    return (
        f"interface={interface}\ndriver=nl80211\nctrl_interface={ctrl_dir}\n"
        f"ssid={_check_ssid(ssid)}\nhw_mode=g\nchannel=1\n"
        "wpa=2\nwpa_key_mgmt=SAE\nrsn_pairwise=CCMP\nieee80211w=2\nsae_pwe=2\n"
        f"sae_password={_check_password(password)}\n"
        # No max_num_sta=1: a station still failing its SAE exchange holds the one
        # slot, and the right one is turned away (status 17, seen over hwsim);
        # SAE keeps out whoever lacks the code anyway.
    )


def station_config(ssid: str, password: str, ctrl_dir: str = str(RUN_DIR)) -> str:
    """wpa_supplicant: associate with that access point only, with SAE."""
    return (
        f"ctrl_interface={ctrl_dir}\nsae_pwe=2\n"
        "network={\n"
        f'    ssid="{_check_ssid(ssid)}"\n    key_mgmt=SAE\n'
        f'    sae_password="{_check_password(password)}"\n    ieee80211w=2\n'
        "}\n"
    )


def _run(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30, check=False)


class Link:
    """Bring the temporary link up for one exchange, and always down again."""

    def __init__(
        self,
        backend: str,
        side: str,
        interface: str,
        *,
        ssid: str | None = None,
        password: str | None = None,
        run_dir: str | os.PathLike = RUN_DIR,
        timeout: float = 30.0,
        run: Runner = _run,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if backend not in BACKENDS or side not in SIDES:
            raise PairingError(f"Unknown pairing link {backend!r}/{side!r}.",
                               f"The backend is one of {', '.join(BACKENDS)}.")
        if backend == "radio" and (ssid is None or password is None):
            raise PairingError("A radio pairing link needs the network name and the code.")
        self.backend, self.side, self.interface = backend, side, interface
        self.ssid, self.password = ssid, password
        self.run_dir = Path(run_dir)
        self.timeout = timeout
        self.run, self.clock, self.sleep = run, clock, sleep
        self.address = HOST_ADDRESS if side == "host" else JOIN_ADDRESS
        self.peer_address = JOIN_ADDRESS if side == "host" else HOST_ADDRESS
        self.port = PORT  # the host side listens there

    @property
    def daemon(self) -> str:
        return "hostapd" if self.side == "host" else "wpa_supplicant"

    @property
    def _pidfile(self) -> Path:
        return self.run_dir / f"{self.daemon}.pid"

    @property
    def _conf(self) -> Path:
        return self.run_dir / f"{self.daemon}.conf"

    def _must(self, *args: str) -> str:
        done = self.run(args)
        if done.returncode != 0:
            raise PairingError(
                f"{' '.join(args[:4])} failed: {(done.stderr or done.stdout).strip()}",
                f"Check the pairing interface {self.interface} "
                + ("and that hostapd and wpasupplicant are installed." if self.backend == "radio"
                   else "exists and is up."),
            )
        return done.stdout

    # --- up -----------------------------------------------------------------

    def up(self) -> None:
        """Bring the link up; the join side waits up to ``timeout`` to associate."""
        self.down()  # whatever a crashed run left
        self._must("ip", "link", "set", self.interface, "up")
        if self.backend == "radio":
            self._start_daemon()
            if self.side == "join":
                self._wait_associated(self.clock() + self.timeout)
        self._must("ip", "addr", "add", f"{self.address}/{PREFIX}", "dev", self.interface)

    def _start_daemon(self) -> None:
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = (ap_config(self.interface, self.ssid, self.password, str(self.run_dir))
                if self.side == "host" else
                station_config(self.ssid, self.password, str(self.run_dir)))
        formats.write_secret_file(self._conf, text.encode())
        if self.side == "host":
            self._must("hostapd", "-B", "-P", str(self._pidfile), str(self._conf))
        else:
            self._must("wpa_supplicant", "-B", "-P", str(self._pidfile), "-D", "nl80211",
                       "-i", self.interface, "-c", str(self._conf))

    def _wait_associated(self, deadline: float) -> None:
        while True:
            done = self.run(["wpa_cli", "-p", str(self.run_dir), "-i", self.interface, "status"])
            if "wpa_state=COMPLETED" in done.stdout:
                return
            if self.clock() >= deadline:
                raise PairingError(
                    f"Could not join the pairing network {self.ssid} on {self.interface}.",
                    "Check the network name and the code with the other admin (a wrong code "
                    "is refused by the radio already), and that the other side is waiting.",
                )
            self.sleep(0.5)

    # --- down ---------------------------------------------------------------

    def down(self) -> None:
        """Stop our daemon, drop our address, delete our files; never raises for absence."""
        with contextlib.suppress(OSError, ValueError):
            pid = int(self._pidfile.read_text().split()[0])
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(
                    self.daemon.encode()):
                os.kill(pid, signal.SIGTERM)
                for _ in range(50):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    self.sleep(0.1)
        for path in (self._pidfile, self._conf):
            path.unlink(missing_ok=True)
        self.run(["ip", "addr", "del", f"{self.address}/{PREFIX}", "dev", self.interface])

    def __enter__(self) -> Link:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.down()
