"""The lab plan: names, addresses and wiring, computed without root."""

from __future__ import annotations

import pytest

from cloudlet.errors import CloudletError, LabError
from cloudlet.lab import image
from cloudlet.lab.topology import IFNAMSIZ, plan

DEFAULT = [
    {"name": "cloudlet-a", "role": "cloudlet"},
    {"name": "cloudlet-b", "role": "cloudlet"},
    {"name": "device-1", "role": "device", "home": "cloudlet-a"},
    {"name": "device-2", "role": "device"},
]


def test_default_lab_layout():
    p = plan("clab", "10.77.0.0/16", DEFAULT)
    assert p.host_ip == "10.77.0.1"
    assert p.subnets == {"mgmt": "10.77.0.0/24", "pair": "10.77.1.0/24",
                         "f0": "10.77.2.0/24", "f1": "10.77.3.0/24"}
    a, b = p.machine("cloudlet-a"), p.machine("cloudlet-b")
    assert [(link.ifname, link.address) for link in a.links] == [
        ("mgmt0", "10.77.0.10/24"), ("pair0", "10.77.1.10/24"),
        ("field0", "10.77.2.1/24"), ("f-cloudlet-b", "10.77.3.10/24"),
    ]
    assert b.link("f0").ifname == "f-cloudlet-a"
    d2 = p.machine("device-2")
    assert d2.home == "cloudlet-a"  # defaults to the first cloudlet
    assert {link.segment for link in d2.links} == {"mgmt", "f0", "f1"}
    # A device takes its field addresses from the cloudlets' DHCP, after 802.1X.
    assert [(link.ifname, link.address) for link in d2.links] == [
        ("mgmt0", "10.77.0.13/24"), ("f-cloudlet-a", ""), ("f-cloudlet-b", "")]


def test_devices_are_not_on_the_pairing_segment():
    p = plan("clab", "10.77.0.0/16", DEFAULT)
    for name in ("device-1", "device-2"):
        with pytest.raises(LabError):
            p.machine(name).link("pair")


def test_every_address_and_host_interface_is_unique_and_fits_ifnamsiz():
    p = plan("abcdef", "10.77.0.0/16", DEFAULT + [
        {"name": f"device-{i}", "role": "device"} for i in range(3, 40)])
    links = [link for m in p.machines for link in m.links]
    static = [link for link in links if link.address]
    assert len({link.address for link in static}) == len(static)
    assert len({link.host_if for link in links}) == len(links)
    names = [link.host_if for link in links] + list(p.bridges.values())
    names += [link.ifname for link in links]
    assert max(map(len, names)) <= IFNAMSIZ
    # Everything on the host is recognisably the lab's by its prefix alone.
    assert all(n.startswith("abcdef-") for n in [link.host_if for link in links])


@pytest.mark.parametrize("lab,subnet,machines,words", [
    ("Clab", "10.77.0.0/16", DEFAULT, "Lab name"),
    ("c-lab", "10.77.0.0/16", DEFAULT, "Lab name"),
    ("clab", "8.8.0.0/16", DEFAULT, "private"),
    ("clab", "10.77.0.0/24", DEFAULT, "/16"),
    ("clab", "not-a-net", DEFAULT, "not a network"),
    ("clab", "10.77.0.0/16", DEFAULT + [{"name": "device-1", "role": "device"}], "unique"),
    ("clab", "10.77.0.0/16", [{"name": "x_y", "role": "device"}], "not usable"),
    ("clab", "10.77.0.0/16", [{"name": "box", "role": "router"}], "role"),
    ("clab", "10.77.0.0/16", [{"name": "dev", "role": "device", "home": "nope"}], "not a cloudlet"),
    ("clab", "10.77.0.0/16", [{"name": "cloudlet-alpha-1", "role": "cloudlet"},
                              {"name": "cloudlet-alpha-2", "role": "cloudlet"}], "15 characters"),
])
def test_bad_configuration_is_refused_with_a_clear_message(lab, subnet, machines, words):
    with pytest.raises(LabError, match=words):
        plan(lab, subnet, machines)


def test_image_cache_key_follows_the_whole_recipe():
    key = image.cache_key("bookworm", "http://mirror.invalid/debian")
    assert key == image.cache_key("bookworm", "http://mirror.invalid/debian")
    assert key != image.cache_key("trixie", "http://mirror.invalid/debian")
    assert key != image.cache_key("bookworm", "http://other.invalid/debian")
    assert key != image.cache_key("bookworm", "http://mirror.invalid/debian",
                                  image.EXTRA_PACKAGES + ("vim",))


def test_image_takes_qemu_and_libvirt_from_backports_and_the_rest_from_the_suite(monkeypatch):
    pin = image.backports_pin("bookworm")
    assert pin.splitlines() == ["Package: qemu-* libvirt* seabios",
                                "Pin: release n=bookworm-backports", "Pin-Priority: 990"]
    line = image.install_command(image.EXTRA_PACKAGES)
    assert " qemu-system-x86 " in line and " libvirt-daemon-system " in line
    assert "backports" not in line and " systemd" not in line
    key = image.cache_key("bookworm", "http://mirror.invalid/debian")
    monkeypatch.setattr(image, "BACKPORTS", ("qemu-*",))
    assert key != image.cache_key("bookworm", "http://mirror.invalid/debian")


def test_host_mirror_reads_deb822_and_one_line_sources(tmp_path):
    from cloudlet.debian import host_mirror

    deb822 = tmp_path / "debian.sources"
    deb822.write_text("# http://snapshot.invalid/debian/\nTypes: deb\n"
                      "URIs: http://mirror.invalid/debian/\nSuites: bookworm\n")
    assert host_mirror((str(deb822),)) == "http://mirror.invalid/debian"
    legacy = tmp_path / "sources.list"
    legacy.write_text("deb [signed-by=/k.gpg] http://old.invalid/debian bookworm main\n")
    assert host_mirror((str(legacy),)) == "http://old.invalid/debian"


def test_no_debian_mirror_is_a_clear_error(tmp_path):
    from cloudlet.debian import host_mirror
    other = tmp_path / "other.list"
    other.write_text("deb https://apt.invalid/node nodistro main\n")
    with pytest.raises(CloudletError, match="lab_debian_mirror"):
        host_mirror((str(other),))
