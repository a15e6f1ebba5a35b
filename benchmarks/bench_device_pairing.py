"""Pairing devices without Ansible, their 802.1X authentication and their API calls.

    python benchmarks/bench_device_pairing.py [--runs 5] [--devices 50] [--reauths 20] [--calls 200]

The Manager runs on 127.0.0.1 in a subprocess of its own (``python -m
cloudlet.manager``, real TLS, a scratch CA, IBE master key and database), so
the device side measured here does not share an interpreter with it.
Pairing is what ``pair_device.yml`` does minus Ansible: the device makes its
pairing request (``DeviceClient.pairing_request``), the cloudlet records the
device and issues and seals its first bundle (``cloudlet.pairing_push.pair_device``,
as the ``cloudlet_credential_push`` module calls it), the device opens the
envelope and imports it into a temporary store (``DeviceClient.import_bundle``).
The split comes from the admin-socket round trips inside ``pair_device``
(record: reading the Manager's info and record, writing it, reading the EAP
password) and the rest of it (issue + seal: master key, signed bundle,
transport envelope).

* one device: a new device each run on the same Manager;
* a fleet: ``--devices`` distinct devices in a row on a fresh Manager each run,
  then ``GET /admin/eap-users`` with that many devices (median of 10 calls);
* EAP (root, hostapd and wpa_supplicant installed): hostapd (driver=wired,
  EAP-pwd, group 19) in one network namespace and wpa_supplicant (-D wired) in
  another, over a veth pair made here; the user file is the fleet's EAP users
  as ``cloudlet.access`` renders them, the station the first fleet device's
  imported credential (``station_config(cred, "wired")``). Each of
  ``--reauths`` re-authentications runs from ``REASSOCIATE`` on the
  supplicant's control interface to ``EAP state=SUCCESS`` with ``Supplicant PAE
  state=AUTHENTICATED``, watched through an attached control socket; the time
  from its ``CTRL-EVENT-EAP-STARTED`` event is the EAP-pwd exchange alone (the
  rest is the supplicant's own hold-off before its EAPOL-Start). Then
  ``sync_users`` on the running hostapd: the device revoked (file, ``SET
  eap_user_file``, ``DEAUTHENTICATE``) and one user added, median of ``--runs``.
  nftables' gate is not part of it (no ``nft_set``): the gate's own step is one
  ``nft delete element``. The namespaces go away at the end, whatever happens;
* device API: ``--calls`` calls of ``DeviceApi.messages()`` (a new proof, a new
  TLS connection each), p50 and p99 per run; the proof alone is timed apart.

Figures are medians over the runs; p99 of 20 samples is their maximum.
Printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from managers import free_port, start_manager, stop_manager

from cloudlet import formats, pairing_push, pki
from cloudlet.access import EapUser, HostapdControl, render_eap_users, sync_users
from cloudlet.admin_client import AdminClient
from cloudlet.crypto import ibe
from cloudlet.device.client import DeviceClient
from cloudlet.device.network import station_config
from cloudlet.errors import CloudletError
from cloudlet.manager import protocol

ROOT = Path(__file__).resolve().parents[1]
CLOUDLET = "cl-bench"
SSID = "bench-field"


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> float:
    return seconds * 1000


# --- the cloudlet: keys, files and a Manager process ---------------------------


class Cloudlet:
    """A scratch CA, server certificate and IBE master key; Managers on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.dir = root
        ca_key = pki.generate_key()
        ca_pem = pki.make_ca(ca_key, CLOUDLET)
        pki.write_certificate(root / "ca.pem", ca_pem)
        key = pki.generate_key()
        names = pki.subject_names("localhost", ["localhost"], ["127.0.0.1"])
        pem = pki.issue_certificate(
            ca_key, ca_pem, key.public_key(), pki.Profile.MANAGER_SERVER, names
        )
        pki.write_certificate(root / "server.pem", pem)
        pki.write_private_key(root / "server.key", key)
        self.master_key = root / "master.key"
        formats.write_secret_file(self.master_key, formats.encode_master_key(ibe.setup(CLOUDLET)))
        self.ca = root / "ca.pem"


