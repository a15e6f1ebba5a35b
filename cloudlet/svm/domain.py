"""Service VMs as libvirt domains: XML from a manifest, image checks, lifecycle.

An SVM is the set of files a manifest names (kernel, initrd, base image and
qcow2 overlay) plus how this cloudlet runs it (domain type, network, address).
The domain type is always a parameter: ``kvm`` on real hardware, ``qemu``
(TCG) in the lab, whose KVM hangs stock guest kernels.

Threat 4 (altered software): every file is checked against the manifest's
sha256 before a domain is first defined, and the immutable ones (kernel,
initrd, base) again before every start. The overlay is the SVM's writable
disk: once libvirt holds the definition the guest writes to it, so it is
checked only when the SVM is defined (imported), never afterwards.

``ensure`` reads the current state, works out the actions, and performs them
only outside check mode, so the Ansible module stays a thin shell. It takes a
libvirt connection (or anything shaped like one), so its logic is tested
without libvirt.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudlet.errors import CloudletError, SvmImageError
from cloudlet.svm.demo import check_image_file

__all__ = [
    "ACTIVE",
    "DEFAULT_BRIDGE",
    "DEFAULT_URI",
    "DOMAIN_TYPES",
    "IMMUTABLE_ROLES",
    "METADATA_NS",
    "STATES",
    "SvmConfig",
    "connect",
    "default_mac",
    "ensure",
    "kernel_cmdline",
    "load_manifest",
    "plan",
    "read_state",
    "render_xml",
    "spec_digest",
    "verify_files",
]

DEFAULT_URI = "qemu:///system"
DEFAULT_BRIDGE = "svmbr0"
DOMAIN_TYPES = ("kvm", "qemu")
STATES = ("defined", "running", "stopped", "absent")
ROLES = ("kernel", "initrd", "base", "overlay")
IMMUTABLE_ROLES = ("kernel", "initrd", "base")
ACTIVE = ("running", "paused")
METADATA_NS = "urn:tactical-cloudlets:svm:1"
METADATA_KEY = "svm"
CONSOLE_DIR = "/var/log/libvirt/qemu"

# libvirt constants, spelled out so this module imports without libvirt.
_VIR_ERR_NO_DOMAIN = 42
_VIR_DOMAIN_PAUSED = 3
_VIR_DOMAIN_METADATA_ELEMENT = 2
_VIR_DOMAIN_AFFECT_CONFIG = 2

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*$")
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
# Extra svm.* words for the SVM's /init; those with options of their own are not among them.
_BOOT_OPTION = re.compile(r"^svm\.(?!(ip|gw|hostname|dhcp)=)[a-z_]{1,32}=[A-Za-z0-9._-]{1,64}$")
_UUID_NS = uuid.UUID("5b0c5b7e-3f57-4b8e-9a37-6c0e1d1b7a10")


@dataclass(frozen=True)
class SvmConfig:
    """How this cloudlet runs one SVM; checked on creation so bad input fails early."""

    name: str
    manifest_path: Path
    domain_type: str = "kvm"
    bridge: str | None = DEFAULT_BRIDGE
    network: str | None = None
    address: str | None = None
    gateway: str | None = None
    hostname: str | None = None
    mac: str | None = None
    console_log: str | None = None
    verify_overlay: bool = True
    boot_options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise CloudletError(f"SVM name {self.name!r} is not valid.",
                                "Use 1-63 letters, digits, '.', '_' or '-'.")
        if self.domain_type not in DOMAIN_TYPES:
            raise CloudletError(f"Domain type {self.domain_type!r} is not one of "
                                f"{', '.join(DOMAIN_TYPES)}.",
                                "Use kvm on real hardware and qemu (TCG) in the lab.")
        if self.network is not None:
            object.__setattr__(self, "bridge", None)
        for what in ("network", "bridge"):
            value = getattr(self, what)
            if value is not None and (not isinstance(value, str) or not _NAME.match(value)):
                raise CloudletError(f"The SVM's {what} name {value!r} is not valid.")
        if self.network is None and self.bridge is None:
            raise CloudletError(f"SVM {self.name} has neither a bridge nor a libvirt network.",
                                "Name the bridge the cloudlet's SVM network uses (svmbr0).")
        object.__setattr__(self, "manifest_path", Path(self.manifest_path))
        if self.address is not None:
            try:
                iface = ipaddress.IPv4Interface(self.address)
            except ValueError:
                raise CloudletError(f"SVM address {self.address!r} is not an IPv4 "
                                    "address with prefix (like 10.200.0.10/24).") from None
            object.__setattr__(self, "address", str(iface))
        if self.gateway is not None:
            try:
                object.__setattr__(self, "gateway", str(ipaddress.IPv4Address(self.gateway)))
            except ValueError:
                raise CloudletError(f"SVM gateway {self.gateway!r} is not an IPv4 "
                                    "address.") from None
        if self.hostname is not None and not _HOSTNAME.match(self.hostname):
            raise CloudletError(f"SVM hostname {self.hostname!r} is not a valid host name.")
        if self.mac is not None:
            mac = str(self.mac).lower()
            if not _MAC.match(mac) or int(mac[:2], 16) & 1:
                raise CloudletError(f"MAC address {self.mac!r} is not a unicast MAC "
                                    "like 52:54:00:12:34:56.")
            object.__setattr__(self, "mac", mac)
        options = tuple(self.boot_options or ())
        bad = [o for o in options if not isinstance(o, str) or not _BOOT_OPTION.match(o)]
        if bad:
            raise CloudletError(f"SVM boot options {bad!r} are not svm.NAME=VALUE words.",
                                "The SVM's /init reads svm.* options, like "
                                "svm.workload=dirtying; values are letters, digits, '.', '_' "
                                "or '-'. Address, gateway and host name have options of "
                                "their own.")
        object.__setattr__(self, "boot_options", options)


# --- the manifest and its files ------------------------------------------------------------


def load_manifest(path: str | Path) -> dict:
    """Read a manifest and check it has what a domain needs; nothing is hashed here."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
        missing = [r for r in ROLES if not isinstance(files.get(r), dict)]
        if missing:
            raise KeyError(f"no {', '.join(missing)} file")
        for key in ("memory_mib", "vcpus"):
            if not isinstance(manifest[key], int) or isinstance(manifest[key], bool) \
                    or manifest[key] < 1:
                raise ValueError(f"{key} is not a positive integer")
        if not isinstance(manifest.get("cmdline", ""), str):
            raise TypeError("cmdline is not text")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SvmImageError(f"The SVM manifest {path} is unreadable ({err}).") from None
    for role in ROLES:
        name = str(files[role].get("name", ""))
        if not name or Path(name).name != name or name in (".", ".."):
            raise SvmImageError(f"The SVM manifest {path} names an unsafe {role} file {name!r}.",
                                "Do not use this image; import it again from the control node.")
    return manifest


