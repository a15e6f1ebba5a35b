"""Step 3: send the SVM's metadata, then live-migrate it with libvirt over TLS.

The order keeps every failure harmless:

1. the target's Manager takes the metadata as *pending*, after checking it
   holds the same kernel, initrd and base image (the sha256 of our manifest)
   and has the memory; a refusal ends the ceremony before anything moves;
2. the SVM's empty disk overlay is made on the target, over the same
   libvirt TLS connection the migration uses (libvirt cannot pre-create an
   overlay for an incremental storage copy itself);
3. libvirt migrates peer-to-peer, live, over TLS (``migrate_tls_force`` is
   set on every cloudlet, so plain TCP is refused anyway), copying only the
   overlay (``VIR_MIGRATE_NON_SHARED_INC``): the base stays where it is. The
   domain is made persistent on the target and undefined here only once it
   runs there (libvirt's own commit point);
4. the target's Manager commits the record.

A failure or an interrupt before libvirt's commit point aborts the job: the
SVM keeps running here (resumed if libvirt had paused it), the overlay made
on the target and its pending record are removed, and no device credential
has been asked for yet. Progress (memory and disk left, rate, ETA) goes to a
JSON file the playbook can read while the module runs.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudlet import formats
from cloudlet.errors import MigrationError
from cloudlet.migration.peer import PeerClient
from cloudlet.svm.domain import IMMUTABLE_ROLES, load_manifest

__all__ = [
    "Settings", "check_health", "job_request", "metadata", "migrate_svm", "summarise",
    "svm_address",
]

MIB = 1024 * 1024
# Compressions QEMU runs on its parallel (multifd) channels, and the libvirt that
# first asks QEMU for them (9.4; Debian 12 has 9.0, bookworm-backports 11.3).
MULTIFD_COMPRESSIONS = ("zstd",)
MULTIFD_LIBVIRT = 9_004_000


@dataclass(frozen=True)
class Settings:
    """How the migration uses the link; 0 and "" mean libvirt's default."""

    bandwidth_mib: int = 0  # MiB/s cap on QEMU's stream
    compression: str = "zstd"  # "zstd" (multifd), "xbzrle", or "" (none)
    connections: int = 2  # parallel connections of a multifd compression
    max_downtime_ms: int = 50  # the pause QEMU aims for at first
    downtime_ceiling_ms: int = 2000  # how far that is raised while the copy does not converge
    timeout: float = 900.0
    stall: float = 30.0  # seconds without a byte moved before the job is aborted


def metadata(name: str, manifest_path: Path, fqdn: str) -> dict:
    """What the target's repository is told: id, name, memory, and the immutable images."""
    manifest = load_manifest(manifest_path)
    return {
        "service_id": name,
        "fqdn": fqdn,
        "memory_mib": manifest["memory_mib"],
        "ports": [n for p in manifest.get("ports", []) if (n := _port(p))],
        "images": [{"name": role, "sha256": manifest["files"][role]["sha256"]}
                   for role in IMMUTABLE_ROLES],
    }


def _port(entry: Any) -> int | None:
    """A manifest's port: a number, or the demo's {"guest": 80, "protocol": "tcp", ...}."""
    value = entry.get("guest") if isinstance(entry, dict) else entry
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def svm_address(dom: Any) -> str | None:
    """The SVM's IPv4 address, from its kernel command line (``svm.ip=``), if it has one."""
    cmdline = ET.fromstring(dom.XMLDesc(0)).findtext("./os/cmdline") or ""
    for word in cmdline.split():
        if word.startswith("svm.ip="):
            return word.removeprefix("svm.ip=").partition("/")[0]
    return None


