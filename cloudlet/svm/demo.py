"""The demo service VM: a Debian kernel, a busybox initramfs and a tiny disk.

The project needs a real SVM whose in-memory state a live migration visibly
carries: a counter behind HTTP on port 80, held in guest RAM. Its disk is a
base image (pre-provisioned on every cloudlet) plus a qcow2 overlay (the only
part that moves), and a manifest with every file's sha256, so importers can
refuse an altered image (threat 4).

Everything comes from Debian packages through apt with a private state
directory, so the host's apt configuration is neither needed nor touched.
Builds are cached under a digest of the recipe: the exact .deb files (by
sha256), the guest scripts and the layout. A build happens in a scratch
directory that is renamed into place only when complete, so an interrupted
build never poisons the cache, and images are byte-for-byte reproducible.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from cloudlet.debian import host_mirror
from cloudlet.digests import sha256_file
from cloudlet.errors import SvmImageError

__all__ = [
    "KERNEL_META",
    "build_demo_svm",
    "cache_key",
    "load_order",
    "qemu_argv",
    "verify_manifest",
    "write_cpio",
]

KERNEL_META = "linux-image-cloud-amd64"  # smallest Debian kernel; boots in seconds under TCG
BUSYBOX = "busybox-static"
# Drivers the cloud kernel builds as modules; ext4 and the serial console are built in.
# virtio_balloon reports the guest's free memory (free page reporting): QEMU drops
# those pages, and a migration sends them as zero pages, not their old contents.
MODULES = ("virtio_pci", "virtio_blk", "virtio_net", "virtio_balloon")
SERVICE = {
    "id": "demo-counter",
    "label": "counter",
    "memory_mib": 384,  # room for the dirtying workload's 192 MiB (svm.workload=)
    "vcpus": 1,
    "ports": [{"guest": 80, "protocol": "tcp", "name": "http"}],
    "cmdline": "console=ttyS0 quiet",
}
GUEST_FILES = ("init.sh", "counter.sh", "udhcpc.sh", "load.sh")
# The base disk is the size of a small real service image: it holds DATA_MIB of
# data standing in for the OS and application files (pseudo-random from the
# recipe: reproducible, and no compression makes a full copy of it look small),
# which is what a migration must leave in place: only the overlay moves.
BASE_MIB = 256
DATA_MIB = 200
FORMAT = 1  # of the manifest
BUILDER = 3  # bump whenever a build step changes what it produces: it is in the cache key
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
EPOCH = 1_700_000_000  # fixed timestamps make the images reproducible
TOOLS = {"apt-get": "apt", "dpkg-deb": "dpkg", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs",
         "qemu-img": "qemu-utils"}


def _run(argv: Sequence[str], *, cwd: Path | None = None, env: dict | None = None,
         timeout: float = 900) -> str:
    """Run a host tool; failures become SvmImageError with the tool's last words."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                              env=None if env is None else {**os.environ, **env},
                              timeout=timeout, check=False)
    except FileNotFoundError:
        pkg = TOOLS.get(argv[0], argv[0])
        raise SvmImageError(f"The control node lacks {argv[0]}.",
                            f"Install the Debian package {pkg} and build again.") from None
    except subprocess.TimeoutExpired:
        raise SvmImageError(f"{argv[0]} did not finish within {timeout:.0f} s.",
                            "Check the mirror is reachable, then build again.") from None
    if proc.returncode != 0:
        detail = " / ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise SvmImageError(f"{' '.join(argv[:3])} failed (exit {proc.returncode}): {detail}",
                            "Check the mirror and free disk space, then build again.")
    return proc.stdout


def guest_scripts() -> dict[str, str]:
    """The guest's scripts as text: they are part of the recipe, hence of the cache key."""
    base = resources.files("cloudlet.svm") / "files"
    return {name: (base / name).read_text(encoding="utf-8") for name in GUEST_FILES}