def file_path(manifest_path: Path, manifest: dict, role: str) -> Path:
    return Path(manifest_path).parent / manifest["files"][role]["name"]


def verify_files(manifest_path: str | Path, roles: Iterable[str] = ROLES) -> dict:
    """Check the named files against size and sha256; return the manifest.

    Raises SvmImageError naming the first file that is missing or altered,
    so an operator knows exactly which file to import again.
    """
    manifest_path = Path(manifest_path)
    manifest = load_manifest(manifest_path)
    for role in roles:
        entry = manifest["files"][role]
        target = file_path(manifest_path, manifest, role)
        check_image_file(role, target, entry, " Nothing was started.")
    return manifest


# --- the domain XML ------------------------------------------------------------------------


def default_mac(name: str) -> str:
    """A stable locally administered MAC per SVM: the same on every cloudlet it visits."""
    tail = hashlib.sha256(name.encode()).digest()[:3]
    return "52:54:00:" + ":".join(f"{b:02x}" for b in tail)


def default_uuid(name: str) -> str:
    return str(uuid.uuid5(_UUID_NS, name))


def kernel_cmdline(manifest: dict, cfg: SvmConfig) -> str:
    """The manifest's command line plus this cloudlet's svm.* settings (read by /init)."""
    words = str(manifest.get("cmdline", "")).split()
    words.append(f"svm.hostname={cfg.hostname or cfg.name}")
    if cfg.address:
        words += [f"svm.ip={cfg.address}", "svm.dhcp=0"]
    if cfg.gateway:
        words.append(f"svm.gw={cfg.gateway}")
    words += cfg.boot_options
    return " ".join(words)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _spec_root(manifest: dict, cfg: SvmConfig) -> ET.Element:
    """Everything of the definition except uuid and metadata: what spec_digest covers."""
    mp = cfg.manifest_path.resolve()
    dom = ET.Element("domain", {"type": cfg.domain_type})
    _sub(dom, "name", cfg.name)
    _sub(dom, "title", f"Service VM {manifest.get('id', cfg.name)}")
    _sub(dom, "memory", str(manifest["memory_mib"]), unit="MiB")
    _sub(dom, "vcpu", str(manifest["vcpus"]))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64")
    _sub(os_el, "kernel", str(file_path(mp, manifest, "kernel")))
    _sub(os_el, "initrd", str(file_path(mp, manifest, "initrd")))
    _sub(os_el, "cmdline", kernel_cmdline(manifest, cfg))
    _sub(_sub(dom, "features"), "acpi")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    dev = _sub(dom, "devices")
    disk = _sub(dev, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=str(file_path(mp, manifest, "overlay")))
    backing = _sub(disk, "backingStore", type="file")
    _sub(backing, "format", type="qcow2")
    _sub(backing, "source", file=str(file_path(mp, manifest, "base")))
    _sub(backing, "backingStore")
    _sub(disk, "target", dev="vda", bus="virtio")
    if cfg.network:
        nic = _sub(dev, "interface", type="network")
        _sub(nic, "mac", address=cfg.mac or default_mac(cfg.name))
        _sub(nic, "source", network=cfg.network)
    else:
        nic = _sub(dev, "interface", type="bridge")
        _sub(nic, "mac", address=cfg.mac or default_mac(cfg.name))
        _sub(nic, "source", bridge=str(cfg.bridge))
    _sub(nic, "model", type="virtio")
    _sub(nic, "rom", enabled="no")  # no iPXE: the SVM boots its kernel directly
    serial = _sub(dev, "serial", type="file")
    log = cfg.console_log or f"{CONSOLE_DIR}/{cfg.name}-console.log"
    _sub(serial, "source", path=log)
    _sub(serial, "target", port="0")
    _sub(dev, "controller", type="usb", model="none")
    # No ballooning, only free page reporting: memory the guest frees goes back to
    # the cloudlet, and a migration sends it as zero pages (docs/migration.md).
    _sub(dev, "memballoon", model="virtio", freePageReporting="on")
    return dom