def check_health(client: PeerClient, name: str, address: str, ports: list[int],
                 wait: float) -> dict:
    """Ask the target, for up to ``wait`` seconds, whether the SVM takes connections on
    every one of its ports; the last answer, with ``healthy`` and ``waited_s``."""
    started = time.monotonic()
    body = {"address": address, "ports": ports}
    while True:
        answer = client.request("POST", f"/peer/svms/{name}/health", body)
        waited = time.monotonic() - started
        if not answer["silent"] or waited >= wait:
            return {**answer, "healthy": not answer["silent"], "waited_s": round(waited, 1)}
        time.sleep(1.0)


def _disk(dom: Any) -> tuple[str, str, str]:
    """(target dev, overlay path, base path) of the SVM's one disk."""
    root = ET.fromstring(dom.XMLDesc(0))
    disk = root.find("./devices/disk[@device='disk']")
    source = disk.find("source") if disk is not None else None
    base = disk.find("backingStore/source") if disk is not None else None
    if source is None or base is None:
        raise MigrationError(f"SVM {dom.name()} has no overlay on a base image to migrate.")
    return disk.find("target").get("dev"), source.get("file"), base.get("file")


def summarise(stats: dict, final: bool = True) -> dict:
    """The figures an admin watches, from libvirt's job statistics (``final``: of the
    completed job, whose downtime is the real one, not the expected one)."""
    mem_total, mem_left = stats.get("memory_total", 0), stats.get("memory_remaining", 0)
    disk_total, disk_left = stats.get("disk_total", 0), stats.get("disk_remaining", 0)
    rate = stats.get("memory_bps", 0) or 0
    left = mem_left + disk_left
    return {
        "elapsed_s": round(stats.get("time_elapsed", 0) / 1000, 1),
        "memory_left_mib": round(mem_left / MIB, 1),
        "memory_total_mib": round(mem_total / MIB, 1),
        "disk_left_mib": round(disk_left / MIB, 1),
        "disk_total_mib": round(disk_total / MIB, 1),
        "rate_mib_s": round(rate / MIB, 2),
        "eta_s": round(left / rate, 1) if rate else None,
        "downtime_ms": stats.get("downtime") if final else None,
        "bytes": stats.get("memory_processed", 0) + stats.get("disk_processed", 0),
    }


class _Target:
    """What we changed on the target, so a failure can take it back."""

    def __init__(self, client: PeerClient, dconn: Any, name: str) -> None:
        self.client = client
        self.dconn = dconn
        self.name = name
        self.volume: Any = None
        self.pool: Any = None
        self.directory = ""
        self.recorded = False

    def record(self, meta: dict) -> None:
        self.client.request("POST", "/peer/svms", meta)
        self.recorded = True

    def make_overlay(self, overlay: str, base: str, capacity: int) -> None:
        import libvirt

        directory, volume = overlay.rsplit("/", 1)
        self.directory = directory
        try:
            self.pool = self.dconn.storagePoolLookupByTargetPath(directory)
        except libvirt.libvirtError:
            xml = (f"<pool type='dir'><name>cloudlet-migrate-{self.name}</name>"
                   f"<target><path>{directory}</path></target></pool>")
            try:
                self.pool = self.dconn.storagePoolCreateXML(xml, 0)
            except libvirt.libvirtError as exc:
                raise MigrationError(
                    f"The target cannot hold the SVM's disk in {directory}: "
                    f"{exc.get_error_message()}",
                    "Its SVM store is missing: its admin should run setup.yml. "
                    "Nothing was moved.",
                ) from None
        self.pool.refresh(0)
        try:
            stale = self.pool.storageVolLookupByName(volume)
        except libvirt.libvirtError:
            stale = None
        if stale is not None:
            # Left by an earlier run that failed, or by the SVM's stay there before
            # it moved on: the domain is not defined there (checked), so it is unused.
            stale.delete(0)
        xml = (f"<volume><name>{volume}</name><capacity>{capacity}</capacity>"
               "<target><format type='qcow2'/><permissions><mode>0640</mode></permissions>"
               f"</target><backingStore><path>{base}</path><format type='qcow2'/>"
               "</backingStore></volume>")
        try:
            self.volume = self.pool.createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise MigrationError(
                f"The target could not create the SVM's overlay on {base}: "
                f"{exc.get_error_message()}",
                "Its base image is missing: its admin should run setup.yml. Nothing was moved.",
            ) from None

    def undo(self, reconnect: Callable[[], Any]) -> list[str]:
        """Take back what was made there; what could not be is returned, not raised.

        The connection the migration used may be gone (closed by the abort, or the
        target's libvirtd restarted): one fresh connection is tried for the overlay.
        """
        left = []
        if self.volume is not None:
            try:
                try:
                    self.volume.delete(0)
                except Exception:  # noqa: BLE001 - the old connection is dead: try a new one
                    self.dconn = reconnect()
                    pool = self.dconn.storagePoolLookupByTargetPath(self.directory)
                    pool.storageVolLookupByName(self.volume.name()).delete(0)
            except Exception as exc:  # noqa: BLE001 - a dead link: say what is left
                reason = exc.message if isinstance(exc, MigrationError) else exc
                left.append(f"the SVM's empty overlay ({reason}; the next migration there "
                            "replaces it)")
        if self.recorded:
            try:
                self.client.request("DELETE", f"/peer/svms/{self.name}")
            except MigrationError as exc:
                left.append(f"the pending record in the target's repository ({exc.message})")
        self.close_pool()
        return left

    def close_pool(self) -> None:
        # A transient pool: if destroying it fails (a dead link), it goes with the
        # target's libvirtd's next restart, and a later migration reuses it meanwhile.
        with contextlib.suppress(Exception):
            if self.pool is not None and not self.pool.isPersistent():
                self.pool.destroy()


