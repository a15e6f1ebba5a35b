"""Migration steps 4 and 5 for N devices: B issues their credentials, A stores them.

    PYTHONPATH=. python benchmarks/bench_credentials.py [--devices 1000] [--runs 3]

Two Cloudlet Managers run on 127.0.0.1, each a ``python -m cloudlet.manager``
subprocess with its own CA, IBE master key and database, paired both ways
through their admin APIs as the pairing ceremony leaves them. A holds N
devices of one service. Each run is what the migration module does once the
SVM is on B, with the same code (``cloudlet.migration.handoff`` and
``cloudlet.pairing_push.store_messages``), timed in three parts:

* look-up: A lists the service's devices and the credentials already queued;
* issue: ``POST /peer/device-credentials`` to B over mutual TLS: B names each
  visitor, draws its 802.1X password, extracts its key, signs and seals its
  bundle to the device under A's params, and records the visitors;
* store: A checks every ciphertext and queues it for its device.

Every run starts two fresh Managers (nothing cached from the run before);
the figures are medians over the runs. The goal is at most 3 s in all for
1,000 devices; printed, never asserted.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

from managers import free_port, start_manager, stop_manager  # noqa: E402
from test_manager_support import make_pki  # noqa: E402

from cloudlet import formats  # noqa: E402
from cloudlet.admin_client import AdminClient  # noqa: E402
from cloudlet.crypto import ibe  # noqa: E402
from cloudlet.crypto.identity import Period  # noqa: E402
from cloudlet.migration.handoff import request_credentials  # noqa: E402
from cloudlet.migration.peer import PeerClient, peer_link  # noqa: E402
from cloudlet.pairing_push import store_messages  # noqa: E402

SERVICE = "svc-bench"


class Manager:
    """One cloudlet: its PKI, master key and a running Manager subprocess."""

    def __init__(self, root: Path, cloudlet_id: str, workers: int) -> None:
        self.id = cloudlet_id
        self.pki = make_pki(root, cloudlet_id)
        self.master = ibe.setup(cloudlet_id)
        self.port = free_port()
        d = root / cloudlet_id
        d.mkdir()
        formats.write_secret_file(d / "master.key", formats.encode_master_key(self.master))
        self.socket = d / "run" / "admin.sock"
        self.config = d / "manager.toml"
        self.config.write_text(
            f'cloudlet_id = "{cloudlet_id}"\nzone = "{cloudlet_id}.cloudlet"\n'
            f'fqdn = "localhost"\napi_host = "127.0.0.1"\nlisten_hosts = ["127.0.0.1"]\n'
            f'listen_port = {self.port}\ndb = "{d}/manager.db"\nadmin_socket = "{self.socket}"\n'
            f'[tls]\nca_cert = "{self.pki.ca}"\nserver_cert = "{self.pki.dir}/server.pem"\n'
            f'server_key = "{self.pki.dir}/server.key"\n[ibe]\nmaster_key = "{d}/master.key"\n'
            f'[discovery]\nenabled = false\n[limits]\ncredential_workers = {workers}\n'
            # 1,000 devices' identities make a body of about 90 KiB; the role's default
            # (256 KiB) is what runs in the field.
        )
        self.proc = start_manager(self.config, self.socket, d / "manager.log")
        self.admin = AdminClient(str(self.socket))

    def pair_with(self, other: Manager) -> None:
        self.admin.request("PUT", f"/admin/cloudlets/{other.id}", {
            "ca_pem": other.pki.ca_pem.decode(),
            "params": base64.b64encode(formats.encode_params(other.master.params)).decode(),
            "api_host": "127.0.0.1",
            "api_port": other.port,
        })  # fmt: skip

    def stop(self) -> None:
        stop_manager(self.proc)


def one_run(root: Path, devices: int, workers: int) -> dict[str, float]:
    a = Manager(root, "cl-alpha", workers)
    b = Manager(root, "cl-bravo", workers)
    try:
        a.pair_with(b)
        b.pair_with(a)
        period = str(Period.containing(datetime.now(UTC)))
        for i in range(devices):
            a.admin.request("PUT", f"/admin/devices/dev-{i:04d}",
                            {"valid_from": period, "services": [SERVICE]})
        cert, key = a.pki.dir / "client.pem", a.pki.dir / "client.key"
        client = PeerClient(peer_link(a.admin, b.id), "127.0.0.1", b.port, cert, key, timeout=120)
        calls = []
        real_request = client.request

        def timed(method, path, body=None):
            start = time.perf_counter()
            try:
                return real_request(method, path, body)
            finally:
                calls.append(time.perf_counter() - start)

        client.request = timed
        start = time.perf_counter()
        messages, already = request_credentials(a.admin, client, a.id, SERVICE, moved_now=True)
        asked = time.perf_counter()
        stored, skipped = store_messages(a.admin, messages)
        done = time.perf_counter()
        if len(stored) != devices or already or skipped:
            sys.exit(f"Expected {devices} stored, got {len(stored)} ({len(already)} already, "
                     f"{len(skipped)} skipped)")
        issue = sum(calls)
        return {"lookup": asked - start - issue, "issue": issue, "store": done - asked,
                "total": done - start,
                "bundle_bytes": statistics.mean(len(m["body"]) * 3 / 4 for m in messages)}
    finally:
        a.stop()
        b.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                    help="the Managers' credential_workers (default: the CPUs)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-cred-") as tmp:
            runs.append(one_run(Path(tmp), args.devices, args.workers))
        r = runs[-1]
        print(f"run {i + 1}: look-up {r['lookup']:.2f} s, issue {r['issue']:.2f} s, "
              f"store {r['store']:.2f} s, total {r['total']:.2f} s", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"\n{args.devices} devices, credential_workers {args.workers}, {os.cpu_count()} CPUs, "
          f"medians of {args.runs}:")
    for k in ("lookup", "issue", "store", "total"):
        print(f"  {k:8} {med[k]:6.2f} s")
    print(f"  bundle   {med['bundle_bytes']:6.0f} bytes; goal: total <= 3 s for 1,000 devices")
    if args.json:
        args.json.write_text(json.dumps({"devices": args.devices, "workers": args.workers,
                                         "runs": runs, "median": med}, indent=2))


if __name__ == "__main__":
    main()