def spec_digest(manifest: dict, cfg: SvmConfig) -> str:
    """Digest of what we asked libvirt for; a change means the definition is out of date."""
    return hashlib.sha256(ET.tostring(_spec_root(manifest, cfg))).hexdigest()


def render_xml(manifest: dict, cfg: SvmConfig, domain_uuid: str | None = None) -> str:
    """The libvirt domain XML for ``cfg``; the uuid is kept when redefining a domain."""
    dom = _spec_root(manifest, cfg)
    _sub(dom, "uuid", str(uuid.UUID(domain_uuid or default_uuid(cfg.name))))
    meta = _sub(_sub(dom, "metadata"), f"{{{METADATA_NS}}}svm")
    _sub(meta, f"{{{METADATA_NS}}}service", str(manifest.get("id", cfg.name)))
    _sub(meta, f"{{{METADATA_NS}}}recipe", str(manifest.get("recipe", "")))
    _sub(meta, f"{{{METADATA_NS}}}spec", spec_digest(manifest, cfg))
    ET.register_namespace(METADATA_KEY, METADATA_NS)
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode") + "\n"


# --- libvirt lifecycle ---------------------------------------------------------------------


def connect(uri: str = DEFAULT_URI) -> Any:
    """Open a libvirt connection; a failure says what to check."""
    import libvirt  # imported here so the rest of the module needs no libvirt

    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise CloudletError(f"Cannot connect to libvirt at {uri}: {err}.",
                            "Check that libvirtd runs (systemctl status libvirtd).") from None


def _no_domain(err: Exception) -> bool:
    code = getattr(err, "get_error_code", None)
    return callable(code) and code() == _VIR_ERR_NO_DOMAIN


