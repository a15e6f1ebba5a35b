"""cloudlet.svm.domain without libvirt: XML, image checks and the lifecycle plan."""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cloudlet.errors import CloudletError, SvmImageError
from cloudlet.svm import domain

FILES = {"kernel": ("vmlinuz", b"kernel" * 100), "initrd": ("initrd.gz", b"initrd" * 50),
         "base": ("base.qcow2", b"base" * 64), "overlay": ("overlay.qcow2", b"overlay" * 32)}


@pytest.fixture
def svm_dir(tmp_path: Path) -> Path:
    files = {}
    for role, (name, data) in FILES.items():
        (tmp_path / name).write_bytes(data)
        files[role] = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {"format": 1, "recipe": "abc123", "id": "demo-counter", "memory_mib": 128,
                "vcpus": 1, "cmdline": "console=ttyS0 quiet", "files": files}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def cfg(svm_dir: Path, **kw) -> domain.SvmConfig:
    return domain.SvmConfig(name=kw.pop("name", "demo-counter"),
                            manifest_path=svm_dir / "manifest.json", **kw)


def flip_byte(path: Path, offset: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# -- XML -------------------------------------------------------------------------------------


def test_xml_uses_the_domain_type_given_and_boots_the_manifest_files(svm_dir):
    manifest = domain.load_manifest(svm_dir / "manifest.json")
    for dtype in ("qemu", "kvm"):
        root = ET.fromstring(domain.render_xml(manifest, cfg(svm_dir, domain_type=dtype)))
        assert root.get("type") == dtype
    assert root.findtext("name") == "demo-counter"
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "128"
    assert root.findtext("vcpu") == "1"
    assert root.findtext("os/kernel") == str(svm_dir.resolve() / "vmlinuz")
    assert root.findtext("os/initrd") == str(svm_dir.resolve() / "initrd.gz")
    assert root.findtext("on_poweroff") == "destroy"
    disk = root.find("devices/disk")
    assert disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == str(svm_dir.resolve() / "overlay.qcow2")
    assert disk.find("backingStore/source").get("file") == str(svm_dir.resolve() / "base.qcow2")
    assert disk.find("target").attrib == {"dev": "vda", "bus": "virtio"}
    nic = root.find("devices/interface")
    assert nic.get("type") == "bridge" and nic.find("source").get("bridge") == "svmbr0"
    assert nic.find("model").get("type") == "virtio"
    serial = root.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path") == "/var/log/libvirt/qemu/demo-counter-console.log"
    # Free page reporting only: what the guest frees is not migrated.
    assert root.find("devices/memballoon").attrib == {"model": "virtio",
                                                      "freePageReporting": "on"}
    net = ET.fromstring(domain.render_xml(manifest, cfg(svm_dir, network="svm")))
    assert net.find("devices/interface").get("type") == "network"
    assert net.find("devices/interface/source").attrib == {"network": "svm"}


def test_cmdline_carries_hostname_static_address_and_gateway(svm_dir):
    manifest = domain.load_manifest(svm_dir / "manifest.json")
    c = cfg(svm_dir, address="10.200.0.10/24", gateway="10.200.0.1", hostname="counter.svc")
    line = domain.kernel_cmdline(manifest, c)
    assert line.split() == ["console=ttyS0", "quiet", "svm.hostname=counter.svc",
                            "svm.ip=10.200.0.10/24", "svm.dhcp=0", "svm.gw=10.200.0.1"]
    assert domain.kernel_cmdline(manifest, cfg(svm_dir)).endswith("svm.hostname=demo-counter")


def test_xml_escapes_and_keeps_uuid_and_metadata(svm_dir):
    manifest = domain.load_manifest(svm_dir / "manifest.json")
    c = cfg(svm_dir, domain_type="qemu")
    text = domain.render_xml(manifest, c, "12345678-1234-5678-1234-567812345678")
    root = ET.fromstring(text)
    assert root.findtext("uuid") == "12345678-1234-5678-1234-567812345678"
    spec = root.find(f"metadata/{{{domain.METADATA_NS}}}svm/{{{domain.METADATA_NS}}}spec")
    assert spec.text == domain.spec_digest(manifest, c)
    # The same SVM gets the same uuid and MAC wherever it is defined.
    again = ET.fromstring(domain.render_xml(manifest, c))
    assert again.findtext("uuid") == domain.default_uuid("demo-counter")
    assert again.find("devices/interface/mac").get("address") == domain.default_mac("demo-counter")


def test_spec_digest_follows_what_matters(svm_dir):
    manifest = domain.load_manifest(svm_dir / "manifest.json")
    digests = {domain.spec_digest(manifest, cfg(svm_dir, **kw)) for kw in (
        {}, {"domain_type": "qemu"}, {"address": "10.200.0.10/24"}, {"bridge": "br1"},
        {"boot_options": ["svm.workload=dirtying"]})}
    assert len(digests) == 5
    assert domain.spec_digest(manifest, cfg(svm_dir)) == domain.spec_digest(manifest, cfg(svm_dir))


@pytest.mark.parametrize("kw", [
    {"domain_type": "xen"}, {"domain_type": ""}, {"name": "bad name"}, {"name": "../x"},
    {"address": "10.200.0.300/24"}, {"address": "fe80::1/64"}, {"gateway": "nope"},
    {"hostname": "-bad"}, {"mac": "01:00:00:00:00:01"}, {"mac": "zz"}, {"network": "a b"},
    {"bridge": None}, {"bridge": "br 0"}, {"boot_options": ["quiet"]},
    {"boot_options": ["init=/bin/sh"]}, {"boot_options": ["svm.ip=10.0.0.9/24"]},
    {"boot_options": ["svm.workload=a b"]}, {"boot_options": ["svm.workload=x;reboot"]},
])
def test_bad_configuration_is_refused_with_a_clear_error(svm_dir, kw):
    with pytest.raises(CloudletError):
        cfg(svm_dir, **kw)


def test_boot_options_follow_the_svm_settings_on_the_kernel_command_line(svm_dir):
    manifest = domain.load_manifest(svm_dir / "manifest.json")
    line = domain.kernel_cmdline(manifest, cfg(svm_dir, address="10.200.0.10/24",
                                               boot_options=["svm.workload=dirtying"]))
    assert line.split() == ["console=ttyS0", "quiet", "svm.hostname=demo-counter",
                            "svm.ip=10.200.0.10/24", "svm.dhcp=0", "svm.workload=dirtying"]


# -- image checks ----------------------------------------------------------------------------


def test_intact_files_verify(svm_dir):
    assert domain.verify_files(svm_dir / "manifest.json")["id"] == "demo-counter"


@pytest.mark.parametrize("role", list(FILES))
def test_a_flipped_byte_is_refused_naming_the_file(svm_dir, role):
    target = svm_dir / FILES[role][0]
    flip_byte(target)
    with pytest.raises(SvmImageError) as info:
        domain.verify_files(svm_dir / "manifest.json")
    assert str(target) in str(info.value) and "altered" in str(info.value)


def test_missing_or_resized_files_are_refused(svm_dir):
    (svm_dir / "initrd.gz").write_bytes(b"short")
    with pytest.raises(SvmImageError, match="initrd.gz"):
        domain.verify_files(svm_dir / "manifest.json")
    (svm_dir / "vmlinuz").unlink()
    with pytest.raises(SvmImageError, match="vmlinuz is missing"):
        domain.verify_files(svm_dir / "manifest.json", ["kernel"])


def test_only_the_roles_asked_are_checked(svm_dir):
    flip_byte(svm_dir / "overlay.qcow2")
    domain.verify_files(svm_dir / "manifest.json", domain.IMMUTABLE_ROLES)


@pytest.mark.parametrize("mutate", [
    lambda m: m["files"].pop("base"),
    lambda m: m["files"]["kernel"].update(name="../../etc/passwd"),
    lambda m: m.update(memory_mib="lots"),
    lambda m: m.update(vcpus=0),
])
def test_a_bad_manifest_is_refused(svm_dir, mutate):
    path = svm_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    mutate(manifest)
    path.write_text(json.dumps(manifest))
    with pytest.raises(SvmImageError, match="manifest"):
        domain.verify_files(path)


def test_an_unreadable_manifest_is_refused(svm_dir):
    (svm_dir / "manifest.json").write_text("{not json")
    with pytest.raises(SvmImageError, match="unreadable"):
        domain.load_manifest(svm_dir / "manifest.json")


# -- lifecycle, against a fake libvirt ---------------------------------------------------------


class NoDomain(Exception):
    def get_error_code(self) -> int:
        return 42


class FakeDomain:
    def __init__(self, conn: FakeConn, xml: str) -> None:
        self.conn, self.xml, self.active, self.paused = conn, xml, False, False

    def isActive(self):  # noqa: N802 - libvirt's spelling
        return self.active

    def state(self):
        return [3 if self.paused else 1, 0]

    def UUIDString(self):  # noqa: N802 - libvirt's spelling
        return ET.fromstring(self.xml).findtext("uuid")

    def metadata(self, kind, uri, flags):
        el = ET.fromstring(self.xml).find(f"metadata/{{{uri}}}svm")
        if el is None:
            raise NoDomain("no metadata")
        return ET.tostring(el, encoding="unicode")

    def create(self):
        self.conn.calls.append("create")
        self.active = True

    def resume(self):
        self.conn.calls.append("resume")
        self.paused = False

    def destroy(self):
        self.conn.calls.append("destroy")
        self.active = self.paused = False

    def undefine(self):
        self.conn.calls.append("undefine")
        del self.conn.domains[ET.fromstring(self.xml).findtext("name")]


class FakeConn:
    def __init__(self) -> None:
        self.domains: dict[str, FakeDomain] = {}
        self.calls: list[str] = []

    def lookupByName(self, name):  # noqa: N802 - libvirt's spelling
        if name not in self.domains:
            raise NoDomain(name)
        return self.domains[name]

    def defineXML(self, xml):  # noqa: N802 - libvirt's spelling
        self.calls.append("define")
        name = ET.fromstring(xml).findtext("name")
        dom = self.domains.get(name) or FakeDomain(self, xml)
        dom.xml = xml
        self.domains[name] = dom
        return dom


def test_check_apply_check_is_changed_changed_unchanged(svm_dir):
    conn, c = FakeConn(), cfg(svm_dir, domain_type="qemu")
    first = domain.ensure(conn, c, "running", check_mode=True)
    assert first["changed"] and first["actions"] == ["define", "start"]
    assert conn.calls == [] and conn.domains == {}
    second = domain.ensure(conn, c, "running")
    assert second["changed"] and second["after"] == "running"
    assert conn.calls == ["define", "create"]
    third = domain.ensure(conn, c, "running", check_mode=True)
    assert not third["changed"] and third["actions"] == []
    assert not domain.ensure(conn, c, "running")["changed"]
    assert conn.calls == ["define", "create"]


def test_running_domain_overlay_is_its_own_state(svm_dir):
    conn, c = FakeConn(), cfg(svm_dir)
    domain.ensure(conn, c, "running")
    flip_byte(svm_dir / "overlay.qcow2")  # the guest wrote to its disk
    assert not domain.ensure(conn, c, "running")["changed"]
    domain.ensure(conn, c, "stopped")
    assert domain.ensure(conn, c, "running")["after"] == "running"


def test_tampered_image_defines_and_starts_nothing(svm_dir):
    conn = FakeConn()
    flip_byte(svm_dir / "overlay.qcow2")
    with pytest.raises(SvmImageError, match="overlay.qcow2"):
        domain.ensure(conn, cfg(svm_dir, name="copy"), "running")
    assert conn.calls == [] and conn.domains == {}


def test_tampered_kernel_stops_a_restart(svm_dir):
    conn, c = FakeConn(), cfg(svm_dir)
    domain.ensure(conn, c, "stopped")
    flip_byte(svm_dir / "vmlinuz")
    with pytest.raises(SvmImageError, match="vmlinuz"):
        domain.ensure(conn, c, "running")
    assert conn.calls == ["define"] and not conn.domains["demo-counter"].active


def test_stop_defined_absent_and_paused(svm_dir):
    conn, c = FakeConn(), cfg(svm_dir)
    assert domain.ensure(conn, c, "defined")["after"] == "stopped"
    assert not domain.ensure(conn, c, "stopped")["changed"]
    domain.ensure(conn, c, "running")
    conn.domains["demo-counter"].paused = True
    assert domain.ensure(conn, c, "running")["actions"] == ["resume"]
    assert domain.ensure(conn, c, "defined")["actions"] == []
    assert domain.ensure(conn, c, "absent")["actions"] == ["destroy", "undefine"]
    assert conn.domains == {}
    assert not domain.ensure(conn, c, "absent")["changed"]


def test_a_changed_definition_is_redefined_keeping_the_uuid(svm_dir):
    conn = FakeConn()
    domain.ensure(conn, cfg(svm_dir, domain_type="kvm"), "running")
    uuid_before = conn.domains["demo-counter"].UUIDString()
    result = domain.ensure(conn, cfg(svm_dir, domain_type="qemu"), "running")
    assert result["actions"] == ["redefine"] and result["pending_restart"]
    assert ET.fromstring(conn.domains["demo-counter"].xml).get("type") == "qemu"
    assert conn.domains["demo-counter"].UUIDString() == uuid_before


def test_plan_rejects_an_unknown_state():
    with pytest.raises(CloudletError, match="State"):
        domain.plan("absent", "exploded", None, None)


def test_cli_names_the_tampered_file(svm_dir, capsys):
    assert domain.main([str(svm_dir / "manifest.json")]) == 0
    flip_byte(svm_dir / "base.qcow2")
    assert domain.main([str(svm_dir / "manifest.json")]) == 1
    assert "base.qcow2" in capsys.readouterr().err
