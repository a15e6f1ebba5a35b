#!/usr/bin/env python3
"""Live migration over a shaped tactical link: ours against plain virsh and stop-and-copy.

On a lab of its own ("migb", 10.90.0.0/16: cloudlet-a and cloudlet-b, set up
and paired), the demo SVM moves back and forth between the two over each
one's uplink into the other's field network (802.1X-authorized by a first
migrate.yml run), both directions of both uplinks shaped with
``tc tbf rate R burst 32kb latency 200ms`` (no netem on this kernel). Each
row is one method at one rate with one workload of the demo SVM, chosen at
its boot (``svm.workload=``): *light*, the counter service only, and
*dirtying*, 96 MiB of random and 96 MiB of text data in RAM, about 1 MiB/s
of it rewritten. Medians of ``--runs`` migrations:

* ours: ``migrate.yml`` (the cloudlet_svm_migrate module with its defaults);
* plain: ``virsh migrate --live --p2p --tls --copy-storage-inc``;
* stop-and-copy, as the seed's reference did: suspend, then migrate the
  paused SVM (disk overlay, then memory), resume on the target;
* post-copy: plain with ``--postcopy --postcopy-after-precopy``: after the
  first pass the SVM runs on the target and fetches the pages it still lacks
  (QEMU refuses it with compression on parallel connections, so none).

Plain may never converge (an SVM that dirties memory as fast as the link
carries it, at libvirt's 300 ms downtime aim): a plain move still running
after ``--plain-limit`` seconds is aborted (the SVM stays where it was) and
its row says so, with what it had sent.

Figures per row:

* total: seconds from the start of the job to the SVM running on the target
  (the module's own figure; virsh's wall time);
* downtime: QEMU's (completed job statistics on the target) and the service
  gap, the longest pause between ping replies from the SVM (every 10 ms, from
  both cloudlets' SVM bridges: the same clock);
* wire: bytes through the source's port into the target's network, both
  ways (the host's interface counters);
* phys: total / (wire / link rate), 1.0 being the physical limit;
* ratio: wire / (guest RAM in use + overlay), the RAM in use being the
  non-zero pages plain's runs sent (QEMU's ``memory_normal_bytes``), the
  overlay the data it holds before the move (``qemu-img map``: its zero
  clusters are not data). Without plain among ``--methods``, no ratio.

    python benchmarks/bench_migration.py [--runs 3] [--rates 100,20]
                                         [--workloads light,dirtying]
                                         [--methods ours,plain,stop-and-copy,post-copy]
                                         [--plain-limit 300] [--keep]

``--keep`` leaves the lab up (and reuses one left up), for a second run.
The figures are printed and saved in ``benchmarks/results/``, named after
the run (``migration-light-dirtying-100-20.json`` by default), with a plot
beside it (``.png``) when matplotlib is there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from timing import ROOT, playbook

from cloudlet.lab.topology import field_ifname
from cloudlet.manager.peer import SVM_SCHEMA

LAB, SUBNET = "migb", "10.90.0.0/16"
A, B = "cloudlet-a", "cloudlet-b"
SVM = "demo-counter"
# The store role's catalog entry for it, as every cloudlet runs it by default.
SERVICE = next(s for s in yaml.safe_load(
    (ROOT / "roles/cloudlet_svm_store/defaults/main.yml").read_text())[
        "cloudlet_svm_store_services"] if s["name"] == SVM)
SVM_IP = SERVICE["address"].split("/")[0]
STORE = f"/var/lib/cloudlet/svm/{SVM}"
STATE = f"/var/lib/cloudlet-lab/{LAB}"
METHODS = ("ours", "plain", "stop-and-copy", "post-copy")
CONSOLE = f"/var/log/libvirt/qemu/{SVM}-console.log"
ADMIN = "curl -sSf --unix-socket /run/cloudlet-manager/admin.sock http://manager/admin/svms"
RESULTS = ROOT / "benchmarks" / "results"


def other(host: str) -> str:
    return B if host == A else A


def uplink(host: str) -> str:
    return field_ifname(other(host))


def sh(*args: str, check: bool = True) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        sys.exit(f"{' '.join(args)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def ssh(host: str, command: str) -> list[str]:
    """The argv that runs ``command`` on the lab machine ``host``."""
    return ["ssh", "-F", f"{STATE}/ssh_config", host, command]


def on(host: str, command: str, check: bool = True) -> str:
    return sh(*ssh(host, command), check=check)


def host_port(host: str) -> str:
    """The host end of ``host``'s veth into the other cloudlet's field segment."""
    inner = json.loads(sh("ip", "netns", "exec", f"{LAB}-{host}", "ip", "-j", "link", "show",
                          uplink(host)))[0]["link_index"]
    return next(link["ifname"] for link in json.loads(sh("ip", "-j", "link"))
                if link["ifindex"] == inner and link.get("master", "").startswith(LAB))


def field_address(host: str) -> str:
    out = sh("ip", "netns", "exec", f"{LAB}-{host}", "ip", "-4", "-o", "addr", "show", "field0")
    return out.split()[3].split("/")[0]


def shape(rate_mbit: int | None) -> None:
    """tbf on both uplinks, both ways (``None``: unshaped)."""
    for host in (A, B):
        for where in (["ip", "netns", "exec", f"{LAB}-{host}"], []):
            dev = uplink(host) if where else host_port(host)
            sh(*where, "tc", "qdisc", "del", "dev", dev, "root", check=False)
            if rate_mbit:
                sh(*where, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate",
                   f"{rate_mbit}mbit", "burst", "32kb", "latency", "200ms")


def wire_bytes(port: str) -> int:
    stats = Path("/sys/class/net", port, "statistics")
    return sum(int((stats / f"{way}_bytes").read_text()) for way in ("rx", "tx"))


def holder() -> str:
    for host in (A, B):
        if on(host, f"virsh -q domstate {SVM}", check=False).strip() == "running":
            return host
    sys.exit("The SVM runs on neither cloudlet.")


class Pinger:
    """ping -D every 10 ms on both cloudlets, to the SVM on their bridges; replies' times,
    merged (the lab's machines share the host's clock)."""

    def __enter__(self) -> Pinger:
        self.procs = [subprocess.Popen(
            ssh(host, f"ping -D -n -i 0.01 -W 1 {SVM_IP} & read _; kill -INT $!; wait"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            for host in (A, B)]
        time.sleep(1)
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(1)
        self.replies: list[float] = []
        for proc in self.procs:
            out, _ = proc.communicate("\n", timeout=20)  # ping stops on SIGINT, output flushed
            self.replies += [float(m) for m in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from",
                                                          out, re.M)]
        self.replies.sort()

    def longest_gap_ms(self) -> float:
        pairs = zip(self.replies, self.replies[1:], strict=False)
        return max((b - a for a, b in pairs), default=0) * 1000


def answering(host: str, wait: int = 10) -> bool:
    """Whether the SVM answers on ``host`` within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while "bytes from" not in on(host, f"ping -n -c 1 -W 1 {SVM_IP}", check=False):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def revive(host: str) -> str:
    """A guest the move broke: its console's first words of trouble, then a fresh boot."""
    console = on(host, f"grep -m1 -E 'BUG|not a head|protection fault|panic' {CONSOLE}",
                 check=False).strip()
    restart(host)
    return console


