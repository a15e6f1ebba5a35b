"""The demo SVM builder without downloads or root: recipe, manifest, guest scripts."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloudlet.errors import CloudletError, SvmImageError
from cloudlet.svm import demo

PACKAGES = {
    "linux-image-6.1.0-50-cloud-amd64": {"version": "6.1.176-1", "sha256": "aa" * 32},
    "busybox-static": {"version": "1:1.35.0-4", "sha256": "bb" * 32},
}
FILES = Path(demo.__file__).parent / "files"


# -- the recipe and its cache key ---------------------------------------------------------


def test_cache_key_is_stable_and_follows_every_part_of_the_recipe():
    scripts = demo.guest_scripts()
    key = demo.cache_key(PACKAGES, scripts)
    assert key == demo.cache_key(dict(reversed(PACKAGES.items())), dict(scripts))
    newer_kernel = {**PACKAGES, "linux-image-6.1.0-50-cloud-amd64": {
        "version": "6.1.176-2", "sha256": "cc" * 32}}
    edited_init = {**scripts, "init.sh": scripts["init.sh"] + "\n# edited\n"}
    edited_service = {**scripts, "counter.sh": scripts["counter.sh"].replace("503", "500")}
    keys = {key, demo.cache_key(newer_kernel, scripts), demo.cache_key(PACKAGES, edited_init),
            demo.cache_key(PACKAGES, edited_service)}
    assert len(keys) == 4


def test_resolve_follows_the_kernel_metapackage_to_a_concrete_kernel():
    class FakeApt:
        index = {
            "linux-image-cloud-amd64": {"Package": "linux-image-cloud-amd64",
                                        "Depends": "linux-image-6.1.0-50-cloud-amd64 (= 6.1.176-1)",
                                        "Version": "6.1.176-1", "SHA256": "00" * 32},
            "linux-image-6.1.0-50-cloud-amd64": {"Package": "linux-image-6.1.0-50-cloud-amd64",
                                                 "Version": "6.1.176-1", "SHA256": "aa" * 32},
            "busybox-static": {"Package": "busybox-static", "Version": "1:1.35.0-4",
                               "SHA256": "bb" * 32},
        }

        def show(self, *names):
            return [self.index[n] for n in names]

    assert demo.resolve(FakeApt()) == PACKAGES


def test_resolution_is_remembered_until_the_index_changes(tmp_path, monkeypatch):
    class Apt:
        root, release = tmp_path, "Release v1"

        def stamp(self):
            return self.release

    calls = []
    monkeypatch.setattr(demo, "resolve", lambda apt: calls.append(1) or PACKAGES)
    apt = Apt()
    assert demo.resolve_cached(apt) == demo.resolve_cached(apt) == PACKAGES
    assert len(calls) == 1
    apt.release = "Release v2"
    demo.resolve_cached(apt)
    assert len(calls) == 2
    (tmp_path / "resolved.json").write_text("{damaged")
    assert demo.resolve_cached(apt) == PACKAGES and len(calls) == 3


# -- the manifest and its check -----------------------------------------------------------


def fake_image(directory: Path, key: str = "0123456789abcdef") -> Path:
    for name in ("vmlinuz", "initrd.gz", "base.qcow2", "overlay.qcow2"):
        (directory / name).write_bytes(name.encode() * 100)
    manifest = demo.manifest_for(directory, key, PACKAGES, ["kernel/x/virtio.ko"])
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest))
    return path


def test_manifest_names_every_file_with_its_digest_and_the_service(tmp_path):
    manifest = demo.verify_manifest(fake_image(tmp_path))
    assert set(manifest["files"]) == {"kernel", "initrd", "base", "overlay"}
    assert manifest["label"] == "counter" and manifest["memory_mib"] == 384
    assert manifest["ports"] == [{"guest": 80, "protocol": "tcp", "name": "http"}]
    assert manifest["modules"] == ["virtio"]


def test_verify_manifest_rejects_a_tampered_file_and_says_which(tmp_path):
    path = fake_image(tmp_path)
    (tmp_path / "overlay.qcow2").write_bytes(b"evil")
    with pytest.raises(SvmImageError) as err:
        demo.verify_manifest(path)
    assert isinstance(err.value, CloudletError)
    assert "overlay file" in str(err.value) and "does not match its manifest" in str(err.value)
    assert "build it again" in str(err.value)  # the operator's next step
    (tmp_path / "overlay.qcow2").write_bytes(b"O" * len(b"overlay.qcow2" * 100))  # same size
    with pytest.raises(SvmImageError, match=r"overlay file .* \(sha256 [0-9a-f]{16}…, expected"):
        demo.verify_manifest(path)


def test_verify_manifest_rejects_missing_files_unsafe_names_and_garbage(tmp_path):
    path = fake_image(tmp_path)
    (tmp_path / "initrd.gz").unlink()
    with pytest.raises(SvmImageError, match="initrd file .* is missing"):
        demo.verify_manifest(path)
    manifest = json.loads(path.read_text())
    manifest["files"]["kernel"]["name"] = "../../etc/passwd"
    path.write_text(json.dumps(manifest))
    with pytest.raises(SvmImageError, match="unsafe file"):
        demo.verify_manifest(path)
    path.write_text("{not json")
    with pytest.raises(SvmImageError, match="unreadable"):
        demo.verify_manifest(path)


# -- the cache ----------------------------------------------------------------------------


class OfflineApt:
    """Stands in for apt: the index is already there; downloads fail like a dead mirror."""

    def __init__(self, *args):
        pass

    def update(self, refresh):
        pass

    def download(self, packages, dest):
        raise SvmImageError("apt-get download failed: mirror unreachable")


def test_a_cache_hit_needs_no_download_and_a_tampered_cache_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_Apt", OfflineApt)
    monkeypatch.setattr(demo, "resolve_cached", lambda apt: PACKAGES)
    key = demo.cache_key(PACKAGES, demo.guest_scripts())
    (tmp_path / key).mkdir()
    fake_image(tmp_path / key, key)
    result = demo.build_demo_svm(tmp_path, mirror="http://mirror.example/debian")
    assert result["built"] is False and result["key"] == key
    assert result["paths"]["overlay"] == str(tmp_path / key / "overlay.qcow2")
    (tmp_path / key / "vmlinuz").write_bytes(b"altered")
    with pytest.raises(SvmImageError, match="kernel file"):
        demo.build_demo_svm(tmp_path, mirror="http://mirror.example/debian")


def test_a_failed_build_leaves_nothing_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_Apt", OfflineApt)
    monkeypatch.setattr(demo, "resolve_cached", lambda apt: PACKAGES)
    with pytest.raises(SvmImageError, match="mirror unreachable"):
        demo.build_demo_svm(tmp_path, mirror="http://mirror.example/debian")
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_the_manifest_path_or_an_operator_message(monkeypatch, capsys):
    monkeypatch.setattr(demo, "build_demo_svm",
                        lambda *a, **k: {"manifest_path": "/c/k/manifest.json"})
    assert demo.main(["--cache-dir", "/c"]) == 0
    assert capsys.readouterr().out == "/c/k/manifest.json\n"

    def broken(*args, **kwargs):
        raise SvmImageError("The control node lacks qemu-img.", "Install qemu-utils.")

    monkeypatch.setattr(demo, "build_demo_svm", broken)
    assert demo.main([]) == 1
    assert "lacks qemu-img. Install qemu-utils." in capsys.readouterr().err


# -- initramfs pieces ---------------------------------------------------------------------


def read_newc(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """name -> (mode, rdev, data) from a gzip'd newc archive."""
    data, pos, out = gzip.decompress(path.read_bytes()), 0, {}
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        name_end = pos + 110 + f[11]
        name = data[pos + 110: name_end - 1].decode()
        start = name_end + (-name_end % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (f[1], (f[9] << 8) | f[10], data[start:start + f[6]])
        pos = start + f[6] + (-(start + f[6]) % 4)


def test_cpio_is_reproducible_and_holds_a_console_device_without_root(tmp_path):
    entries = [("dev", 0o40755, b""), ("dev/console", 0o20600, (5 << 8) | 1),
               ("init", 0o100755, b"#!/bin/sh\necho hi\n"), ("bin/sh", 0o120777, b"busybox")]
    demo.write_cpio(entries, tmp_path / "a.gz")
    demo.write_cpio(entries, tmp_path / "b.gz")
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()
    archive = read_newc(tmp_path / "a.gz")
    assert archive["dev/console"][:2] == (0o20600, (5 << 8) | 1)
    assert archive["init"] == (0o100755, 0, b"#!/bin/sh\necho hi\n")
    assert archive["bin/sh"][2] == b"busybox"


def fake_module(root: Path, rel: str, depends: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x7fELF...\0license=GPL\0depends=" + depends.encode() + b"\0name=x\0")


def test_load_order_puts_dependencies_first(tmp_path):
    fake_module(tmp_path, "kernel/drivers/virtio/virtio.ko", "")
    fake_module(tmp_path, "kernel/drivers/virtio/virtio_ring.ko", "")
    fake_module(tmp_path, "kernel/drivers/virtio/virtio_pci.ko", "virtio_ring,virtio")
    fake_module(tmp_path, "kernel/net/core/failover.ko", "")
    fake_module(tmp_path, "kernel/drivers/net/net_failover.ko", "failover")
    fake_module(tmp_path, "kernel/drivers/net/virtio_net.ko", "virtio_ring,virtio,net_failover")
    order = [Path(p).stem for p in demo.load_order(tmp_path, ["virtio_pci", "virtio_net"])]
    assert order == ["virtio_ring", "virtio", "virtio_pci", "failover", "net_failover",
                     "virtio_net"]


def test_load_order_names_a_missing_module(tmp_path):
    fake_module(tmp_path, "kernel/drivers/block/virtio_blk.ko", "virtio")
    with pytest.raises(SvmImageError, match="virtio is missing"):
        demo.load_order(tmp_path, ["virtio_blk"])


# -- the guest scripts, run with the host's sh --------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "parsed"),
    [
        ("console=ttyS0 quiet", "ip= gw= hostname=svm-counter dhcp=1 workload=light"),
        ("console=ttyS0 svm.ip=10.0.0.5/24 svm.gw=10.0.0.1 svm.hostname=alpha svm.dhcp=0",
         "ip=10.0.0.5/24 gw=10.0.0.1 hostname=alpha dhcp=0 workload=light"),
        ("svm.ip=10.0.0.7", "ip=10.0.0.7/24 gw= hostname=svm-counter dhcp=1 workload=light"),
        ("svm.ip=10.0.0.5;reboot svm.gw=gw svm.hostname=a$b *",
         "ip= gw= hostname=svm-counter dhcp=1 workload=light"),
        ("svm.workload=dirtying", "ip= gw= hostname=svm-counter dhcp=1 workload=dirtying"),
        ("svm.workload=;reboot", "ip= gw= hostname=svm-counter dhcp=1 workload=light"),
    ],
)
def test_init_parses_the_kernel_command_line(tmp_path, cmdline, parsed):
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    proc = subprocess.run(["sh", str(FILES / "init.sh")], capture_output=True, text=True,
                          env={**os.environ, "SVM_PARSE_ONLY": str(tmp_path / "cmdline")},
                          cwd=tmp_path, timeout=10, check=True)
    assert proc.stdout.splitlines()[-1] == parsed


def test_counter_loses_no_increment_under_concurrent_requests(tmp_path):
    (tmp_path / "service").write_text("counter\n")

    def request(_):
        proc = subprocess.run(["sh", str(FILES / "counter.sh")], capture_output=True,
                              env={**os.environ, "SVM_STATE_DIR": str(tmp_path)},
                              timeout=30, check=True)
        head, body = proc.stdout.split(b"\r\n\r\n", 1)
        assert b"Content-Type: application/json" in head
        return json.loads(body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(request, range(16)))
    assert sorted(a["count"] for a in answers) == list(range(1, 17))
    assert {a["service"] for a in answers} == {"counter"}
    assert (tmp_path / "counter").read_text() == "16\n"
    assert not (tmp_path / "counter.lock").exists()


def test_the_dirtying_workload_fills_its_data_and_rewrites_it_in_place(tmp_path):
    env = {**os.environ, "SVM_LOAD_DIR": str(tmp_path), "SVM_LOAD_MIB": "1"}
    subprocess.run(["sh", str(FILES / "load.sh"), "fill"], env=env, timeout=60, check=True)
    random_bin, text = (tmp_path / "random.bin").read_bytes(), (tmp_path / "text.bin")
    assert len(random_bin) == text.stat().st_size == 2**20
    assert text.read_bytes().isascii()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random.bin", "text.bin"]
    # Four 256 KiB rewrites a second: in 1.5 s some of it changes, none of it grows.
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(["sh", str(FILES / "load.sh"), "dirty"], env=env, timeout=1.5)
    after = (tmp_path / "random.bin").read_bytes()
    assert len(after) == 2**20 and after != random_bin


def test_the_workload_script_refuses_an_unknown_command(tmp_path):
    proc = subprocess.run(["sh", str(FILES / "load.sh"), "nap"], capture_output=True, text=True,
                          env={**os.environ, "SVM_LOAD_DIR": str(tmp_path)}, timeout=10)
    assert proc.returncode == 2 and "usage" in proc.stderr