def _write_progress(path: Path | None, data: dict) -> None:
    if path is not None:
        formats.write_secret_file(path, json.dumps(data).encode(), mode=0o644)


def _cut(dest_host: str) -> None:
    """Close every socket to the target (``ss -K``).

    With the link gone, QEMU's writes to it block until TCP gives up, many
    minutes later, and libvirt cannot even abort the job meanwhile (it waits
    for QEMU's monitor). Closing the sockets makes the writes fail at once:
    the job ends, and the target's libvirtd drops its half of the domain when
    its connection from us is gone.
    """
    subprocess.run(["ss", "-K", "dst", dest_host], capture_output=True, check=False)


class _Downtime:
    """QEMU's downtime limit, raised while the copy does not converge.

    QEMU pauses the SVM once what is left to send fits in the limit at the rate it
    measures. An SVM that writes memory about as fast as the link carries it never
    gets there: every pass starts with about as much left as the one before. So
    when a pass (from the third on: the second starts with what the SVM wrote
    during the bulk copy) starts with more than SHRINK of what the one before
    started with, and the limit was not raised in the last STEP seconds, the
    limit doubles, up to the ceiling. Passes that shrink leave it alone, however
    long they take.
    """

    STEP = 2.0
    SHRINK = 0.8

    def __init__(self, dom: Any, settings: Settings) -> None:
        self.dom = dom
        self.limit = settings.max_downtime_ms
        self.ceiling = max(settings.downtime_ceiling_ms, self.limit)
        self.passes: tuple[int, int] = (0, 0)  # (latest pass seen, what was left at its start)
        self.raised = float("-inf")

    def check(self, stats: dict, now: float) -> None:
        number, left = stats.get("memory_iteration", 0), stats.get("memory_remaining", 0)
        previous, previous_left = self.passes
        if number == previous:
            return
        self.passes = (number, left)
        if (not self.limit or self.limit >= self.ceiling or previous < 2
                or left < self.SHRINK * previous_left or now - self.raised < self.STEP):
            return
        self.limit = min(self.ceiling, 2 * self.limit)
        self.dom.migrateSetMaxDowntime(self.limit, 0)
        self.raised = now


