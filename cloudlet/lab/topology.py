"""Plan the lab: which machines exist, which segments they sit on, their addresses.

The plan is pure data computed from the lab's configuration, so the network and
machine modules agree on names and addresses without talking to each other,
and so it can be unit-tested without root.

Segments:

* ``mgmt``  the management network; the control node is ``.1`` on it.
* ``pair``  the pairing segment between cloudlets (the temporary radio link).
* ``f<k>``  cloudlet *k*'s field segment; the cloudlet is ``.1`` there, its
  devices and visiting cloudlets attach too. Devices have no address there
  until the cloudlet's DHCP gives them one, after 802.1X.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from cloudlet.errors import LabError

__all__ = ["Link", "Machine", "Plan", "field_ifname", "plan"]

ROLES = ("cloudlet", "device")
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$")
_LAB_RE = re.compile(r"^[a-z][a-z0-9]{1,5}$")
IFNAMSIZ = 15


@dataclass(frozen=True)
class Link:
    """One veth: ``ifname`` inside the machine, ``host_if`` on the host bridge."""

    segment: str
    bridge: str
    ifname: str
    host_if: str
    address: str  # CIDR, e.g. "10.77.0.10/24"; "" when the machine takes one by DHCP

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True)
class Machine:
    name: str
    role: str
    index: int
    netns: str
    links: tuple[Link, ...]
    home: str | None = None  # a device's home cloudlet

    @property
    def mgmt_ip(self) -> str:
        return self.links[0].ip

    def link(self, segment: str) -> Link:
        for candidate in self.links:
            if candidate.segment == segment:
                return candidate
        raise LabError(f"Machine {self.name} has no link on segment {segment}.")


@dataclass(frozen=True)
class Plan:
    lab: str
    host_ip: str
    bridges: dict[str, str] = field(default_factory=dict)  # segment -> bridge
    subnets: dict[str, str] = field(default_factory=dict)  # segment -> CIDR
    machines: tuple[Machine, ...] = ()

    def machine(self, name: str) -> Machine:
        for candidate in self.machines:
            if candidate.name == name:
                return candidate
        raise LabError(f"The lab has no machine called {name}.")

    def as_dict(self) -> dict:
        """A JSON-friendly view, for Ansible facts and the inventory."""
        return {
            "lab": self.lab,
            "host_ip": self.host_ip,
            "bridges": dict(self.bridges),
            "subnets": dict(self.subnets),
            "machines": [
                {
                    "name": m.name,
                    "role": m.role,
                    "netns": m.netns,
                    "home": m.home,
                    "mgmt_ip": m.mgmt_ip,
                    "links": [vars(link) for link in m.links],
                }
                for m in self.machines
            ],
        }


def field_ifname(cloudlet: str) -> str:
    name = f"f-{cloudlet}"
    if len(name) > IFNAMSIZ:
        name = name[:IFNAMSIZ]
    return name


def plan(lab: str, subnet: str, machines: list[dict]) -> Plan:
    """Compute the lab from its name, a /16 to carve up, and the machine list.

    ``machines`` items are ``{"name": ..., "role": "cloudlet"|"device"}``; a
    device may name its ``home`` cloudlet (default: the first cloudlet).
    """
    if not _LAB_RE.match(lab):
        raise LabError(
            f"Lab name {lab!r} is not usable.",
            "Use 2 to 6 lowercase letters or digits, starting with a letter; it "
            "prefixes every bridge, namespace and veth the lab creates.",
        )
    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as exc:
        raise LabError(f"Lab subnet {subnet!r} is not a network: {exc}.") from None
    if net.version != 4 or net.prefixlen > 16 or not net.is_private:
        raise LabError(
            f"Lab subnet {subnet} must be a private IPv4 /16 or larger.",
            "Pick an unused private range, e.g. 10.77.0.0/16.",
        )
    segments = list(net.subnets(new_prefix=24))

    names = [m.get("name", "") for m in machines]
    for name in names:
        if not _NAME_RE.match(name or ""):
            raise LabError(
                f"Machine name {name!r} is not usable.",
                "Use lowercase letters, digits and dashes (2 to 32 characters).",
            )
    if len(set(names)) != len(names):
        raise LabError("Machine names in the lab must be unique.")
    for m in machines:
        if m.get("role") not in ROLES:
            raise LabError(
                f"Machine {m.get('name')} has role {m.get('role')!r}.",
                f"Use one of: {', '.join(ROLES)}.",
            )
    cloudlets = [m["name"] for m in machines if m["role"] == "cloudlet"]
    if len(machines) > 200:
        raise LabError("The lab holds at most 200 machines.")
    if len(cloudlets) > len(segments) - 2:
        raise LabError("Too many cloudlets for the lab subnet.")
    field_names = [field_ifname(c) for c in cloudlets]
    if len(set(field_names)) != len(field_names):
        raise LabError(
            "Two cloudlet names share their first 13 characters.",
            "Interface names are limited to 15 characters; shorten the names.",
        )

    subnets = {"mgmt": segments[0], "pair": segments[1]}
    for k, _ in enumerate(cloudlets):
        subnets[f"f{k}"] = segments[2 + k]
    bridges = {seg: f"{lab}-{seg}" for seg in subnets}
    field_of = {c: f"f{k}" for k, c in enumerate(cloudlets)}

    def address(segment: str, host: int) -> str:
        sub = subnets[segment]
        return f"{sub.network_address + host}/{sub.prefixlen}"

    planned = []
    for index, m in enumerate(machines):
        name, role = m["name"], m["role"]
        host = 10 + index
        wanted = [("mgmt", "mgmt0", host)]
        if role == "cloudlet":
            wanted.append(("pair", "pair0", host))
            wanted.append((field_of[name], "field0", 1))
            wanted += [(field_of[c], field_ifname(c), host) for c in cloudlets if c != name]
            home = None
        else:
            home = m.get("home") or (cloudlets[0] if cloudlets else None)
            if home is not None and home not in field_of:
                raise LabError(f"Device {name} names home {home!r}, which is not a cloudlet.")
            # No static address: the cloudlet's DHCP answers after 802.1X.
            wanted += [(field_of[c], field_ifname(c), None) for c in cloudlets]
        links = tuple(
            Link(
                segment=seg,
                bridge=bridges[seg],
                ifname=ifname,
                host_if=f"{lab}-v{index}-{n}",
                address="" if addr_host is None else address(seg, addr_host),
            )
            for n, (seg, ifname, addr_host) in enumerate(wanted)
        )
        planned.append(
            Machine(
                name=name, role=role, index=index, netns=f"{lab}-{name}", links=links, home=home
            )
        )

    return Plan(
        lab=lab,
        host_ip=str(subnets["mgmt"].network_address + 1),
        bridges=bridges,
        subnets={k: str(v) for k, v in subnets.items()},
        machines=tuple(planned),
    )
