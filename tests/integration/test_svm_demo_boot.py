"""Boot the demo SVM for real under QEMU TCG and talk to its counter over loopback.

No lab needed: QEMU's user-mode network forwards 127.0.0.1:<port> to the
guest's port 80, and nothing else is contacted. The first run builds the
image (about a minute, downloading two Debian packages); later runs reuse
the cache in $CLOUDLET_SVM_CACHE (default /var/cache/cloudlet-svm).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from cloudlet.svm import demo

CACHE = os.environ.get("CLOUDLET_SVM_CACHE", "/var/cache/cloudlet-svm")
READY_TIMEOUT = 120  # s; TCG on a busy 2-core CI machine, usually about 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "application/json"
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def svm() -> dict:
    return demo.build_demo_svm(CACHE)


@pytest.fixture
def booted(svm, tmp_path):
    """A running SVM: (port, serial log path). QEMU is always reaped afterwards."""
    port, serial = free_port(), tmp_path / "serial.log"
    with open(serial, "wb") as out:
        qemu = subprocess.Popen(demo.qemu_argv(svm, port, extra_cmdline="svm.hostname=itest"),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while b"SVM-READY" not in serial.read_bytes():
            if qemu.poll() is not None:
                pytest.fail(f"QEMU exited ({qemu.returncode}):\n{serial.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"No SVM-READY within {READY_TIMEOUT} s:\n"
                            f"{serial.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        yield port, serial
    finally:
        qemu.terminate()
        try:
            qemu.wait(timeout=10)
        except subprocess.TimeoutExpired:
            qemu.kill()
            qemu.wait(timeout=10)
    # Reaped, so nothing of this boot is left running.
    assert qemu.returncode is not None and not Path(f"/proc/{qemu.pid}").exists()


def test_counter_lives_in_ram_and_names_itself_from_the_disk(svm, booted):
    port, serial = booted
    log = serial.read_text(errors="replace")
    assert "SVM-READY count=0 service=counter" in log

    first, second = get(port), get(port)
    assert second["count"] == first["count"] + 1
    assert first["count"] == 1  # nothing else talks to this guest
    assert first["boot_id"] == second["boot_id"]  # same boot, so the state is in RAM
    assert first["hostname"] == "itest"  # svm.hostname= on the kernel command line
    # "counter" comes only from /data/service.txt on the base image (the scripts
    # fall back to "unknown"), and a boot record was appended to the overlay.
    assert first["service"] == svm["manifest"]["label"] == "counter"
    assert first["boots"] == 1
    # The boot wrote to a throw-away snapshot: the cached image still verifies.
    assert demo.verify_manifest(svm["manifest_path"])["recipe"] == svm["key"]


def test_second_build_is_a_cache_hit(svm):
    again = demo.build_demo_svm(CACHE)
    assert again["built"] is False
    assert again["manifest_path"] == svm["manifest_path"]
