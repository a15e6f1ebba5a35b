#!/usr/bin/env python3
"""Wall time of the ceremonies on a lab of their own: setup (first and second
run), delivery, device pairing (pair_device.yml for device-1: pairing
request, issue, seal, import, 802.1X join and DHCP), cloudlet pairing
(both sides together, from the host side's start to both sides' end, over
the lab's pairing segment), migration (migrate.yml moving the demo SVM from
cloudlet-a to cloudlet-b, unshaped, until device-1 has followed it) and the
whole mission (those five back to back, from the first setup's start to the
migration's end; the second setup runs after it), as medians over several
fresh labs, and the tasks that take the most time in each first setup (from
ansible-runner's job events).

    python benchmarks/bench_ceremonies.py [--runs 3]

Each run brings up a fresh "cerb" lab (10.91.0.0/16, warm image cache), so a
lab brought up by `make demo` is left alone; the lab is removed at the end.
The control node's state (manifest signing key, delivery records, audit log)
goes to a scratch control directory, removed at the end too, so the
checkout's control/ is left alone as well.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from timing import ROOT, playbook, timed_playbook


def pair_cloudlets(on_lab: list[str]) -> float:
    """Both sides of pair_cloudlets.yml, as scripts/pair-cloudlets runs them (demo, tests)."""
    start = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "pair-cloudlets"), "cloudlet-a", "cloudlet-b",
                           "--", *on_lab], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pairing failed:\n{done.stdout}")
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="bench-ceremonies-"))
    (scratch / "group_vars").symlink_to(ROOT / "inventories" / "lab" / "group_vars")
    inventory = scratch / "hosts.yml"
    lab = ["-e", "lab_name=cerb", "-e", "lab_subnet=10.91.0.0/16",
           "-e", f"lab_inventory_path={inventory}"]
    # cloudlet_control_dir and the audit callback both follow it.
    os.environ["CLOUDLET_CONTROL_DIR"] = str(scratch / "control")
    on_lab = ["-i", str(inventory)]
    times: dict[str, list[float]] = {"setup, first run": [], "delivery": [],
                                     "device pairing": [], "cloudlet pairing": [],
                                     "migration": [], "whole mission": [],
                                     "setup, second run": []}
    slowest: list[list] = []
    try:
        for _ in range(args.runs):
            timed_playbook("lab", *lab, "-e", "lab_state=absent")
            timed_playbook("lab", *lab)
            start = time.monotonic()
            first = playbook("setup", *on_lab)
            times["setup, first run"].append(first.seconds)
            slowest.append(first.slowest(8))
            times["delivery"].append(timed_playbook("delivery", *on_lab))
            times["device pairing"].append(
                timed_playbook("pair_device", *on_lab, "-e", "device=device-1"))
            times["cloudlet pairing"].append(pair_cloudlets(on_lab))
            times["migration"].append(timed_playbook(
                "migrate", *on_lab, "-e", "svm=demo-counter", "-e", "target=cloudlet-b"))
            times["whole mission"].append(time.monotonic() - start)
            times["setup, second run"].append(timed_playbook("setup", *on_lab))
    finally:
        timed_playbook("lab", *lab, "-e", "lab_state=absent")
        shutil.rmtree(scratch, ignore_errors=True)

    print(f"ceremonies on the lab: 2 cloudlets, 2 devices, {os.cpu_count()} CPUs (seconds)")
    for name, values in times.items():
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:18s} median {statistics.median(values):6.1f}  (runs: {runs})")
    for run, tasks in enumerate(slowest, 1):
        print(f"slowest tasks of the first setup, run {run} (seconds, per host):")
        for task in tasks:
            print(f"  {task.seconds:6.1f}  {task.host:12s} {task.task}")


if __name__ == "__main__":
    main()