def read_state(conn: Any, name: str) -> tuple[str, Any]:
    """(absent|stopped|running|paused, domain or None)."""
    try:
        dom = conn.lookupByName(name)
    except Exception as err:  # libvirt.libvirtError, without importing libvirt
        if _no_domain(err):
            return "absent", None
        raise
    if not dom.isActive():
        return "stopped", dom
    state = dom.state()[0]
    return ("paused" if state == _VIR_DOMAIN_PAUSED else "running"), dom


def _current_spec(dom: Any) -> str | None:
    try:
        text = dom.metadata(_VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, _VIR_DOMAIN_AFFECT_CONFIG)
        el = ET.fromstring(text).find("spec")
        if el is None:
            el = ET.fromstring(text).find(f"{{{METADATA_NS}}}spec")
        return el.text if el is not None else None
    except Exception:  # no metadata: a domain defined by someone else
        return None


def plan(before: str, want: str, defined_spec: str | None, spec: str | None) -> list[str]:
    """The actions, in order, that take a domain from ``before`` to ``want``."""
    if want not in STATES:
        raise CloudletError(f"State {want!r} is not one of {', '.join(STATES)}.")
    actions: list[str] = []
    if want == "absent":
        if before in ACTIVE:
            actions.append("destroy")
        if before != "absent":
            actions.append("undefine")
        return actions
    if before == "absent":
        actions.append("define")
    elif defined_spec != spec:
        actions.append("redefine")
    if want == "running":
        if before in ("absent", "stopped"):
            actions.append("start")
        elif before == "paused":
            actions.append("resume")
    elif want == "stopped" and before in ACTIVE:
        actions.append("destroy")
    return actions


_AFTER = {"defined": None, "running": "running", "stopped": "stopped", "absent": "absent"}


def ensure(conn: Any, cfg: SvmConfig, want: str, check_mode: bool = False) -> dict:
    """Bring the SVM to ``want``; verify images before any define or start.

    Returns changed, actions, before/after state, the spec digests, the XML
    (when not absent) and whether a running domain awaits a restart to pick
    up a new definition.
    """
    before, dom = read_state(conn, cfg.name)
    result: dict[str, Any] = {"name": cfg.name, "before": before, "xml": None,
                              "verified": [], "pending_restart": False}
    spec = manifest = None
    if want != "absent":
        # An overlay libvirt already holds is the SVM's live disk: skip it then.
        roles = ROLES if dom is None and cfg.verify_overlay else IMMUTABLE_ROLES
        manifest = verify_files(cfg.manifest_path, roles)
        result["verified"] = [str(file_path(cfg.manifest_path, manifest, r)) for r in roles]
        spec = spec_digest(manifest, cfg)
    defined_spec = _current_spec(dom) if dom is not None else None
    actions = plan(before, want, defined_spec, spec)
    if manifest is not None:
        result["xml"] = render_xml(manifest, cfg, dom.UUIDString() if dom is not None else None)
    result.update(actions=actions, changed=bool(actions), spec_before=defined_spec,
                  spec_after=None if want == "absent" else spec)
    if "redefine" in actions and before in ACTIVE and "destroy" not in actions:
        result["pending_restart"] = True
    if check_mode:
        result["after"] = _AFTER[want] or ("stopped" if before == "absent" else before)
        if "resume" in actions:
            result["after"] = "running"
        return result
    for action in actions:
        if action in ("define", "redefine"):
            dom = conn.defineXML(result["xml"])
        elif action == "start":
            dom.create()
        elif action == "resume":
            dom.resume()
        elif action == "destroy":
            dom.destroy()
        elif action == "undefine":
            dom.undefine()
    result["after"] = read_state(conn, cfg.name)[0]
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudlet.svm.domain MANIFEST``: check an imported image by hand."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Check an SVM's files against its manifest.")
    parser.add_argument("manifest")
    parser.add_argument("--role", action="append", choices=ROLES,
                        help="check only these files (default: all)")
    args = parser.parse_args(argv)
    try:
        verify_files(args.manifest, args.role or ROLES)
    except CloudletError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.manifest}: every file matches")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
