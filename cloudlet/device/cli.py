"""``cloudlet-device``: the Cloudlet-Ready App for any Linux device.

One status line per step on stdout, a "still waiting" line while a step
blocks, and on failure the error and its hint on stderr with a non-zero
exit. Keys, EAP passwords and passphrases are never printed: only
identities, names, addresses and fingerprints.

Exit codes: 0 done, 1 failed (the message says why), 2 bad usage,
130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cloudlet import formats
from cloudlet.device import agent, pairing
from cloudlet.device.client import Credential, DeviceClient
from cloudlet.device.importer import PassphraseSource
from cloudlet.device.network import DRIVERS, Supplicant
from cloudlet.device.progress import Console, Silent
from cloudlet.device.store import DEFAULT_STATE_DIR
from cloudlet.errors import (
    CloudletError,
    DeviceClientError,
    FormatError,
    NoCredentialError,
    StorageError,
)

__all__ = ["main"]

PROG = "cloudlet-device"


def _driver_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--driver",
        choices=DRIVERS,
        default=os.environ.get("CLOUDLET_DEVICE_DRIVER", "nl80211"),
        help="nl80211 for a radio (default), wired for an 802.1X Ethernet port "
        "(or $CLOUDLET_DEVICE_DRIVER)",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Use a tactical cloudlet from this device: import its credential, "
        "fetch messages (new credentials after a migration), find and call service VMs.",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("CLOUDLET_DEVICE_STATE_DIR", DEFAULT_STATE_DIR)),
        help="where credentials are kept (default %(default)s, or $CLOUDLET_DEVICE_STATE_DIR)",
    )
    p.add_argument(
        "--api",
        metavar="HOST[:PORT]",
        default=os.environ.get("CLOUDLET_DEVICE_API") or None,
        help="dial the Manager API here instead of the bundle's address; its certificate is "
        "still checked against the bundle's API host (or $CLOUDLET_DEVICE_API)",
    )
    p.add_argument("--timeout", type=float, default=15.0, help="seconds per network step")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    imp = sub.add_parser("import", help="verify and store the credential bundle from the admin")
    imp.add_argument("file", help="the bundle file, or - to read it from stdin (an SSH push)")
    imp.add_argument(
        "--passphrase-file",
        type=Path,
        help="read the passphrase of a sealed bundle from this file (else it is asked for)",
    )
    imp.add_argument(
        "--expect-cloudlet", metavar="ID", help="refuse a bundle issued by another cloudlet"
    )
    imp.add_argument(
        "--base64",
        action="store_true",
        help="the input is base64 text (as a playbook relays the sealed bundle)",
    )

    st = sub.add_parser("status", help="show the stored credentials (never the key or password)")
    st.add_argument(
        "--json",
        action="store_true",
        help="one JSON object on stdout (current credential or null, next ones, pending "
        "pairing request); exit 0 also when there is no credential",
    )

    req = sub.add_parser(
        "pairing-request",
        help="make (or show the pending) one-time key the first bundle is sealed to",
    )
    req.add_argument("--json", action="store_true", help="print a JSON object on stdout")
    req.add_argument("--new", action="store_true", help="replace a pending request")

    join = sub.add_parser(
        "join", help="join the cloudlet's network over 802.1X, then take a DHCP lease and DNS"
    )
    join.add_argument(
        "--interface",
        default=os.environ.get("CLOUDLET_DEVICE_INTERFACE"),
        required="CLOUDLET_DEVICE_INTERFACE" not in os.environ,
        help="the network interface (or $CLOUDLET_DEVICE_INTERFACE)",
    )
    _driver_option(join)
    join.add_argument("--wait", type=float, default=60.0, metavar="SECONDS",
                      help="give up after this long (default %(default)s)")

    run = sub.add_parser(
        "run",
        help="the service: stay on the cloudlet's network and pick up messages, until stopped",
    )
    run.add_argument(
        "--interface",
        action="append",
        metavar="[CLOUDLET=]IF",
        help="the interface for a cloudlet's network, or IF alone for every cloudlet (a radio); "
        "repeat for several (or $CLOUDLET_DEVICE_INTERFACES, space-separated)",
    )
    _driver_option(run)
    run.add_argument("--interval", type=float, default=30.0, metavar="SECONDS",
                     help="seconds between rounds (default %(default)s)")

    for name in ("messages", "fetch"):
        msg = sub.add_parser(
            name,
            help="fetch messages, store new credentials, acknowledge them"
            + (" (same as messages)" if name == "fetch" else ""),
        )
        msg.add_argument("--no-ack", action="store_true", help="store, but leave them queued")
        msg.add_argument(
            "--wait", type=float, default=0.0, metavar="SECONDS", help="wait for a message"
        )

    loc = sub.add_parser("locate", help="ask the cloudlet where a service VM is")
    loc.add_argument("service", help="the service id, e.g. counter")

    call = sub.add_parser("call", help="locate a service VM, resolve its name and call it")
    call.add_argument("service", help="the service id, e.g. counter")
    call.add_argument("--port", type=int, help="the port to call (default: the SVM's first)")
    call.add_argument("--path", default="/", help="the HTTP path (default /)")
    return p


def _read_input(source: str, say) -> bytes:
    if source == "-":
        data = sys.stdin.buffer.read(formats.MAX_OBJECT_BYTES + 1)
        where = "standard input"
    else:
        try:
            with open(source, "rb") as fh:
                data = fh.read(formats.MAX_OBJECT_BYTES + 1)
        except OSError as exc:
            raise StorageError(f"Cannot read {source}: {exc.strerror}.") from None
        where = source
    say(f"read {len(data)} bytes from {where}")
    return data


def _passphrase(path: Path | None) -> PassphraseSource | None:
    if path is not None:

        def from_file() -> str:
            try:
                return path.read_text(encoding="utf-8").splitlines()[0]
            except (OSError, UnicodeDecodeError, IndexError) as exc:
                raise StorageError(f"Cannot read a passphrase from {path}: {exc}.") from None

        return from_file
    try:
        with open("/dev/tty"):
            pass
    except OSError:
        return None
    return lambda: getpass.getpass(f"{PROG}: passphrase of the sealed bundle: ")


def _when(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%d %H:%M UTC")


def _credential_lines(label: str, cred: Credential, now: datetime) -> list[str]:
    state = "EXPIRED" if cred.expired(now) else "valid"
    return [
        f"{label}: {cred.identity}",
        f"  issued by cloudlet {cred.cloudlet}, {state} {_when(cred.valid_from)} "
        f"to {_when(cred.valid_until)}",
        f"  network: SSID {cred.ssid!r}, EAP-{cred.eap_method.upper()} as {cred.eap_identity!r}",
    ]


def _cmd_import(client: DeviceClient, args, say) -> int:
    data = _read_input(args.file, say)
    if args.base64:
        try:
            data = base64.b64decode(b"".join(data.split()), validate=True)
        except ValueError:
            raise FormatError("The input is not base64 text.") from None
    result = client.import_bundle(data, _passphrase(args.passphrase_file), args.expect_cloudlet)
    ident = result.bundle.device_key.identity
    if result.replaced:
        say(f"replacing the credential for {result.replaced}")
    if result.changed:
        say(f"stored the credential for {ident} in {result.path} (mode 0600)")
    else:
        say(f"the credential for {ident} was already stored; nothing changed")
    say(
        f"API of cloudlet {result.bundle.params.cloudlet_id}: "
        f"{result.bundle.api_host}:{result.bundle.api_port}"
    )
    return 0


def _credential_json(cred: Credential, now: datetime) -> dict:
    return {
        "identity": cred.identity,
        "cloudlet": cred.cloudlet,
        "valid_from": int(cred.valid_from.timestamp()),
        "valid_until": int(cred.valid_until.timestamp()),
        "expired": cred.expired(now),
        "ssid": cred.ssid,
        "eap_identity": cred.eap_identity,
        "eap_method": cred.eap_method,
    }


def _status_json(client: DeviceClient) -> int:
    """What a ceremony reads before it pushes: never a key or password."""
    now = client.clock()
    out: dict = {"current": None, "api": None, "ca_fingerprint": None, "next": [],
                 "error": None, "pairing_request": pairing.load(client.store) is not None}
    try:
        st = client.status()
    except NoCredentialError as exc:
        if client.store.has_current():
            out["error"] = exc.message
    else:
        out.update(
            current=_credential_json(st.current, now),
            api=f"{st.api.host}:{st.api.port}",
            ca_fingerprint=st.ca_fingerprint,
            next=[_credential_json(c, now) for c in st.next],
        )
    print(json.dumps(out, sort_keys=True))
    return 0


def _cmd_pairing_request(client: DeviceClient, args, say) -> int:
    req = client.pairing_request(args.new)
    if args.json:
        print(json.dumps({"public_key": req.public_key_b64, "fingerprint": req.fingerprint,
                          "created": req.created}, sort_keys=True))
        return 0
    say(("made a new" if req.created else "the pending") + " pairing request; give the "
        "admin this public key (the bundle is sealed to it):")
    print(req.public_key_b64)
    say(f"fingerprint sha256 {req.fingerprint}")
    return 0


def _cmd_status(client: DeviceClient, args, say) -> int:
    if args.json:
        return _status_json(client)
    st = client.status()
    now = client.clock()
    for line in _credential_lines("current credential", st.current, now):
        say(line)
    say(f"  API: {st.api}; TLS CA sha256 {st.ca_fingerprint}")
    for cred in st.next:
        for line in _credential_lines("next credential", cred, now):
            say(line)
    if not st.next:
        say("no next credential waiting")
    return 1 if st.current.expired(now) else 0


def _cmd_messages(client: DeviceClient, args, say) -> int:
    outcomes = client.fetch_messages(ack=not args.no_ack, wait=args.wait)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        m = o.message
        kept = " (left on the cloudlet)"
        if o.stored:
            kept = f" (stored in {o.stored}, not acknowledged)"
        print(
            f"{PROG}: message {m.message_id} ({m.kind} from {m.issuer}) not handled{kept}: "
            f"{o.error}",
            file=sys.stderr,
        )
    stored = sum(1 for o in outcomes if o.stored)
    acked = sum(1 for o in outcomes if o.acked)
    say(
        f"{len(outcomes)} message(s): {stored} credential(s) stored, {acked} acknowledged, "
        f"{len(failed)} failed"
    )
    return 1 if failed else 0


def _cmd_join(client: DeviceClient, args, say) -> int:
    client.network = Supplicant(args.interface, args.driver, progress=client.progress)
    client.join(args.wait)
    return 0


def _cmd_run(client: DeviceClient, args, say) -> int:
    given = args.interface or os.environ.get("CLOUDLET_DEVICE_INTERFACES", "").split()
    try:
        interfaces = agent.parse_interfaces(given)
    except ValueError as exc:
        raise DeviceClientError(f"Bad --interface: {exc}.") from None
    if not interfaces:
        raise DeviceClientError("No interface given.",
                                "Give --interface IF, or one --interface CLOUDLET=IF per cloudlet.")
    client.progress = Silent()  # the agent logs changes, not every step of every round
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    agent.Agent(client, interfaces, args.driver, say, interval=args.interval).run(stop)
    return 0


def _cmd_locate(client: DeviceClient, args, say) -> int:
    client.locate(args.service)
    return 0


def _cmd_call(client: DeviceClient, args, say) -> int:
    location, reply = client.call(args.service, args.port, args.path)
    say(f"{location.service_id} answered HTTP {reply.status} from {reply.address}:{reply.port}")
    if reply.count is not None:
        say(f"count: {reply.count}")
    else:
        say(f"answer: {reply.body.strip()[:200]}")
    return 0


_COMMANDS = {
    "import": _cmd_import,
    "status": _cmd_status,
    "pairing-request": _cmd_pairing_request,
    "join": _cmd_join,
    "run": _cmd_run,
    "messages": _cmd_messages,
    "fetch": _cmd_messages,
    "locate": _cmd_locate,
    "call": _cmd_call,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console()
    client = DeviceClient(args.state_dir, args.api, args.timeout, console)
    try:
        return _COMMANDS[args.command](client, args, console.info)
    except CloudletError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"{PROG}: hint: {exc.hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