class _Apt:
    """apt-get/apt-cache over a private state directory under the cache."""

    def __init__(self, root: Path, mirror: str, suite: str) -> None:
        self.root = root
        empty = root / "empty"
        for sub in ("state/lists/partial", "cache/archives/partial", "empty"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "status").touch()
        if not Path(KEYRING).exists():
            raise SvmImageError(f"{KEYRING} is missing.",
                                "Install the Debian package debian-archive-keyring.")
        (root / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
        (root / "apt.conf").write_text(
            f'Dir::State "{root}/state";\nDir::State::status "{root}/status";\n'
            f'Dir::Cache "{root}/cache";\nDir::Etc::SourceList "{root}/sources.list";\n'
            f'Dir::Etc::SourceParts "{empty}";\nDir::Etc::Parts "{empty}";\n'
            f'Dir::Etc::PreferencesParts "{empty}";\nDir::Etc::Preferences "{empty}/none";\n'
            'APT::Architecture "amd64";\nAPT::Architectures { "amd64"; };\n'
            'Acquire::Languages "none";\nAPT::Sandbox::User "root";\n'
            # Keep the index small on disk: compressed lists, no binary caches.
            'Acquire::GzipIndexes "true";\nDir::Cache::srcpkgcache "";\n'
            'Dir::Cache::pkgcache "";\n'
        )
        self.env = {"APT_CONFIG": str(root / "apt.conf"), "LC_ALL": "C"}

    def update(self, refresh: bool) -> None:
        """Fetch the index only when absent (or asked): cache hits then work offline."""
        if refresh or not any((self.root / "state/lists").glob("*Packages*")):
            _run(["apt-get", "update", "-q"], env=self.env)

    def stamp(self) -> str:
        """Digest of the signed release files: it changes exactly when the index does."""
        digest = hashlib.sha256()
        for path in sorted((self.root / "state/lists").glob("*Release")):
            digest.update(path.read_bytes())
        return digest.hexdigest()

    def show(self, *packages: str) -> list[dict[str, str]]:
        """Index fields of each package's candidate version, in the order asked."""
        text = _run(["apt-cache", "show", "--no-all-versions", *packages], env=self.env)
        found = {}
        for stanza in text.split("\n\n"):
            fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
            if "Package" in fields and "SHA256" in fields:
                found[fields["Package"]] = fields
        missing = [p for p in packages if p not in found]
        if missing:
            raise SvmImageError(f"The mirror's index has no package {', '.join(missing)}.",
                                "Check the suite and mirror, or build with --refresh.")
        return [found[p] for p in packages]

    def download(self, packages: Sequence[str], dest: Path) -> None:
        _run(["apt-get", "download", "-q", *packages], cwd=dest, env=self.env)


def resolve(apt: _Apt) -> dict[str, dict[str, str]]:
    """Exact packages for the recipe: the kernel metapackage names today's kernel."""
    meta, busybox = apt.show(KERNEL_META, BUSYBOX)
    kernel = meta.get("Depends", "").split(",")[0].split()[:1]
    if not kernel:
        raise SvmImageError(f"{KERNEL_META} names no kernel package.",
                            "Check the suite and mirror, or build with --refresh.")
    (image,) = apt.show(kernel[0])
    return {f["Package"]: {"version": f["Version"], "sha256": f["SHA256"]}
            for f in (image, busybox)}


def resolve_cached(apt: _Apt) -> dict[str, dict[str, str]]:
    """resolve(), remembered per index, so a cache hit costs no apt run at all."""
    memo, stamp = apt.root / "resolved.json", apt.stamp()
    try:
        saved = json.loads(memo.read_text(encoding="utf-8"))
        if saved["stamp"] == stamp:
            return saved["packages"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    packages = resolve(apt)
    memo.write_text(json.dumps({"stamp": stamp, "packages": packages}))
    return packages


def cache_key(packages: dict[str, dict[str, str]], scripts: dict[str, str]) -> str:
    """Digest of all that shapes the images; the mirror is left out, the debs' sha256 is in."""
    recipe = {"format": FORMAT, "builder": BUILDER, "packages": packages, "scripts": scripts,
              "modules": MODULES, "service": SERVICE, "base_mib": BASE_MIB,
              "data_mib": DATA_MIB}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def load_order(modules_dir: Path, wanted: Iterable[str]) -> list[str]:
    """Module files (relative paths) to insmod, dependencies first.

    Debian's kernel packages ship no modules.dep (depmod runs at install
    time), so the dependencies are read from each module's .modinfo strings.
    """
    files = {p.stem.replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    order: list[str] = []

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in trail or name not in files:
            raise SvmImageError(f"Kernel module {name} is missing or has a dependency loop.",
                                "Check the kernel package; the recipe may need another one.")
        info = files[name].read_bytes()
        deps = re.search(rb"\0depends=([^\0]*)\0", info)
        for dep in filter(None, (deps.group(1).decode() if deps else "").split(",")):
            visit(dep, (*trail, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return [str(files[n].relative_to(modules_dir)) for n in order]


def write_cpio(entries: Iterable[tuple[str, int, bytes | int]], out: Path) -> None:
    """Write a gzip'd newc cpio archive from (path, mode, data-or-rdev) entries.

    Python writes it, not cpio(1), so that /dev/console (which the kernel
    opens for /init before any devtmpfs exists) is made without root, and so
    that timestamps and owners are fixed for a reproducible image.
    """
    def header(ino: int, name: str, mode: int, size: int, rdev: int = 0) -> bytes:
        fields = [ino, mode, 0, 0, 1, EPOCH, size, 0, 0, rdev >> 8, rdev & 0xFF,
                  len(name) + 1, 0]
        head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        return head + b"\0" * (-len(head) % 4)

    with open(out, "wb") as raw, gzip.GzipFile("", "wb", fileobj=raw, mtime=0) as gz:
        for ino, (name, mode, payload) in enumerate(entries, start=1):
            if isinstance(payload, int):  # device node: payload is (major << 8) | minor
                gz.write(header(ino, name, mode, 0, payload))
                continue
            gz.write(header(ino, name, mode, len(payload)) + payload)
            gz.write(b"\0" * (-len(payload) % 4))
        gz.write(header(0, "TRAILER!!!", 0, 0))


def _initramfs(bb_root: Path, k_root: Path, scripts: dict[str, str], out: Path) -> list[str]:
    """The whole guest userland: busybox, our scripts and the virtio modules."""
    (mod_dir,) = (k_root / "lib/modules").iterdir()
    mods = load_order(mod_dir, MODULES)
    dirs = {"bin", "dev", "proc", "sys", "run", "data", "etc", "www/cgi-bin"}
    dirs |= {f"lib/modules/{Path(m).parent}" for m in mods}
    every_dir = sorted({"/".join(Path(d).parts[:i]) for d in dirs
                        for i in range(1, len(Path(d).parts) + 1)})
    entries: list[tuple[str, int, bytes | int]] = [(d, 0o40755, b"") for d in every_dir]
    entries += [
        ("dev/console", 0o20600, (5 << 8) | 1),
        ("bin/busybox", 0o100755, (bb_root / "bin/busybox").read_bytes()),
        ("bin/sh", 0o120777, b"busybox"),
        ("init", 0o100755, scripts["init.sh"].encode()),
        ("etc/udhcpc.script", 0o100755, scripts["udhcpc.sh"].encode()),
        ("www/cgi-bin/index.cgi", 0o100755, scripts["counter.sh"].encode()),
        ("bin/load.sh", 0o100755, scripts["load.sh"].encode()),
        ("lib/modules/load.order", 0o100644, "".join(m + "\n" for m in mods).encode()),
    ]
    entries += [(f"lib/modules/{m}", 0o100644, (mod_dir / m).read_bytes()) for m in mods]
    write_cpio(entries, out)
    return mods


def _write_data(path: Path, key: str, mib: int) -> None:
    """``mib`` MiB of pseudo-random bytes, the same for the same recipe."""
    with path.open("wb") as out:
        for block in range(mib):
            out.write(hashlib.shake_256(f"{key}/{block}".encode()).digest(1 << 20))


def _disk(work: Path, out: Path, key: str) -> None:
    """base.qcow2 (ext4 holding service.txt and data.bin) and an empty overlay.qcow2 on it."""
    content = work / "disk"
    content.mkdir()
    (content / "service.txt").write_text(SERVICE["label"] + "\n")
    _write_data(content / "data.bin", key, DATA_MIB)
    for path in (content / "service.txt", content / "data.bin", content):  # mkfs copies times
        os.utime(path, (EPOCH, EPOCH))
    fs_uuid = str(uuid.UUID(hex=hashlib.sha256(key.encode()).hexdigest()[:32]))
    raw = work / "base.raw"
    _run(["mkfs.ext4", "-q", "-F", "-L", "svm-data", "-U", fs_uuid, "-E",
          f"hash_seed={fs_uuid},root_owner=0:0", "-d", str(content), str(raw), f"{BASE_MIB}M"],
         env={"E2FSPROGS_FAKE_TIME": str(EPOCH)})
    # mkfs copies the source files' ctime, which utime cannot set: pin it here.
    for name in ("service.txt", "data.bin"):
        _run(["debugfs", "-w", "-R", f"set_inode_field /{name} ctime @{EPOCH}", str(raw)],
             env={"E2FSPROGS_FAKE_TIME": str(EPOCH)})
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / "base.qcow2")])
    # A relative backing name keeps the pair valid when the directory moves.
    _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
          "overlay.qcow2"], cwd=out)