def restart(host: str) -> None:
    """A fresh boot of the SVM on ``host``; back once the guest says it is ready (the
    dirtying workload fills its RAM first)."""
    on(host, f"virsh destroy {SVM}; virsh start {SVM}", check=False)
    deadline = time.monotonic() + 180
    while "SVM-READY" not in on(host, f"cat {CONSOLE}", check=False):
        if time.monotonic() > deadline:
            sys.exit(f"The SVM does not come back on {host}.")
        time.sleep(2)


def boot(workload: str, inventory: list[str]) -> None:
    """The SVM booted again where it is, with ``workload``, the way an admin sets it:
    the role's boot_options, then a restart; back once the guest says it is ready."""
    host = holder()
    service = {**SERVICE, "boot_options": [f"svm.workload={workload}"]}
    playbook("setup", *inventory, "--limit", host, "-e", json.dumps(
        {"cloudlet_svm_store_services": [service], "cloudlet_svm_store_run": [SVM]}))
    restart(host)


def job_stats(host: str) -> dict:
    """The completed migration's statistics, as ``host`` keeps them."""
    out = on(host, f"virsh domjobinfo --completed {SVM} --keep-completed", check=False)
    stats = {}
    for line in out.splitlines():
        key, _, value = line.partition(":")
        stats[key.strip()] = value.strip()
    return stats


