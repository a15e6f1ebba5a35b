"""A paired device's latency while hostile clients load the Cloudlet Manager.

    PYTHONPATH=. python benchmarks/bench_manager_load.py [--runs 5] [--calls 200] [--nice 19]

The Manager runs on 127.0.0.1 in a subprocess of its own (``python -m
cloudlet.manager``), with the open-file limit (RLIMIT_NOFILE) and the
max_connections of the cloudlet_manager role's unit. One device is paired;
each call is ``GET /device/messages`` with a real proof, made before the
clock starts, on a new TLS connection. Scenarios:

* quiet: nothing else;
* held: 1,000 connections held open by another process, half never finishing
  the TLS handshake, half sending request headers one byte a second; each is
  reopened as soon as the Manager drops it, as an attacker would;
* flood: 4 processes on 127.0.0.2..5 sending forged proofs (right format,
  period, time and device; wrong signature) as fast as they can on
  keep-alive connections; and the same with the failure limit set so high
  that it never applies, for comparison.

Each scenario alternates a quiet block of calls with a loaded one, so that
whatever else runs on the machine hits both alike; figures are medians over
the runs of each block's p50 and p99, and errors are the device's non-200
answers and failed calls, summed. Target: p50 and p99 under
load within 2x of quiet, no error. Printed, never asserted.

The hostile processes run at nice 19 (--nice): on a small machine their own CPU
(Python HTTP clients) would otherwise be what slows the device down, while
in the field they run on the attacker's machines. The Manager still answers
every request they send; the flood rate is printed with each row.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import http.client
import json
import multiprocessing as mp
import os
import resource
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml
from managers import free_port, start_manager, stop_manager

from cloudlet import formats, pki
from cloudlet.crypto import auth, ibe
from cloudlet.crypto.identity import Period, device_identity
from cloudlet.manager import protocol

ROOT = Path(__file__).resolve().parents[1]
ROLE = ROOT / "roles" / "cloudlet_manager"
CLOUDLET = "cl-bench"
DEVICE = "tablet-07"
FORGERS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]


def unit_limits() -> tuple[int, int]:
    """(max_connections, LimitNOFILE) exactly as the role renders them."""
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    internal = yaml.safe_load((ROLE / "vars" / "main.yml").read_text())
    max_connections = int(defaults["cloudlet_manager_max_connections"])
    return max_connections, max_connections + int(internal["__cloudlet_manager_fd_headroom"])


@dataclasses.dataclass
class Cloudlet:
    """Keys and files for one benchmark Manager, made in a scratch directory."""

    dir: Path
    master: ibe.MasterKey
    port: int

    @classmethod
    def make(cls, root: Path) -> Cloudlet:
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
        master = ibe.setup(CLOUDLET)
        formats.write_secret_file(root / "master.key", formats.encode_master_key(master))
        return cls(root, master, free_port())

    def config(self, name: str, max_connections: int, auth_failures: int) -> Path:
        path = self.dir / f"{name}.toml"
        path.write_text(
            f'cloudlet_id = "{CLOUDLET}"\nzone = "bench.cloudlet"\nfqdn = "localhost"\n'
            f'api_host = "127.0.0.1"\nlisten_hosts = ["127.0.0.1"]\nlisten_port = {self.port}\n'
            f'db = "{name}.db"\nadmin_socket = "{name}.sock"\n'
            '[tls]\nca_cert = "ca.pem"\nserver_cert = "server.pem"\nserver_key = "server.key"\n'
            '[ibe]\nmaster_key = "master.key"\n[discovery]\nenabled = false\n'
            f"[limits]\nmax_connections = {max_connections}\nauth_failures = {auth_failures}\n"
        )
        return path

    def client_ctx(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=self.dir / "ca.pem")
        return ctx


class Manager:
    """``python -m cloudlet.manager`` under the unit's open-file limit."""

    def __init__(self, cloudlet: Cloudlet, nofile: int, max_connections: int, auth_failures: int):
        name = f"manager-{auth_failures}"
        self.cloudlet = cloudlet
        self.socket = cloudlet.dir / f"{name}.sock"
        self.log = cloudlet.dir / f"{name}.log"
        config = cloudlet.config(name, max_connections, auth_failures)

        def limit_files() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = start_manager(config, self.socket, self.log, limit_files)
        self.admin("PUT", f"/admin/devices/{DEVICE}", {"valid_from": str(Period.containing())})

    def admin(self, method: str, path: str, body: dict) -> None:
        conn = http.client.HTTPConnection("localhost", timeout=10)
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.connect(str(self.socket))
        conn.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            sys.exit(f"admin {method} {path}: {resp.status} {resp.read()!r}")
        conn.close()

    def stop(self) -> str:
        stop_manager(self.proc)
        return self.log.read_text()