def manifest_for(out: Path, key: str, packages: dict, modules: list[str]) -> dict:
    names = {"kernel": "vmlinuz", "initrd": "initrd.gz", "base": "base.qcow2",
             "overlay": "overlay.qcow2"}
    files = {role: {"name": name, "size": (out / name).stat().st_size,
                    "sha256": sha256_file(out / name)} for role, name in names.items()}
    return {"format": FORMAT, "recipe": key, **SERVICE, "files": files,
            "packages": packages, "modules": [Path(m).stem for m in modules]}


def verify_manifest(path: str | os.PathLike) -> dict:
    """Check every file the manifest names against its size and sha256; return the manifest.

    Importers call this on import and before every start: an image that does
    not match is refused whole, never started.
    """
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError("unknown format")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SvmImageError(f"The SVM manifest {path} is unreadable ({err}).") from None
    for role, entry in files.items():
        name = str(entry.get("name", "")) if isinstance(entry, dict) else ""
        if not name or Path(name).name != name or name in (".", ".."):
            raise SvmImageError(f"The SVM manifest {path} names an unsafe file {name!r}.",
                                "Do not use this image; import it again from the control node.")
        check_image_file(role, path.parent / name, entry)
    return manifest


def check_image_file(role: str, target: Path, entry: dict, consequence: str = "") -> None:
    """Refuse one image file whose size or sha256 differs from its manifest entry.

    The size is compared first, so a truncated copy is named without hashing it.
    """
    if not target.is_file():
        raise SvmImageError(f"The SVM's {role} file {target} is missing.{consequence}")
    size = target.stat().st_size
    if size != entry.get("size"):
        found = f"{size} bytes, expected {entry.get('size')}"
    elif (digest := sha256_file(target)) != entry.get("sha256"):
        found = f"sha256 {digest[:16]}…, expected {str(entry.get('sha256'))[:16]}…"
    else:
        return
    raise SvmImageError(f"The SVM's {role} file {target} does not match its manifest "
                        f"({found}): it was altered or damaged.{consequence}")