def _number(stats: dict, key: str) -> float:
    match = re.match(r"([\d.]+)\s*(\w+)?", stats.get(key, ""))
    if not match:
        return 0.0
    unit = {"KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30, "ms": 1}.get(match.group(2) or "", 1)
    return float(match.group(1)) * unit


def prepare_overlay(source: str, target: str) -> None:
    """What the module makes through libvirt's storage API, made by hand for virsh."""
    size = on(source, f"qemu-img info --output=json -U {STORE}/overlay.qcow2")
    virtual = json.loads(size)["virtual-size"]
    on(target, f"rm -f {STORE}/overlay.qcow2 && qemu-img create -q -f qcow2 -F qcow2 "
               f"-b {STORE}/base.qcow2 {STORE}/overlay.qcow2 {virtual}")


def hand_over(source: str, target: str) -> None:
    """Move the SVM's record from the source's Manager to the target's, as the ceremony
    does, after a move virsh made on its own: ours refuses a target that already holds
    the record, as it should."""
    record = next((s for s in json.loads(on(source, ADMIN))["svms"] if s["service_id"] == SVM),
                  None)
    if record is None:
        return
    body = {k: record[k] for k in SVM_SCHEMA["properties"]}  # what PUT takes of what GET shows
    on(target, f"{ADMIN}/{SVM} -X PUT -H 'Content-Type: application/json' "
               f"-d {shlex.quote(json.dumps(body))}")
    on(source, f"{ADMIN}/{SVM} -X DELETE")


def overlay_data(host: str) -> int:
    """Bytes of data the SVM's overlay holds itself: its zero clusters and what its base
    holds do not count."""
    extents = json.loads(on(host, f"qemu-img map -U --output=json {STORE}/overlay.qcow2"))
    return sum(e["length"] for e in extents if e["depth"] == 0 and e["data"])


def within(host: str, command: str, limit: float) -> bool:
    """Run a ``virsh migrate`` on ``host``; abort its job after ``limit`` seconds.
    Whether it finished."""
    proc = subprocess.Popen(ssh(host, command), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        on(host, f"virsh domjobabort {SVM}", check=False)
        proc.communicate()
        return False
    if proc.returncode != 0:
        sys.exit(f"{command} failed on {host}: {err.strip() or out.strip()}")
    return True


def migrate(method: str, source: str, inventory: list[str], limit: float) -> dict:
    target = other(source)
    port = host_port(source)
    disk = overlay_data(source)
    if method != "ours":
        prepare_overlay(source, target)
    uri = f"qemu+tls://{field_address(target)}/system"
    common = (f"--p2p --tls --copy-storage-inc --persistent {SVM} {uri} "
              f"tcp://{field_address(target)}")
    sent = wire_bytes(port)
    finished = True
    with Pinger() as pings:
        start = time.monotonic()
        if method == "ours":
            # Without the module's own check (and restart) of the moved SVM, so that a
            # guest the move broke is seen and counted here as for the other methods.
            playbook("migrate", *inventory, "-e", f"svm={SVM}", "-e", f"target={target}",
                     "-e", "migrate_device_wait=0", "-e", "migrate_health_wait=0")
            total = json.loads(on(source, f"cat /run/cloudlet-migrate-{SVM}.json"))["total_s"]
        elif method == "plain":
            finished = within(source, f"virsh migrate --live --undefinesource {common}", limit)
            total = time.monotonic() - start
        elif method == "post-copy":
            # Once switched it cannot be aborted, and it always ends: no limit. The
            # source keeps its definition: the target keeps no statistics of a move
            # that switched, the source does.
            on(source, f"virsh migrate --live --postcopy --postcopy-after-precopy {common}")
            total = time.monotonic() - start
        else:
            on(source, f"virsh suspend {SVM} && virsh migrate --undefinesource {common}")
            on(target, f"virsh resume {SVM}")
            total = time.monotonic() - start
    sent = wire_bytes(port) - sent
    if not finished:
        return {"total_s": round(total, 2), "downtime_ms": 0.0, "gap_ms": 0.0, "wire": sent,
                "normal": 0.0, "disk": disk, "libvirt": 0.0, "requests": 0.0, "broken": "",
                "finished": False}
    broken = "" if answering(target) else revive(target)
    if method == "ours":
        figures = json.loads(on(source, f"cat /run/cloudlet-migrate-{SVM}.json"))
        qemu_ms, libvirt_bytes, normal, requests = figures["downtime_ms"], figures["bytes"], 0, 0
    else:
        if method == "post-copy":
            stats = job_stats(source)
            on(source, f"virsh undefine {SVM}")
        else:
            stats = job_stats(target)
        on(source, f"rm -f {STORE}/overlay.qcow2")  # as the module does: the target's now
        hand_over(source, target)
        qemu_ms = _number(stats, "Total downtime")
        normal = _number(stats, "Normal data")
        libvirt_bytes = _number(stats, "Memory processed") + _number(stats, "File processed")
        requests = _number(stats, "Postcopy requests")  # pages the target faulted on
    return {"total_s": round(float(total), 2), "downtime_ms": qemu_ms,
            "gap_ms": round(pings.longest_gap_ms(), 1), "wire": sent, "normal": normal,
            "disk": disk, "libvirt": libvirt_bytes, "requests": requests, "broken": broken,
            "finished": True}


def lab_up(inventory: Path, keep: bool) -> list[str]:
    on_lab = ["-i", str(inventory)]
    lab = ["-e", f"lab_name={LAB}", "-e", f"lab_subnet={SUBNET}",
           "-e", f"lab_inventory_path={inventory}",
           "-e", json.dumps({"lab_machines": [{"name": A, "role": "cloudlet"},
                                              {"name": B, "role": "cloudlet"}]})]
    if keep and inventory.exists():
        return on_lab
    playbook("lab", *lab)
    playbook("setup", *on_lab)
    paired = subprocess.run([str(ROOT / "scripts" / "pair-cloudlets"), A, B, "--", *on_lab,
                             "-e", "replace=true"], cwd=ROOT, capture_output=True, text=True,
                            check=False)
    if paired.returncode != 0:
        sys.exit(f"pairing failed:\n{paired.stdout}")
    return on_lab


def summary(rows: dict, rates: list[int], methods: list[str], workload: str,
            touched: float) -> list[str]:
    lines = [f"{workload} workload: guest RAM in use {touched / 2**20:.1f} MiB (plain's "
             f"non-zero pages)",
             f"{'method':14s} {'rate':>5s} {'total s':>8s} {'qemu ms':>8s} {'gap ms':>7s} "
             f"{'MiB':>6s} {'phys':>5s} {'ratio':>5s}  runs (total s / gap ms)"]
    for rate in rates:
        for method in methods:
            every = rows[f"{workload}/{method}@{rate}"]
            done = [r for r in every if r["finished"]]
            if not done:
                sent = statistics.median(r["wire"] for r in every) / 2**20
                lines.append(f"{method:14s} {rate:>5d} did not converge: aborted after "
                             f"{statistics.median(r['total_s'] for r in every):.0f} s in "
                             f"{len(every)} of {len(every)} runs, {sent:.1f} MiB sent")
                continue
            runs = [r for r in done if not r["broken"]] or done
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]
                   if k not in ("broken", "finished")}
            phys = med["total_s"] / (med["wire"] * 8 / (rate * 1e6))
            ratio = med["wire"] / (touched + med["disk"]) if touched else float("nan")
            each = ", ".join(f"{r['total_s']:.1f}/{r['gap_ms']:.0f}" for r in runs)
            broken = sum(bool(r["broken"]) for r in done)
            aborted = len(every) - len(done)
            # A post-copy move that switched had the target fault on pages it lacked.
            switched = sum(r["requests"] > 0 for r in done)
            lines.append(f"{method:14s} {rate:>5d} {med['total_s']:8.2f} {med['downtime_ms']:8.0f} "
                         f"{med['gap_ms']:7.0f} {med['wire'] / 2**20:6.1f} {phys:5.2f} "
                         f"{ratio:5.2f}  {each}; guest broken by {broken}"
                         + (f"; {aborted} aborted unconverged" if aborted else "")
                         + (f"; switched by {switched}" if method == "post-copy" else ""))
    return lines


