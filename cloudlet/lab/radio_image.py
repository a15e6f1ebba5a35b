"""The radio guest's kernel and base initramfs, built once and cached.

The host has no Wi-Fi and no mac80211_hwsim, so the radio check boots Debian's
stock kernel under QEMU TCG (DESIGN.md §6). The kernel and busybox packages are
downloaded with ``apt-get download`` into the cache and unpacked with
``dpkg-deb -x``: nothing is installed on the host. hostapd, wpa_supplicant and
their CLIs come from the host, with the libraries ``ldd`` names.

The base is keyed by a digest of everything that shapes it (the two package
files, the module list, the host binaries and libraries), so a new kernel or a
hostapd upgrade is a miss and a rebuild, and an unchanged recipe costs only the
digest. Each run adds a small overlay archive of its own (``newc_archive``);
the kernel unpacks concatenated archives in order.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudlet.errors import RadioError

__all__ = [
    "BINARIES",
    "CACHE_DIR",
    "MODULES",
    "BaseImage",
    "build_base",
    "ensure_package",
    "kernel_package",
    "newc_archive",
]

# Not under /var/cache/cloudlet-lab: the lab prunes every entry there but its
# current base image.
CACHE_DIR = os.environ.get("CLOUDLET_RADIO_CACHE", "/var/cache/cloudlet-radio")
# Loaded in this order (DESIGN.md §6); mac80211_hwsim is loaded last, with radios=N.
MODULES = (
    "virtio_ring", "virtio", "rfkill", "cfg80211", "libarc4", "mac80211", "ctr", "ccm",
    "cmac", "gf128mul", "ghash-generic", "gcm", "ecb", "mac80211_hwsim",
)
BINARIES = ("hostapd", "hostapd_cli", "wpa_supplicant", "wpa_cli")
BUSYBOX_PACKAGE = "busybox-static"
# The generic flavour: the cloud flavour has no wireless stack.
KERNEL_META_PACKAGE = "linux-image-amd64"
_KERNEL_RE = re.compile(r"^linux-image-(\d[\w.+~-]*-amd64)$")

Runner = Callable[..., subprocess.CompletedProcess]


def _run(argv: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False,
                          timeout=kwargs.pop("timeout", 600), **kwargs)


# --- prerequisites: packages in the cache --------------------------------------


def cached_package(name: str, cache_dir: str | os.PathLike) -> Path | None:
    """The newest ``name_*.deb`` already in the cache, if any."""
    found = sorted(Path(cache_dir).glob(f"{name}_*.deb"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def kernel_package(cache_dir: str | os.PathLike, runner: Runner = _run) -> str:
    """The stock kernel package to boot: the one linux-image-amd64 depends on.

    Without apt lists (no ``apt-get update`` yet) the newest kernel already in
    the cache will do, so a warm cache never needs apt.
    """
    proc = runner(["apt-cache", "depends", "--no-recommends", "--no-suggests",
                   KERNEL_META_PACKAGE])
    for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
        words = line.split()
        if len(words) == 2 and words[0] == "Depends:" and _KERNEL_RE.match(words[1]):
            return words[1]
    cached = sorted(Path(cache_dir).glob("linux-image-*-amd64_*.deb"),
                    key=lambda p: p.stat().st_mtime)
    if cached:
        return cached[-1].name.split("_", 1)[0]
    raise RadioError(
        f"apt does not know which kernel {KERNEL_META_PACKAGE} depends on, and none is cached.",
        "Run `apt-get update` on the control node, then run the radio check again.",
    )


def ensure_package(name: str, cache_dir: str | os.PathLike, runner: Runner = _run) -> Path:
    """The package's .deb in the cache, downloaded (never installed) on a miss."""
    found = cached_package(name, cache_dir)
    if found is not None:
        return found
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # apt's _apt user cannot write to a root-only cache directory.
    proc = runner(["apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", name],
                  cwd=str(cache_dir))
    found = cached_package(name, cache_dir)
    if proc.returncode != 0 or found is None:
        detail = " / ".join((proc.stderr or proc.stdout or "").strip().splitlines()[-3:])
        raise RadioError(
            f"apt-get download {name} failed (exit {proc.returncode}): {detail}",
            f"Run `apt-get update` and check that the package {name} exists for this "
            "release (`apt-cache policy {name}`).".replace("{name}", name),
        )
    return found