def _run_job(dom: Any, dest_uri: str, dest_host: str, params: dict, flags: int,
             settings: Settings, progress_file: Path | None,
             say: Callable[[dict], None]) -> dict:
    """migrateToURI3 in a thread, with progress, a timeout and a stall limit; the last
    figures seen."""
    import libvirt

    outcome: dict[str, Any] = {}

    def job() -> None:
        try:
            dom.migrateToURI3(dest_uri, params, flags)
        except libvirt.libvirtError as exc:
            outcome["error"] = exc.get_error_message()

    def abort(reason: str) -> str:
        _cut(dest_host)
        with contextlib.suppress(libvirt.libvirtError):
            dom.abortJob()
        return reason

    worker = threading.Thread(target=job, name="migrate", daemon=True)
    downtime = _Downtime(dom, settings)
    start = moved_at = time.monotonic()
    worker.start()
    last: dict = {}
    why = None
    try:
        while worker.is_alive():
            worker.join(0.5)
            try:
                stats = dom.jobStats(0)
            except libvirt.libvirtError:
                stats = {}  # QEMU is busy (a blocked link): the stall limit decides
            now = time.monotonic()
            if stats.get("type", 0) != 0:
                figures = summarise(stats, final=False)
                if figures["bytes"] != last.get("bytes"):
                    moved_at = now
                with contextlib.suppress(libvirt.libvirtError):  # the job may end meanwhile
                    downtime.check(stats, now)
                last = dict(figures, max_downtime_ms=downtime.limit)
                _write_progress(progress_file, {"phase": "migrating", **last})
                say(last)
            if why is not None:
                continue
            if now - start > settings.timeout:
                why = abort(f"it took longer than {settings.timeout:.0f} s")
            elif now - moved_at > settings.stall:
                why = abort(f"nothing crossed the link for {settings.stall:.0f} s (the link was "
                            "cut, or the target's libvirtd stopped)")
    except KeyboardInterrupt:
        why = abort("the ceremony was interrupted")
        worker.join()
    if "error" in outcome or why:
        raise MigrationError(f"The live migration failed: {why or outcome['error']}.")
    return last


def _open_within(uri: str, seconds: float) -> Any:
    """A libvirt connection, or an error after ``seconds`` (a dead link would make the
    TCP connect wait minutes)."""
    import libvirt

    box: dict[str, Any] = {}

    def dial() -> None:
        try:
            box["conn"] = libvirt.open(uri)
        except libvirt.libvirtError as exc:
            box["error"] = exc

    thread = threading.Thread(target=dial, name="reconnect", daemon=True)
    thread.start()
    thread.join(seconds)
    if "conn" not in box:
        raise MigrationError(f"no connection to {uri} within {seconds:.0f} s"
                             if thread.is_alive() else str(box["error"]))
    return box["conn"]


def _keep_running_here(dom: Any) -> str:
    """After a failure: the SVM runs here (resumed if libvirt left it paused)."""
    import libvirt

    try:
        state = dom.state()[0]
        if state == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
            return "resumed here"
        return "running here" if state == libvirt.VIR_DOMAIN_RUNNING else f"state {state} here"
    except libvirt.libvirtError as exc:
        return f"unknown here ({exc.get_error_message()})"