class Manager:
    """``python -m cloudlet.manager`` with a database of its own."""

    def __init__(self, cloudlet: Cloudlet, name: str) -> None:
        port = free_port()
        root = cloudlet.dir
        self.socket = root / f"{name}.sock"
        self.log = root / f"{name}.log"
        config = root / f"{name}.toml"
        config.write_text(
            f'cloudlet_id = "{CLOUDLET}"\nzone = "bench.cloudlet"\nfqdn = "localhost"\n'
            f'api_host = "127.0.0.1"\nlisten_hosts = ["127.0.0.1"]\nlisten_port = {port}\n'
            f'db = "{name}.db"\nadmin_socket = "{name}.sock"\n'
            '[tls]\nca_cert = "ca.pem"\nserver_cert = "server.pem"\nserver_key = "server.key"\n'
            f'[ibe]\nmaster_key = "master.key"\n[network]\nssid = "{SSID}"\n'
            "[discovery]\nenabled = false\n"
        )
        self.proc = start_manager(config, self.socket, self.log)

    def stop(self) -> None:
        stop_manager(self.proc)


class TimedAdmin(AdminClient):
    """The real admin client; it only adds up the time its round trips take."""

    spent = 0.0

    def request(self, method: str, path: str, body: dict | None = None):
        start = time.perf_counter()
        try:
            return super().request(method, path, body)
        finally:
            self.spent += time.perf_counter() - start


# --- pairing --------------------------------------------------------------------


@dataclass
class Paired:
    client: DeviceClient
    request: float
    record: float
    issue_seal: float
    import_: float
    total: float


def pair(cloudlet: Cloudlet, manager: Manager, device: str, state_dir: Path) -> Paired:
    """One device paired end to end; seconds for each step."""
    admin = TimedAdmin(str(manager.socket))
    start = time.perf_counter()
    client = DeviceClient(state_dir)
    request = client.pairing_request()
    requested = time.perf_counter()
    out = pairing_push.pair_device(
        admin, device, master_key=cloudlet.master_key, ca_cert=cloudlet.ca, ssid=SSID,
        api_host="127.0.0.1", delivery=pairing_push.Delivery.TRANSPORT,
        public_key=request.public_key_b64,
    )  # fmt: skip
    pushed = time.perf_counter()
    imported = client.import_bundle(out.envelope, expect_cloudlet=CLOUDLET)
    done = time.perf_counter()
    if not (out.issued and imported.changed):
        sys.exit(f"Pairing {device} issued or imported nothing: {out.reasons}")
    return Paired(client, requested - start, admin.spent, pushed - requested - admin.spent,
                  done - pushed, done - start)  # fmt: skip


def eap_users_time(manager: Manager, count: int, calls: int = 10) -> tuple[float, list[EapUser]]:
    admin = AdminClient(str(manager.socket))
    times, users = [], []
    for _ in range(calls):
        start = time.perf_counter()
        users = admin.get("/admin/eap-users")["users"]
        times.append(time.perf_counter() - start)
    if len(users) != count:
        sys.exit(f"GET /admin/eap-users listed {len(users)} devices, not {count}.")
    return statistics.median(times), [EapUser.from_dict(u) for u in users]


# --- device API ---------------------------------------------------------------------


def api_latency(client: DeviceClient, calls: int) -> tuple[list[float], list[float], int]:
    """Seconds per ``messages()`` call and per proof alone, and refused calls."""
    api = client.api()
    bundle = client.store.current()
    proofs, latencies, errors = [], [], 0
    for _ in range(calls):
        start = time.perf_counter()
        protocol.authorization_header(bundle.device_key, api.audience, "GET", "/device/messages")
        proofs.append(time.perf_counter() - start)
    for _ in range(calls):
        start = time.perf_counter()
        try:
            api.messages()
        except CloudletError:
            errors += 1
        latencies.append(time.perf_counter() - start)
    return latencies, proofs, errors


# --- EAP: hostapd and wpa_supplicant in namespaces of their own ------------------------


