"""Who may use the cloudlet's field network: hostapd's EAP users, kept in step.

The Manager is the one record of paired devices and their EAP passwords. The
``cloudlet_network`` role reads them from its admin socket and hands them to
``sync_users``, which

* writes hostapd's EAP user file atomically (0600, root), revoked devices left out;
* makes the running hostapd re-read it through its control interface
  (``SET eap_user_file``): measured in the lab, this re-reads the users
  without disturbing any authenticated station, where ``RELOAD`` restarts
  the interface and drops every station;
* deauthenticates every station whose identity is no longer allowed, and
  removes its MAC from the nftables set that lets traffic through, so a
  revoked device loses the network at once, not at its next re-authentication.

Debian's hostapd is built without ``CONFIG_SQLITE``, so its SQLite user store
(read at every authentication) is not available; the control-interface call
is the way to change users on the fly.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloudlet.errors import CloudletError, FormatError, StorageError
from cloudlet.manager.schema import DEVICE_NAME, ID

__all__ = [
    "EapUser",
    "HostapdControl",
    "NetworkAccessError",
    "SyncResult",
    "render_eap_users",
    "sync_users",
]

# A device as the Manager names it (``device-1``, a visitor ``device-1@cloudlet-b``), or
# a paired cloudlet (``peer:cloudlet-b``).
_IDENTITY_RE = re.compile(
    rf"^(?:{DEVICE_NAME['pattern'].strip('^$')}|peer:{ID['pattern'].strip('^$')})$"
)
_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")


class NetworkAccessError(CloudletError):
    """The field network's access control could not be brought in step."""

    default_hint = (
        "Check that the cloudlet network service runs (systemctl status cloudlet-network) "
        "and read its log (journalctl -u cloudlet-network)."
    )


@dataclass(frozen=True, repr=False)
class EapUser:
    identity: str
    password: str
    revoked: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.identity, str) or not _IDENTITY_RE.match(self.identity):
            raise FormatError(f"EAP identity {self.identity!r} is neither a device's nor a "
                              "paired cloudlet's.")
        if not isinstance(self.password, str) or len(self.password) < 16:
            raise FormatError(f"The EAP password of {self.identity} is shorter than 16 characters.")

    def __repr__(self) -> str:
        return f"EapUser({self.identity!r}, <password>, revoked={self.revoked})"

    @classmethod
    def from_dict(cls, data: Mapping) -> EapUser:
        try:
            return cls(data["identity"], data["password"], bool(data.get("revoked", False)))
        except KeyError as exc:
            raise FormatError(f"An EAP user entry lacks {exc.args[0]!r}.") from None


def render_eap_users(users: Iterable[EapUser]) -> str:
    """hostapd's ``eap_user_file``: one EAP-pwd line per allowed device, sorted.

    EAP-pwd resists offline guessing of the password (a capture of the
    exchange does not let an attacker test guesses), unlike PEAP or TTLS with
    an inner password method.

    The password is written in hex (hostapd's unquoted form), so no character
    of it can end the field early; the identity is checked against the
    device-id alphabet, which needs no quoting beyond the double quotes.
    """
    lines = ["# Written by the cloudlet_network role from the Manager's paired devices.\n"]
    for user in sorted(users, key=lambda u: u.identity):
        if user.revoked:
            continue
        lines.append(f'"{user.identity}"\tPWD\t{user.password.encode().hex()}\n')
    return "".join(lines)


class HostapdControl:
    """hostapd's control interface: datagrams on a UNIX socket, one reply each."""

    def __init__(self, ctrl_dir: str | os.PathLike, interface: str, timeout: float = 5.0):
        self.path = Path(ctrl_dir) / interface
        self.timeout = timeout

    def request(self, command: str) -> str:
        with tempfile.TemporaryDirectory(prefix="cloudlet-hostapd-") as tmp:
            local = os.path.join(tmp, "c")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(local)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(str(self.path))
                    sock.send(command.encode())
                    return sock.recv(65536).decode(errors="replace")
                except FileNotFoundError:
                    raise NetworkAccessError(
                        f"hostapd has no control socket at {self.path}: it is not running."
                    ) from None
                except (ConnectionRefusedError, TimeoutError, OSError) as exc:
                    raise NetworkAccessError(
                        f"hostapd did not answer {command.split()[0]} on {self.path}: {exc}."
                    ) from None

    def command(self, command: str) -> None:
        reply = self.request(command).strip() or "no reply"
        if reply != "OK":
            raise NetworkAccessError(f"hostapd refused {command.split()[0]}: {reply}.")

    def stations(self) -> list[dict[str, str]]:
        """Every station hostapd knows, with ``addr``, ``flags`` and its 802.1X user name."""
        found = []
        reply = self.request("STA-FIRST")
        while reply.strip() and reply.strip() != "FAIL":
            lines = reply.splitlines()
            station = {"addr": lines[0].strip()}
            for line in lines[1:]:
                key, sep, value = line.partition("=")
                if sep:
                    station[key] = value
            found.append(station)
            reply = self.request(f"STA-NEXT {station['addr']}")
        return found