# --- the paired device -------------------------------------------------------


def device_latencies(cloudlet: Cloudlet, key: ibe.DeviceKey, calls: int) -> tuple[list, int]:
    """Milliseconds per call (proof made beforehand, new TLS connection), and errors."""
    ctx = cloudlet.client_ctx()
    out, errors = [], 0
    for _ in range(calls):
        header = protocol.authorization_header(key, CLOUDLET, "GET", "/device/messages")
        start = time.perf_counter()
        try:
            conn = http.client.HTTPSConnection("127.0.0.1", cloudlet.port, context=ctx, timeout=30)
            conn.request("GET", "/device/messages", headers={"Authorization": header})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            errors += resp.status != 200
        except OSError:
            errors += 1
        out.append((time.perf_counter() - start) * 1000)
    return out, errors


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- hostile clients (each in a process of its own) ----------------------------


async def _hold(port: int, ca: str, count: int, open_now) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca)

    async def no_handshake(i: int) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                open_now.value += 1
                if i % 2:
                    writer.write(b"\x16\x03\x01\x02\x00\x01")  # a ClientHello that never ends
                await reader.read()  # until the Manager drops it
            except OSError:
                await asyncio.sleep(0.2)
                continue
            open_now.value -= 1
            writer.close()

    async def slow_headers() -> None:
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1"
                )
            except OSError:
                await asyncio.sleep(0.2)
                continue
            open_now.value += 1
            try:
                writer.write(b"GET /device/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                while True:
                    with contextlib.suppress(TimeoutError):
                        if await asyncio.wait_for(reader.read(1), 1.0) == b"":
                            break
                    writer.write(b"X")  # one byte a second, never the end of the headers
                    await writer.drain()
            except OSError:
                pass
            open_now.value -= 1
            writer.close()

    tasks = [no_handshake(i) for i in range(count // 2)]
    tasks += [slow_headers() for _ in range(count - count // 2)]
    await asyncio.gather(*tasks)


def hold_connections(port: int, ca: str, count: int, open_now, nice: int) -> None:
    os.nice(nice)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, count + 256)), hard))
    asyncio.run(_hold(port, ca, count, open_now))


def forge(port: int, ca: str, source: str, params_blob: bytes, sent, refused, nice: int) -> None:
    """Forged proofs on keep-alive connections: fresh nonce each, wrong signature.

    The rogue key is for the right identity from another PKG, and the proof
    claims our params digest, so it passes every cheap check and only the
    pairing can refuse it (unless the limiter already did). Forging costs
    nothing: one signature, then only the nonce and time stamp change.
    """
    os.nice(nice)
    params = formats.decode_params(params_blob)
    rogue = ibe.extract(ibe.setup(CLOUDLET), device_identity(CLOUDLET, DEVICE))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=ca)
    binding = protocol.request_binding("GET", "/device/messages", b"")
    forged = auth.make_proof(rogue, CLOUDLET, binding)
    forged = dataclasses.replace(forged, params_digest=params.digest)
    conn = None
    while True:
        proof = dataclasses.replace(forged, nonce=os.urandom(16), timestamp=int(time.time()))
        header = f"{protocol.SCHEME} " + base64.b64encode(
            formats.encode_auth_proof(proof)
        ).decode("ascii")
        try:
            if conn is None:
                conn = http.client.HTTPSConnection(
                    "127.0.0.1", port, context=ctx, timeout=30, source_address=(source, 0)
                )
            conn.request("GET", "/device/messages", headers={"Authorization": header})
            resp = conn.getresponse()
            resp.read()
            with sent.get_lock():
                sent.value += 1
            with refused.get_lock():
                refused.value += resp.status == 429
        except OSError:
            conn = None


# --- scenarios -------------------------------------------------------------------


@contextlib.contextmanager
def holding(ctx, cloudlet: Cloudlet, args, notes: list[str]):
    """``args.held`` hostile connections, open before the block and dropped after it."""
    open_now = ctx.Value("i", 0, lock=False)
    holder = ctx.Process(
        target=hold_connections,
        args=(cloudlet.port, str(cloudlet.dir / "ca.pem"), args.held, open_now, args.nice),
    )
    holder.start()
    deadline = time.monotonic() + 60
    while open_now.value < args.held * 0.95 and time.monotonic() < deadline:
        time.sleep(0.2)
    at_start = open_now.value
    try:
        yield
    finally:
        notes.append(f"{at_start}..{open_now.value}")
        holder.kill()
        holder.join()
        time.sleep(11)  # until the Manager has dropped what the holder left behind


