#!/usr/bin/env python3
"""Demo SVM figures: cold and warm build, boot-to-ready under TCG, image sizes.

The cold build uses a scratch cache (so it includes fetching the package
index and the two .deb files); the warm build and the boots use the main
cache. Boots go through QEMU user-mode networking on 127.0.0.1 only.

    python benchmarks/bench_svm_demo.py [--runs 3] [--cache-dir DIR] [--skip-cold]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cloudlet.svm import demo  # noqa: E402


def boot_to_ready(svm: dict) -> tuple[float, float]:
    """Seconds from QEMU start to SVM-READY on the console, and to the first answer."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        serial = Path(tmp) / "serial.log"
        start = time.monotonic()
        with open(serial, "wb") as out:
            qemu = subprocess.Popen(demo.qemu_argv(svm, port), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        try:
            while b"SVM-READY" not in serial.read_bytes():
                if qemu.poll() is not None or time.monotonic() - start > 180:
                    sys.exit(f"SVM did not become ready:\n{serial.read_text()[-2000:]}")
                time.sleep(0.05)
            ready = time.monotonic() - start
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
                resp.read()
            answered = time.monotonic() - start
        finally:
            qemu.terminate()
            qemu.wait(timeout=10)
    return ready, answered


def du(path: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache-dir", default="/var/cache/cloudlet-svm")
    parser.add_argument("--skip-cold", action="store_true")
    args = parser.parse_args()

    if not args.skip_cold:
        scratch = Path(tempfile.mkdtemp(prefix="bench-svm-", dir="/var/tmp"))
        try:
            cold = demo.build_demo_svm(scratch)
            print(f"cold build (index + download + build): {cold['seconds']:6.1f} s")
            print(f"  apt index kept in the cache: {du(scratch / 'apt') / 2**20:6.1f} MiB")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    svm = demo.build_demo_svm(args.cache_dir)
    warm = [demo.build_demo_svm(args.cache_dir)["seconds"] for _ in range(args.runs)]
    print(f"warm build (cache hit, verified), median of {args.runs}: "
          f"{statistics.median(warm):.2f} s")

    boots = [boot_to_ready(svm) for _ in range(args.runs)]
    print(f"boot to SVM-READY under TCG, median of {args.runs}:   "
          f"{statistics.median(b[0] for b in boots):.2f} s  (runs: "
          f"{', '.join(f'{b[0]:.2f}' for b in boots)})")
    print(f"boot to first HTTP answer, median of {args.runs}:    "
          f"{statistics.median(b[1] for b in boots):.2f} s")

    print("image files:")
    for role, entry in svm["manifest"]["files"].items():
        print(f"  {role:8} {entry['name']:14} {entry['size'] / 2**20:7.2f} MiB")
    total = sum(e["size"] for e in svm["manifest"]["files"].values())
    print(f"  total                   {total / 2**20:7.2f} MiB "
          f"(disk: {demo.BASE_MIB} MiB ext4; only the overlay migrates)")


if __name__ == "__main__":
    main()