@dataclass
class SyncResult:
    changed: bool = False
    allowed: int = 0
    kicked: list[str] = field(default_factory=list)


def _write_atomic(path: Path, text: str) -> bool:
    try:
        if path.exists() and path.read_text() == text:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                os.fchmod(handle.fileno(), 0o600)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise StorageError(f"Cannot write the EAP user file {path}: {exc.strerror}.") from None
    return True


def _unauthorize(nft_set: str, mac: str) -> None:
    """Drop a MAC from the gate's set (``family table set``); absent is fine."""
    family, table, name = nft_set.split()
    subprocess.run(["nft", "delete", "element", family, table, name, "{", mac, "}"],
                   capture_output=True, check=False)


def sync_users(
    users: Iterable[EapUser],
    user_file: str | os.PathLike,
    control: HostapdControl | None,
    nft_set: str | None = None,
    check_mode: bool = False,
) -> SyncResult:
    """Bring hostapd's EAP users in step with ``users``; kick those no longer allowed.

    ``control`` is None when hostapd is not running yet: then only the file is
    written, and hostapd reads it when it starts.
    """
    users = list(users)
    allowed = {u.identity for u in users if not u.revoked}
    text = render_eap_users(users)
    path = Path(user_file)
    result = SyncResult(allowed=len(allowed))
    if check_mode:
        result.changed = not path.exists() or path.read_text() != text
    else:
        result.changed = _write_atomic(path, text)
    if control is None:
        return result
    if result.changed and not check_mode:
        control.command(f"SET eap_user_file {path}")
    for station in control.stations():
        name = station.get("dot1xAuthSessionUserName")
        mac = station["addr"].lower()
        authorized = "[AUTHORIZED]" in station.get("flags", "")
        if not authorized or name in allowed or not _MAC_RE.match(mac):
            continue
        result.kicked.append(name or mac)
        result.changed = True
        if not check_mode:
            control.command(f"DEAUTHENTICATE {mac}")
            if nft_set:
                _unauthorize(nft_set, mac)
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudlet.access``: bring hostapd in step with the Manager, once.

    Run as root by the cloudlet_network role's ``cloudlet-eap-sync`` unit when
    the Manager says its users changed (a visitor adopted through the peer API,
    a device paired or revoked).
    """
    import argparse

    from cloudlet.admin_client import AdminClient

    parser = argparse.ArgumentParser(prog="python -m cloudlet.access", description=main.__doc__)
    parser.add_argument("--admin-socket", required=True)
    parser.add_argument("--path", required=True, help="hostapd's EAP user file")
    parser.add_argument("--ctrl-interface", required=True, help="hostapd's control directory")
    parser.add_argument("--interface", required=True)
    parser.add_argument("--nft-set", help="'family table set' of authorized stations")
    args = parser.parse_args(argv)
    try:
        users = [EapUser.from_dict(u) for u in
                 AdminClient(args.admin_socket).get("/admin/eap-users")["users"]]
        control = HostapdControl(args.ctrl_interface, args.interface)
        result = sync_users(users, args.path, control if control.path.is_socket() else None,
                            args.nft_set)
    except CloudletError as exc:
        print(f"cloudlet-eap-sync: {exc}", flush=True)
        return 1
    kicked = ", ".join(result.kicked) or "none"
    print(f"cloudlet-eap-sync: {result.allowed} user(s) may join; "
          f"{'updated' if result.changed else 'unchanged'}; disconnected: {kicked}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