# --- the initramfs format ------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One initramfs member: a directory, a regular file, or a character device."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def newc_archive(entries: Iterable[Entry]) -> bytes:
    """A cpio archive in the "newc" format the kernel unpacks as an initramfs.

    Written here rather than with cpio(1) so that device nodes and modes need no
    root-owned staging tree, and the format is unit-tested.
    """
    out = bytearray()

    def member(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        out.extend(b"070701" + b"".join(b"%08X" % f for f in fields) + raw)
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    ino = 0
    for ino, entry in enumerate(entries, start=1):
        name = entry.path.lstrip("/")
        if not name or ".." in name.split("/"):
            raise RadioError(f"The guest path {entry.path!r} is not a clean absolute path.",
                             "Name guest files by absolute paths such as /etc/radio/eap_user.")
        member(ino, name, entry.mode, entry.data, entry.rdev)
    member(ino + 1, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def tree_entries(files: dict[str, tuple[int, bytes]]) -> list[Entry]:
    """Entries for ``path -> (permission bits, data)``, parents first."""
    dirs: set[str] = set()
    for path in files:
        parts = path.strip("/").split("/")[:-1]
        dirs.update("/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    entries = [Entry(d, stat.S_IFDIR | 0o755) for d in sorted(dirs)]
    entries += [Entry(p, stat.S_IFREG | perm, data) for p, (perm, data) in sorted(files.items())]
    return entries


# --- the base image ------------------------------------------------------------


@dataclass(frozen=True)
class BaseImage:
    kernel: Path
    initramfs: Path
    modules: tuple[str, ...]
    key: str
    built: bool
    seconds: float


def host_files(binaries: Sequence[str] = BINARIES, runner: Runner = _run) -> dict[str, str]:
    """Guest path -> host path for each binary and every library ``ldd`` names."""
    found: dict[str, str] = {}
    for name in binaries:
        path = shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if path is None:
            raise RadioError(f"The control node has no {name}.",
                             "Install hostapd and wpasupplicant (make setup does this).")
        found[f"/usr/sbin/{name}"] = path
        proc = runner(["ldd", path])
        if proc.returncode != 0:
            raise RadioError(f"ldd {path} failed: {proc.stderr.strip()}")
        for lib in parse_ldd(proc.stdout):
            found[lib] = lib
    return found


def parse_ldd(text: str) -> list[str]:
    """Absolute library paths from ``ldd`` output (the vDSO has none)."""
    libs = []
    for line in text.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libs.append(match.group(1))
    return libs


def base_key(kernel_deb: Path, busybox_deb: Path, host: dict[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"kernel": kernel_deb.name, "busybox": busybox_deb.name,
                              "modules": MODULES, "format": 1}).encode())
    for guest, real in sorted(host.items()):
        digest.update(guest.encode() + b"\0")
        digest.update(hashlib.sha256(Path(real).read_bytes()).digest())
    return digest.hexdigest()[:16]


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.name.endswith(".zst"):
        raise RadioError(f"{path.name} is zstd-compressed, which this harness cannot unpack.",
                         "Use a kernel whose modules are uncompressed or xz-compressed.")
    return data


def find_modules(module_root: Path, names: Sequence[str] = MODULES) -> list[tuple[str, Path]]:
    """(name, file) in load order, skipping modules built into this kernel."""
    builtin_file = module_root / "modules.builtin"
    builtin = builtin_file.read_text().split() if builtin_file.exists() else []
    builtin_names = {Path(b).name.split(".ko")[0].replace("-", "_") for b in builtin}
    index: dict[str, Path] = {}
    for path in (module_root / "kernel").rglob("*.ko*"):
        index[path.name.split(".ko")[0].replace("-", "_")] = path
    found = []
    for name in names:
        key = name.replace("-", "_")
        if key in builtin_names:
            continue
        if key not in index:
            raise RadioError(f"The kernel in {module_root} has no module {name}.",
                             "Use Debian's generic amd64 kernel, not the cloud flavour.")
        found.append((name, index[key]))
    return found


def build_base(cache_dir: str | os.PathLike = CACHE_DIR, runner: Runner = _run) -> BaseImage:
    """Return the cached kernel and base initramfs, building them on a miss."""
    start = time.monotonic()
    cache = Path(cache_dir)
    kernel_deb = ensure_package(kernel_package(cache, runner), cache, runner)
    busybox_deb = ensure_package(BUSYBOX_PACKAGE, cache, runner)
    host = host_files(runner=runner)
    key = base_key(kernel_deb, busybox_deb, host)
    final = cache / f"base-{key}"
    if (final / "complete").exists():
        modules = tuple(json.loads((final / "modules.json").read_text()))
        return BaseImage(final / "vmlinuz", final / "base.cpio.gz", modules, key, False,
                         round(time.monotonic() - start, 1))

    scratch = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache))
    try:
        for deb, into in ((kernel_deb, "kernel"), (busybox_deb, "busybox")):
            proc = runner(["dpkg-deb", "-x", str(deb), str(scratch / into)])
            if proc.returncode != 0:
                raise RadioError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}",
                                 f"Delete {deb} so that it is downloaded again.")
        version = _KERNEL_RE.match(kernel_deb.name.split("_", 1)[0]).group(1)
        module_root = next((p for p in (scratch / "kernel/lib/modules" / version,
                                        scratch / "kernel/usr/lib/modules" / version)
                            if p.is_dir()), None)
        vmlinuz = scratch / "kernel/boot" / f"vmlinuz-{version}"
        if module_root is None or not vmlinuz.exists():
            raise RadioError(f"{kernel_deb.name} has no kernel or modules for {version}.",
                             f"Delete {kernel_deb} so that it is downloaded again.")
        modules = find_modules(module_root)
        files: dict[str, tuple[int, bytes]] = {
            "/bin/busybox": (0o755, (scratch / "busybox/bin/busybox").read_bytes()),
        }
        for name, path in modules:
            files[f"/lib/modules/{name}.ko"] = (0o644, _module_bytes(path))
        for guest, real in host.items():
            files[guest] = (0o755, Path(real).read_bytes())
        entries = tree_entries(files)
        entries += [Entry(d, stat.S_IFDIR | 0o755) for d in ("/dev", "/proc", "/sys", "/run",
                                                               "/tmp", "/sbin", "/usr/bin")]
        # The kernel opens /dev/console before /init runs: it must be in the archive.
        entries.append(Entry("/dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
        out = scratch / "out"
        out.mkdir()
        with gzip.open(out / "base.cpio.gz", "wb", compresslevel=6) as fh:
            fh.write(newc_archive(entries))
        shutil.copy(vmlinuz, out / "vmlinuz")
        (out / "modules.json").write_text(json.dumps([n for n, _ in modules]))
        (out / "recipe.json").write_text(json.dumps(
            {"kernel": kernel_deb.name, "busybox": busybox_deb.name, "host": host}, indent=1))
        (out / "complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        shutil.rmtree(final, ignore_errors=True)
        os.rename(out, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BaseImage(final / "vmlinuz", final / "base.cpio.gz",
                     tuple(n for n, _ in modules), key, True, round(time.monotonic() - start, 1))
