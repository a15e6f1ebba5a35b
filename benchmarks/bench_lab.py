#!/usr/bin/env python3
"""Lab bring-up and tear-down times, as medians of several runs.

Runs the real playbook (`playbooks/lab.yml`) with the default four machines
on a lab of its own ("bench"), so a lab brought up by `make demo` is left
alone. A cold bring-up uses a scratch image cache, so the main cache is kept.

    python benchmarks/bench_lab.py [--runs 3] [--skip-cold]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from timing import timed_playbook

TARGETS = {"warm bring-up": 60.0, "cold bring-up": 360.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()

    inventory = Path(tempfile.mkdtemp(prefix="bench-lab-")) / "hosts.yml"
    common = ["-e", "lab_name=bench", "-e", "lab_subnet=10.80.0.0/16",
              "-e", f"lab_inventory_path={inventory}"]
    down = [*common, "-e", "lab_state=absent"]
    times: dict[str, list[float]] = {"warm bring-up": [], "cold bring-up": [], "tear-down": []}

    timed_playbook("lab", *down)
    timed_playbook("lab", *common)  # make sure the main cache is warm
    times["tear-down"].append(timed_playbook("lab", *down))
    for _ in range(args.runs):
        times["warm bring-up"].append(timed_playbook("lab", *common))
        times["tear-down"].append(timed_playbook("lab", *down))
    if not args.skip_cold:
        for _ in range(args.runs):
            cache = tempfile.mkdtemp(prefix="bench-cache-", dir="/var/tmp")
            try:
                times["cold bring-up"].append(
                    timed_playbook("lab", *common, "-e", f"lab_image_cache_dir={cache}"))
                times["tear-down"].append(timed_playbook("lab", *down))
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    shutil.rmtree(inventory.parent, ignore_errors=True)

    print(f"lab bring-up/tear-down, 4 machines, {os.cpu_count()} CPUs (wall time, seconds)")
    for name, values in times.items():
        if not values:
            continue
        median, target = statistics.median(values), TARGETS.get(name)
        verdict = "" if target is None else (
            f"  target < {target:.0f} s: {'met' if median < target else 'MISSED'}")
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {name:15s} median {median:6.1f}  (runs: {runs}){verdict}")


if __name__ == "__main__":
    main()