class WpaControl:
    """wpa_supplicant's control interface: one socket for commands, one attached for events."""

    def __init__(self, path: Path, scratch: Path) -> None:
        self.events = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.events.bind(str(scratch / "wpa-events"))
        self.events.connect(str(path))
        self.cmd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.cmd.bind(str(scratch / "wpa-cmd"))
        self.cmd.connect(str(path))
        self.cmd.settimeout(5)
        self.events.settimeout(5)
        self.events.send(b"ATTACH")
        if self.events.recv(64).strip() != b"OK":
            raise RuntimeError("wpa_supplicant refused ATTACH")

    def command(self, text: str) -> str:
        self.cmd.send(text.encode())
        return self.cmd.recv(65536).decode(errors="replace")

    def drain(self) -> None:
        self.events.setblocking(False)
        try:
            while True:
                self.events.recv(65536)
        except BlockingIOError:
            pass
        finally:
            self.events.settimeout(5)

    def wait_event(self, *names: str, timeout: float) -> tuple[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            self.events.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                text = self.events.recv(65536).decode(errors="replace")
            except TimeoutError:
                raise RuntimeError(f"no {' or '.join(names)} within {timeout:.0f} s") from None
            now = time.perf_counter()
            for name in names:
                if name in text:
                    return name, now

    def authenticated(self) -> bool:
        status = self.command("STATUS")
        return "Supplicant PAE state=AUTHENTICATED" in status and "EAP state=SUCCESS" in status

    def reauthenticate(self, timeout: float = 60) -> tuple[float, float]:
        """REASSOCIATE, then (to AUTHENTICATED, from EAP-STARTED to AUTHENTICATED) in s."""
        self.drain()
        start = time.perf_counter()
        if self.command("REASSOCIATE").strip() != "OK":
            raise RuntimeError("wpa_supplicant refused REASSOCIATE")
        _n, started = self.wait_event("CTRL-EVENT-EAP-STARTED", timeout=timeout)
        name, _t = self.wait_event("CTRL-EVENT-EAP-SUCCESS", "CTRL-EVENT-EAP-FAILURE",
                                   timeout=timeout)  # fmt: skip
        if name.endswith("FAILURE"):
            raise RuntimeError("the station's EAP authentication failed")
        while not self.authenticated():
            time.sleep(0.001)
        done = time.perf_counter()
        return done - start, done - started

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.events.send(b"DETACH")
        self.events.close()
        self.cmd.close()


def hostapd_conf(interface: str, ctrl: Path, users: Path) -> str:
    """What the cloudlet_network role's template renders for a wired, EAP-pwd field network."""
    return (
        f"interface={interface}\nctrl_interface={ctrl}\nctrl_interface_group=0\n"
        "logger_stdout=-1\nlogger_stdout_level=2\ndriver=wired\nuse_pae_group_addr=1\n"
        f"ieee8021x=1\neapol_version=2\neap_server=1\neap_user_file={users}\n"
        "pwd_group=19\neap_reauth_period=3600\n"
    )


def wait_for(path: Path, proc: subprocess.Popen, what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.02)


def authorized(control: HostapdControl, identity: str) -> bool:
    return any(
        s.get("dot1xAuthSessionUserName") == identity and "[AUTHORIZED]" in s.get("flags", "")
        for s in control.stations()
    )


def readmit(wpa: WpaControl, control: HostapdControl, identity: str) -> None:
    """Authenticate the station again (untimed) until hostapd has it authorized."""
    for _ in range(3):
        wpa.reauthenticate()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if authorized(control, identity):
                return
            time.sleep(0.01)
    raise RuntimeError(f"hostapd did not authorize {identity} again")


def eap_figures(users: list[EapUser], station: DeviceClient, args) -> dict[str, object]:
    """Re-authentication times, then revocation and adding a user on the running hostapd."""
    tag = os.getpid()
    ap_ns, st_ns = f"bpa{tag}", f"bps{tag}"
    ap_if, st_if = f"bpa{tag}", f"bps{tag}"
    scratch = Path(tempfile.mkdtemp(prefix="bench-eap-"))
    procs: list[subprocess.Popen] = []
    made: list[str] = []
    wpa = None
    ip = ["ip"]
    try:
        for ns in (ap_ns, st_ns):
            subprocess.run([*ip, "netns", "add", ns], check=True)
            made.append(ns)
        subprocess.run([*ip, "link", "add", ap_if, "type", "veth", "peer", "name", st_if],
                       check=True)  # fmt: skip
        for ns, ifname in ((ap_ns, ap_if), (st_ns, st_if)):
            subprocess.run([*ip, "link", "set", ifname, "netns", ns], check=True)
            subprocess.run([*ip, "-n", ns, "link", "set", ifname, "up"], check=True)

        user_file = scratch / "eap_users"
        user_file.write_text(render_eap_users(users))
        user_file.chmod(0o600)
        (scratch / "hostapd.conf").write_text(
            hostapd_conf(ap_if, scratch / "hostapd", user_file)
        )
        cred = station.store.current().network
        (scratch / "wpa.conf").write_text(station_config(cred, "wired", str(scratch / "wpa")))
        logs = {"hostapd": scratch / "hostapd.log", "wpa_supplicant": scratch / "wpa.log"}
        with open(logs["hostapd"], "wb") as log:
            procs.append(subprocess.Popen(
                [*ip, "netns", "exec", ap_ns, "hostapd", str(scratch / "hostapd.conf")],
                stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        wait_for(scratch / "hostapd" / ap_if, procs[-1], "hostapd", logs["hostapd"])
        with open(logs["wpa_supplicant"], "wb") as log:
            procs.append(subprocess.Popen(
                [*ip, "netns", "exec", st_ns, "wpa_supplicant", "-D", "wired", "-i", st_if,
                 "-c", str(scratch / "wpa.conf")],
                stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        wait_for(scratch / "wpa" / st_if, procs[-1], "wpa_supplicant", logs["wpa_supplicant"])

        # hostapd's control socket is a file: reachable from here, whatever the namespace.
        control = HostapdControl(scratch / "hostapd", ap_if)
        wpa = WpaControl(scratch / "wpa" / st_if, scratch)
        readmit(wpa, control, cred.identity)  # the first authentication, not timed

        totals, exchanges = [], []
        for _ in range(args.reauths):
            total, exchange = wpa.reauthenticate()
            totals.append(total)
            exchanges.append(exchange)

        revoke, add, kicked, undisturbed = [], [], 0, 0
        gone = [EapUser(u.identity, u.password, u.identity == cred.identity) for u in users]
        for i in range(args.runs):
            if not authorized(control, cred.identity):
                readmit(wpa, control, cred.identity)
            start = time.perf_counter()
            result = sync_users(gone, user_file, control)
            revoke.append(time.perf_counter() - start)
            kicked += result.kicked == [cred.identity] and not authorized(control, cred.identity)
            sync_users(users, user_file, control)
            readmit(wpa, control, cred.identity)

            more = [*users, EapUser(f"extra-{i}", secrets.token_hex(16))]
            start = time.perf_counter()
            result = sync_users(more, user_file, control)
            add.append(time.perf_counter() - start)
            undisturbed += result.changed and authorized(control, cred.identity)
            sync_users(users, user_file, control)
        return {
            "reauth": (p(totals, 0.5), p(totals, 0.99)),
            "exchange": (p(exchanges, 0.5), p(exchanges, 0.99)),
            "revoke": statistics.median(revoke),
            "add": statistics.median(add),
            "kicked": kicked,
            "undisturbed": undisturbed,
        }
    finally:
        if wpa is not None:
            wpa.close()
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for ifname in (ap_if, st_if):  # only if it never reached its namespace
            subprocess.run([*ip, "link", "del", ifname], capture_output=True, check=False)
        for ns in made:
            subprocess.run([*ip, "netns", "del", ns], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def eap_missing() -> str | None:
    if os.geteuid() != 0:
        return "not root"
    missing = [t for t in ("ip", "hostapd", "wpa_supplicant") if shutil.which(t) is None]
    return f"{', '.join(missing)} not installed" if missing else None


def say(text: str) -> None:
    """Progress, on stderr: the table on stdout stays clean."""
    print(text, file=sys.stderr, flush=True)


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--reauths", type=int, default=20)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--no-eap", action="store_true", help="skip hostapd/wpa_supplicant")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-pairing-"))
    cloudlet = Cloudlet(scratch)

    print(f"Device pairing benchmark: medians of {args.runs} runs; {os.cpu_count()} CPUs; "
          f"Manager on 127.0.0.1 in its own process, real TLS")  # fmt: skip
    rows: list[tuple[str, str]] = []
    managers: list[Manager] = []
    try:
        manager = Manager(cloudlet, "single")
        managers.append(manager)
        say("pairing one device per run ...")
        singles = [pair(cloudlet, manager, f"solo-{i}", scratch / f"solo-{i}")
                   for i in range(args.runs)]  # fmt: skip
        for name, attr in (("total", "total"), ("  pairing request (device)", "request"),
                           ("  record (Manager admin calls)", "record"),
                           ("  issue + seal", "issue_seal"),
                           ("  open + import (device)", "import_")):  # fmt: skip
            value = statistics.median(getattr(s, attr) for s in singles)
            rows.append((f"1. pair one device: {name}", f"{ms(value):8.1f} ms"))

        say(f"pairing {args.devices} devices per run, a fresh Manager each ...")
        fleet_totals, per_device, listing = [], [], []
        users: list[EapUser] = []
        fleet: list[Paired] = []
        for run in range(args.runs):
            fleet_manager = Manager(cloudlet, f"fleet-{run}")
            managers.append(fleet_manager)
            start = time.perf_counter()
            fleet = [pair(cloudlet, fleet_manager, f"fleet-{d:02d}",
                          scratch / f"fleet-{run}" / f"dev-{d:02d}")
                     for d in range(args.devices)]  # fmt: skip
            fleet_totals.append(time.perf_counter() - start)
            per_device.append(statistics.median(f.total for f in fleet))
            seconds, users = eap_users_time(fleet_manager, args.devices)
            listing.append(seconds)
            fleet_manager.stop()
        n = args.devices
        rows.append((f"2. pair {n} devices: total", f"{statistics.median(fleet_totals):8.2f} s"))
        rows.append((f"2. pair {n} devices: per device (median)",
                     f"{ms(statistics.median(per_device)):8.1f} ms"))  # fmt: skip
        rows.append((f"2. GET /admin/eap-users, {n} devices",
                     f"{ms(statistics.median(listing)):8.2f} ms"))  # fmt: skip

        reason = "--no-eap" if args.no_eap else eap_missing()
        if reason:
            rows.append(("3. EAP authentication", f"skipped ({reason})"))
        else:
            say(f"EAP-pwd: {args.reauths} re-authentications, then {args.runs} revocations "
                f"and additions ...")  # fmt: skip
            eap = eap_figures(users, fleet[0].client, args)
            rows.append((f"3. EAP re-auth, REASSOCIATE -> AUTHENTICATED (N={args.reauths})",
                         "p50 {:7.1f} ms  p99 {:7.1f} ms".format(*map(ms, eap["reauth"]))))
            rows.append(("3.   of which the EAP-pwd exchange (from EAP-STARTED)",
                         "p50 {:7.1f} ms  p99 {:7.1f} ms".format(*map(ms, eap["exchange"]))))
            rows.append((f"3. revoke: sync_users, {n} users, one revoked + deauth",
                         f"{ms(eap['revoke']):8.1f} ms  (kicked {eap['kicked']}/{args.runs})"))
            rows.append((f"3. add a user: sync_users, {n}+1 users",
                         f"{ms(eap['add']):8.1f} ms  (station kept {eap['undisturbed']}/"
                         f"{args.runs})"))  # fmt: skip

        say(f"device API: {args.calls} calls per run ...")
        p50s, p99s, proof50, errors = [], [], [], 0
        for _ in range(args.runs):
            latencies, proofs, refused = api_latency(singles[0].client, args.calls)
            p50s.append(p(latencies, 0.5))
            p99s.append(p(latencies, 0.99))
            proof50.append(p(proofs, 0.5))
            errors += refused
        rows.append((f"4. device API GET /device/messages ({args.calls} calls)",
                     f"p50 {ms(statistics.median(p50s)):7.1f} ms  "
                     f"p99 {ms(statistics.median(p99s)):7.1f} ms  "
                     f"refused {errors}/{args.calls * args.runs}"))  # fmt: skip
        rows.append(("4.   of which making the proof",
                     f"p50 {ms(statistics.median(proof50)):7.1f} ms"))  # fmt: skip
    finally:
        for manager in managers:
            manager.stop()
        shutil.rmtree(scratch, ignore_errors=True)

    width = max(len(name) for name, _ in rows)
    print(f"  {'':<{width}}  figure")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