def job_request(lv: Any, settings: Settings, dest_host: str) -> tuple[int, dict]:
    """The flags and parameters of libvirt's migration job (``lv``: the libvirt module)."""
    flags = (lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER | lv.VIR_MIGRATE_PERSIST_DEST
             | lv.VIR_MIGRATE_UNDEFINE_SOURCE | lv.VIR_MIGRATE_NON_SHARED_INC
             | lv.VIR_MIGRATE_TLS)
    params: dict[str, Any] = {lv.VIR_MIGRATE_PARAM_URI: f"tcp://{dest_host}"}
    if settings.compression:
        flags |= lv.VIR_MIGRATE_COMPRESSED
        params[lv.VIR_MIGRATE_PARAM_COMPRESSION] = settings.compression
    if settings.compression in MULTIFD_COMPRESSIONS:
        flags |= lv.VIR_MIGRATE_PARALLEL
        params[lv.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = settings.connections
    if settings.bandwidth_mib:
        params[lv.VIR_MIGRATE_PARAM_BANDWIDTH] = settings.bandwidth_mib
    return flags, params


def _check_multifd(compression: str, conns: dict[str, Any]) -> None:
    """MigrationError unless both libvirtds can ask QEMU for ``compression``."""
    for where, conn in conns.items():
        version = conn.getLibVersion()
        if version < MULTIFD_LIBVIRT:
            raise MigrationError(
                f"The libvirt {where} ({version // 1_000_000}.{version // 1000 % 1000}) cannot "
                f"ask QEMU for {compression} compression; that needs libvirt 9.4 or newer.",
                "Install libvirt from bookworm-backports (or Debian 13) on both cloudlets, "
                "or move without it (migrate_compression=''). Nothing was moved.",
            )


def migrate_svm(conn: Any, dconn: Any, client: PeerClient, name: str, meta: dict,
                dest_host: str, settings: Settings, progress_file: Path | None = None,
                say: Callable[[dict], None] = lambda _figures: None) -> dict:
    """Move running SVM ``name`` from ``conn`` to the target; its figures, or MigrationError."""
    import libvirt

    dom = conn.lookupByName(name)
    try:
        dconn.lookupByName(name)
    except libvirt.libvirtError:
        pass
    else:
        raise MigrationError(
            f"The target already has a domain named {name} while it runs here.",
            "Its admin should remove that domain (virsh undefine). Nothing was moved.",
        )
    dev, overlay, base = _disk(dom)
    capacity = dom.blockInfo(dev)[0]
    target = _Target(client, dconn, name)
    flags, params = job_request(libvirt, settings, dest_host)
    if settings.compression in MULTIFD_COMPRESSIONS:
        _check_multifd(settings.compression, {"here": conn, "on the target": dconn})
    dest_uri = f"qemu+tls://{dest_host}/system"
    started = time.monotonic()
    try:
        target.record(meta)
        target.make_overlay(overlay, base, capacity)
        if settings.max_downtime_ms:
            dom.migrateSetMaxDowntime(settings.max_downtime_ms, 0)
        _write_progress(progress_file, {"phase": "starting"})
        last = _run_job(dom, dest_uri, dest_host, params, flags, settings, progress_file, say)
    except (MigrationError, libvirt.libvirtError, KeyboardInterrupt) as exc:
        here = _keep_running_here(dom)
        left = target.undo(lambda: _open_within(dest_uri, 15.0))
        _write_progress(progress_file, {"phase": "failed"})
        message = exc.message if isinstance(exc, MigrationError) else (
            "Interrupted" if isinstance(exc, KeyboardInterrupt) else
            f"libvirt: {exc.get_error_message()}")
        hint = f"The SVM is {here}."
        hint += (f" Could not remove from the target: {'; '.join(left)}." if left
                 else " Nothing of it was kept on the target.")
        if isinstance(exc, MigrationError) and exc.hint:
            hint += " " + exc.hint
        raise MigrationError(message, hint) from None
    total = time.monotonic() - started
    target.close_pool()
    figures = dict(last)
    try:
        done = dconn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        figures.update({k: v for k, v in summarise(done).items() if v})
    except libvirt.libvirtError:
        pass
    Path(overlay).unlink(missing_ok=True)  # the SVM's disk is the target's now; ours is stale
    try:
        client.request("POST", f"/peer/svms/{name}/commit")
    except MigrationError as exc:
        raise MigrationError(
            f"{name} moved and runs on the target, but its repository was not told: "
            f"{exc.message}",
            "Run migrate.yml again once the target is in reach: it finishes the handoff "
            "(the repository record, the devices' credentials) and moves nothing.",
        ) from None
    figures["total_s"] = round(total, 2)
    _write_progress(progress_file, {"phase": "done", **figures})
    return figures