def _result(final: Path, manifest: dict, built: bool, seconds: float) -> dict:
    """What callers get: the manifest, absolute paths by role, and how it was obtained."""
    return {
        "key": manifest["recipe"],
        "dir": str(final),
        "manifest_path": str(final / "manifest.json"),
        "manifest": manifest,
        "paths": {role: str(final / e["name"]) for role, e in manifest["files"].items()},
        "built": built,
        "seconds": round(seconds, 2),
    }


def _clear_stale_builds(cache: Path) -> None:
    """Remove scratch directories of builds whose process is gone (killed mid-build)."""
    for scratch in cache.glob(".build-*-*"):
        pid = scratch.name.rsplit("-", 1)[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(scratch, ignore_errors=True)


def build_demo_svm(cache_dir: str | os.PathLike, *, mirror: str | None = None,
                   suite: str = "bookworm", refresh: bool = False) -> dict:
    """Return the demo SVM for today's recipe, building it only on a cache miss.

    ``refresh`` fetches the package index again (to pick up new kernels);
    without it, a cache hit needs no network at all.
    """
    start = time.monotonic()
    cache = Path(cache_dir)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        _clear_stale_builds(cache)
    except OSError as err:
        raise SvmImageError(f"Cannot use the SVM cache {cache}: {err.strerror}.",
                            "Run as root, or pass --cache-dir with a writable directory.") from None
    mirror = (mirror or host_mirror()).rstrip("/")
    apt_root = cache / "apt" / hashlib.sha256(f"{mirror} {suite}".encode()).hexdigest()[:12]
    apt = _Apt(apt_root, mirror, suite)
    apt.update(refresh)
    packages = resolve_cached(apt)
    scripts = guest_scripts()
    key = cache_key(packages, scripts)
    final = cache / key
    if (final / "manifest.json").exists():
        manifest = verify_manifest(final / "manifest.json")
        return _result(final, manifest, False, time.monotonic() - start)

    scratch = cache / f".build-{key}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    work, out = scratch / "work", scratch / "out"
    for d in (work / "debs", work / "kernel", work / "busybox", out):
        d.mkdir(parents=True)
    try:
        apt.download(list(packages), work / "debs")
        for deb in (work / "debs").glob("*.deb"):
            name = deb.name.split("_", 1)[0]
            if sha256_file(deb) != packages[name]["sha256"]:
                raise SvmImageError(f"The downloaded {deb.name} does not match the index.",
                                    "Build again with --refresh; if it repeats, the mirror "
                                    "is serving altered packages.")
            dest = work / ("busybox" if name == BUSYBOX else "kernel")
            _run(["dpkg-deb", "-x", str(deb), str(dest)])
        kernels = list((work / "kernel/boot").glob("vmlinuz-*"))
        if len(kernels) != 1:
            raise SvmImageError(f"{list(packages)[0]} holds {len(kernels)} kernels, not one.",
                                "The recipe needs another kernel package.")
        shutil.copyfile(kernels[0], out / "vmlinuz")
        modules = _initramfs(work / "busybox", work / "kernel", scripts, out / "initrd.gz")
        _disk(work, out, key)
        manifest = manifest_for(out, key, packages, modules)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        if final.exists() and not (final / "manifest.json").exists():
            shutil.rmtree(final)  # damaged by hand: a manifest is what makes an entry whole
        try:
            os.rename(out, final)
        except OSError:
            if not (final / "manifest.json").exists():  # a concurrent build won: use it
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    manifest = verify_manifest(final / "manifest.json")
    return _result(final, manifest, True, time.monotonic() - start)


def qemu_argv(result: dict, host_port: int, *, extra_cmdline: str = "") -> list[str]:
    """QEMU (TCG) command line that boots a built SVM with port 80 on 127.0.0.1:host_port.

    For tests and benchmarks: the overlay is opened with snapshot=on, so the
    cached image (and its manifest digest) is never changed by a boot.
    """
    manifest, paths = result["manifest"], result["paths"]
    cmdline = f"{manifest['cmdline']} {extra_cmdline}".strip()
    return ["qemu-system-x86_64", "-accel", "tcg", "-m", str(manifest["memory_mib"]),
            "-smp", str(manifest["vcpus"]), "-nographic", "-no-reboot",
            "-kernel", paths["kernel"], "-initrd", paths["initrd"], "-append", cmdline,
            "-drive", f"file={paths['overlay']},if=virtio,format=qcow2,snapshot=on",
            "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{host_port}-:80",
            # No iPXE option ROM: the SVM boots its kernel directly, a second sooner.
            "-device", "virtio-net-pci,netdev=n0,romfile=",
            "-device", "virtio-balloon-pci,free-page-reporting=on"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build (or reuse) the demo service VM.")
    parser.add_argument("--cache-dir", default="/var/cache/cloudlet-svm")
    parser.add_argument("--mirror", default=None, help="Debian mirror (default: the host's)")
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--refresh", action="store_true", help="fetch the package index again")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    args = parser.parse_args(argv)
    try:
        result = build_demo_svm(args.cache_dir, mirror=args.mirror, suite=args.suite,
                                refresh=args.refresh)
    except SvmImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1) if args.json else result["manifest_path"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
