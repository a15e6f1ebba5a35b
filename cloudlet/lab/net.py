"""Bridges, namespaces and veths on the control node for one lab.

Everything the lab creates is named ``<lab>-...``, and lab names contain no
dash, so "ours" is decided by name alone: bring-up removes what is ours but not
planned, and tear-down removes everything that is ours.
"""

from __future__ import annotations

import json
import os

from cloudlet.lab.system import run
from cloudlet.lab.topology import Plan

__all__ = ["converge", "remove", "state"]

NETNS_DIR = "/run/netns"
EAPOL_GROUP_FWD = "8"  # let 802.1X frames (01:80:c2:00:00:03) cross a bridge


def _host_links() -> dict[str, dict]:
    out = run(["ip", "-j", "link", "show"]).stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def _netns_names() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def _ns_links(netns: str) -> dict[str, dict]:
    out = run(["ip", "-n", netns, "-j", "addr", "show"]).stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def _forwarding(netns: str) -> str:
    argv = ["ip", "netns", "exec", netns, "cat", "/proc/sys/net/ipv4/ip_forward"]
    return run(argv).stdout.strip()


def state(lab: str) -> dict[str, list[str]]:
    """What of this lab exists on the host now."""
    prefix = f"{lab}-"
    return {
        "links": sorted(n for n in _host_links() if n.startswith(prefix)),
        "netns": [n for n in _netns_names() if n.startswith(prefix)],
    }


def converge(plan: Plan) -> list[str]:
    """Make the host match the plan; return what was done, for ``changed``."""
    done: list[str] = []
    prefix = f"{plan.lab}-"
    wanted_ns = {m.netns for m in plan.machines}
    wanted_links = set(plan.bridges.values()) | {
        link.host_if for m in plan.machines for link in m.links
    }

    for ns in _netns_names():
        if ns.startswith(prefix) and ns not in wanted_ns:
            run(["ip", "netns", "delete", ns])
            done.append(f"removed stale namespace {ns}")
    for name in _host_links():
        if name.startswith(prefix) and name not in wanted_links:
            run(["ip", "link", "delete", name], check=False)
            done.append(f"removed stale link {name}")

    host = _host_links()
    for segment, bridge in plan.bridges.items():
        if bridge not in host:
            run(["ip", "link", "add", "name", bridge, "type", "bridge"])
            if segment != "mgmt":
                run(
                    [
                        "ip",
                        "link",
                        "set",
                        bridge,
                        "type",
                        "bridge",
                        "group_fwd_mask",
                        EAPOL_GROUP_FWD,
                    ]
                )
            run(["ip", "link", "set", bridge, "up"])
            done.append(f"created bridge {bridge}")
    mgmt = plan.bridges["mgmt"]
    host_cidr = f"{plan.host_ip}/{plan.subnets['mgmt'].split('/')[1]}"
    addrs = json.loads(run(["ip", "-j", "addr", "show", "dev", mgmt]).stdout)[0]
    if not any(a.get("local") == plan.host_ip for a in addrs.get("addr_info", [])):
        run(["ip", "addr", "add", host_cidr, "dev", mgmt])
        done.append(f"addressed {mgmt} {host_cidr}")

    for machine in plan.machines:
        if machine.netns not in _netns_names():
            run(["ip", "netns", "add", machine.netns])
            run(["ip", "-n", machine.netns, "link", "set", "lo", "up"])
            done.append(f"created namespace {machine.netns}")
        if machine.role == "cloudlet" and _forwarding(machine.netns) != "1":
            # A cloudlet routes its devices to its SVMs. Inside the container
            # /proc/sys is read-only, so the lab, as the machine's "hardware",
            # sets it in the namespace.
            run(["ip", "netns", "exec", machine.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            done.append(f"enabled forwarding in {machine.netns}")
        inside = _ns_links(machine.netns)
        host = _host_links()
        for link in machine.links:
            ok = (
                link.ifname in inside
                and link.host_if in host
                and host[link.host_if].get("master") == link.bridge
                and _addressed_as_planned(link, inside[link.ifname].get("addr_info", []))
            )
            if ok:
                continue
            run(["ip", "link", "delete", link.host_if], check=False)
            run(["ip", "-n", machine.netns, "link", "delete", link.ifname], check=False)
            run(
                [
                    "ip",
                    "link",
                    "add",
                    link.host_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    link.ifname,
                    "netns",
                    machine.netns,
                ]
            )
            run(["ip", "link", "set", link.host_if, "master", link.bridge, "up"])
            if link.segment.startswith("f") and link.ifname != "field0":
                # Like a Wi-Fi AP's client isolation: the stations on a field
                # network reach its cloudlet, not each other, and no supplicant
                # sees another's EAPOL frames.
                run(["ip", "link", "set", link.host_if, "type", "bridge_slave", "isolated", "on"])
            if link.address:
                run(["ip", "-n", machine.netns, "addr", "add", link.address, "dev", link.ifname])
            run(["ip", "-n", machine.netns, "link", "set", link.ifname, "up"])
            done.append(f"wired {machine.name}:{link.ifname} to {link.bridge}")
    return done


def _addressed_as_planned(link, addrs: list[dict]) -> bool:
    """The planned static address is there; a DHCP link has no static IPv4 address."""
    if link.address:
        return any(a.get("local") == link.ip for a in addrs)
    return not any(a.get("family") == "inet" and not a.get("dynamic") for a in addrs)


def remove(lab: str) -> list[str]:
    """Delete every namespace and link of this lab."""
    done = []
    current = state(lab)
    for ns in current["netns"]:
        run(["ip", "netns", "delete", ns])
        done.append(f"removed namespace {ns}")
    for name in state(lab)["links"]:
        run(["ip", "link", "delete", name], check=False)
        done.append(f"removed link {name}")
    return done