@contextlib.contextmanager
def flooding(ctx, cloudlet: Cloudlet, args, notes: list[str]):
    """4 forgers on their own addresses, for the length of the block."""
    sent, refused = ctx.Value("i", 0), ctx.Value("i", 0)
    ca, blob = str(cloudlet.dir / "ca.pem"), formats.encode_params(cloudlet.master.params)
    forgers = [
        ctx.Process(target=forge, args=(cloudlet.port, ca, src, blob, sent, refused, args.nice))
        for src in FORGERS
    ]
    for proc in forgers:
        proc.start()
    time.sleep(1)
    start, before, refused_before = time.monotonic(), sent.value, refused.value
    try:
        yield
    finally:
        count = sent.value - before
        notes.append((count / (time.monotonic() - start), (refused.value - refused_before) / count))
        for proc in forgers:
            proc.kill()
            proc.join()


def compare(load, ctx, cloudlet, key, args) -> tuple[tuple, tuple, list]:
    """Quiet and loaded blocks in turn, so that other load on the machine hits both alike."""
    blocks: dict[str, list] = {"quiet": [], "loaded": []}
    notes: list = []
    for _ in range(args.runs):
        blocks["quiet"].append(device_latencies(cloudlet, key, args.calls))
        with load(ctx, cloudlet, args, notes):
            blocks["loaded"].append(device_latencies(cloudlet, key, args.calls))
    figures = []
    for name in ("quiet", "loaded"):
        runs = blocks[name]
        figures.append((
            statistics.median(p(samples, 0.50) for samples, _e in runs),
            statistics.median(p(samples, 0.99) for samples, _e in runs),
            sum(errors for _s, errors in runs),
        ))  # fmt: skip
    return figures[0], figures[1], notes


def row(name: str, quiet: tuple, loaded: tuple, extra: str) -> None:
    ratio = f"{loaded[0] / quiet[0]:4.2f}x / {loaded[1] / quiet[1]:4.2f}x"
    print(f"  {name:<30} {quiet[0]:6.2f} {quiet[1]:6.2f}   {loaded[0]:6.2f} {loaded[1]:6.2f}"
          f"   {ratio:<15} {quiet[2]:3d} / {loaded[2]:3d}   {extra}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--nice", type=int, default=19, help="niceness of the hostile processes")
    args = parser.parse_args()
    max_connections, nofile = unit_limits()
    cloudlet = Cloudlet.make(Path(tempfile.mkdtemp(prefix="bench-manager-")))
    key = ibe.extract(cloudlet.master, device_identity(CLOUDLET, DEVICE))
    ctx = mp.get_context("fork")

    print(f"Manager load benchmark: medians of {args.runs} runs x {args.calls} calls, quiet and "
          f"loaded in turn; {os.cpu_count()} CPUs\n  unit limits: LimitNOFILE={nofile}, "
          f"max_connections={max_connections}; hostile processes at nice {args.nice}")  # fmt: skip
    print(f"  {'':<30} {'quiet p50/p99 ms':<16}  {'loaded p50/p99 ms':<17} "
          f"{'loaded/quiet':<15} {'errors q/l':<10}")  # fmt: skip
    logs = []
    manager = Manager(cloudlet, nofile, max_connections, auth_failures=10)
    try:
        quiet, loaded, notes = compare(holding, ctx, cloudlet, key, args)
        row(f"{args.held} held connections", quiet, loaded,
            "open at start..end of each block: " + ", ".join(notes))  # fmt: skip
        quiet, loaded, notes = compare(flooding, ctx, cloudlet, key, args)
        rate = statistics.median(r for r, _s in notes)
        share = statistics.median(s for _r, s in notes)
        row("forged proofs, 4 sources", quiet, loaded,
            f"{rate:.0f} forged req/s, {share:.1%} answered 429")  # fmt: skip
    finally:
        logs.append(manager.stop())
    manager = Manager(cloudlet, nofile, max_connections, auth_failures=10_000)
    try:
        quiet, loaded, notes = compare(flooding, ctx, cloudlet, key, args)
        rate = statistics.median(r for r, _s in notes)
        row("  the same, no limiter", quiet, loaded,
            f"{rate:.0f} forged req/s (limits.auth_failures = 10000)")  # fmt: skip
    finally:
        logs.append(manager.stop())
    text = "\n".join(logs)
    print(f"  Manager log: {text.count('out of system resource')} 'out of system resource', "
          f"{text.count('refusing new ones')} 'refusing new ones' warnings, "
          f"{text.count('Refusing device requests')} sources blocked")  # fmt: skip


if __name__ == "__main__":
    main()