def plot(rows: dict, rates: list[int], methods: list[str], workloads: list[str],
         path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: no plot)")
        return
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(len(workloads), 2, figsize=(10, 4 * len(workloads)),
                             squeeze=False)
    for row, workload in zip(axes, workloads, strict=True):
        for ax, key, label in ((row[0], "total_s", "total (s)"),
                               (row[1], "gap_ms", "service gap (ms, log)")):
            for i, method in enumerate(methods):
                # A method that never finished at a rate has no bar there.
                values = [statistics.median([r[key] for r in rows[f"{workload}/{method}@{rate}"]
                                             if r["finished"]] or [float("nan")])
                          for rate in rates]
                ax.bar([j + i * width for j in range(len(rates))], values, width, label=method)
            ax.set_xticks([j + width * (len(methods) - 1) / 2 for j in range(len(rates))],
                          [f"{r} Mbit/s" for r in rates])
            ax.set_ylabel(label)
            ax.set_title(f"{workload} workload")
            if key == "gap_ms":
                ax.set_yscale("log")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default="100,20")
    parser.add_argument("--workloads", default="light,dirtying")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--plain-limit", type=float, default=300,
                        help="seconds before an unconverged plain move is aborted")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    workloads = args.workloads.split(",")
    if not set(workloads) <= {"light", "dirtying"}:
        parser.error("--workloads: light and dirtying only")
    methods = args.methods.split(",")
    if not set(methods) <= set(METHODS):
        parser.error(f"--methods: {', '.join(METHODS)} only")

    scratch = Path(tempfile.gettempdir()) / f"bench-migration-{LAB}"
    scratch.mkdir(exist_ok=True)
    if not (scratch / "group_vars").exists():
        (scratch / "group_vars").symlink_to(ROOT / "inventories" / "lab" / "group_vars")
    os.environ["CLOUDLET_CONTROL_DIR"] = str(scratch / "control")
    inventory = scratch / "hosts.yml"
    rows: dict[str, list[dict]] = {}
    try:
        on_lab = lab_up(inventory, args.keep)
        shape(None)
        if not answering(holder()):
            revive(holder())
        # A first move each way authorizes both uplinks (802.1X) for virsh's runs.
        for _ in range(2):
            migrate("ours", holder(), on_lab, args.plain_limit)
        for workload in workloads:
            shape(None)
            boot(workload, on_lab)
            for rate in rates:
                shape(rate)
                for method in methods:
                    row = f"{workload}/{method}@{rate}"
                    rows[row] = [migrate(method, holder(), on_lab, args.plain_limit)
                                 for _ in range(args.runs)]
                    print(f"{row}: {rows[row]}", flush=True)
        shape(None)
    finally:
        if not args.keep:
            playbook("lab", "-e", f"lab_name={LAB}", "-e", "lab_state=absent")
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nlink: tc tbf rate R burst 32kb latency 200ms, both ways; {os.cpu_count()} CPUs")
    touched, lines = {}, []
    for workload in workloads:
        touched[workload] = statistics.median([r["normal"] for rate in rates
                                               for r in rows.get(f"{workload}/plain@{rate}", [])
                                               if r["finished"]] or [0.0])
        lines += summary(rows, rates, methods, workload, touched[workload])
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    name = "-".join(["migration", *workloads, *map(str, rates)])
    (RESULTS / f"{name}.json").write_text(json.dumps(
        {"link": "tbf burst 32kb latency 200ms", "rates_mbit": rates, "runs": rows,
         "touched_bytes": touched, "table": lines}, indent=1))
    plot(rows, rates, methods, workloads, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
