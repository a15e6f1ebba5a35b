"""Addresses derived from a subnet, so that a subnet is the only thing an inventory states.

The SVM subnet is the same behind every cloudlet (an SVM keeps its address
when it migrates); the cloudlet's own address on the SVM bridge, the SVMs'
gateway, is the subnet's first host. Devices route the subnet, the libvirt
role puts the gateway on the bridge: both come from one value.
"""

from __future__ import annotations

import ipaddress

from cloudlet.errors import CloudletError

__all__ = ["subnet_host", "subnet_prefix"]


def _network(subnet: str) -> ipaddress.IPv4Network:
    if not isinstance(subnet, str):
        raise CloudletError(f"The subnet {subnet!r} is not a string like 10.200.0.0/24.")
    try:
        return ipaddress.IPv4Network(subnet.strip(), strict=True)
    except ValueError as exc:
        raise CloudletError(
            f"The subnet {subnet!r} is not an IPv4 network ({exc}).",
            "Give the network address with its prefix length, like 10.200.0.0/24.",
        ) from None


def subnet_host(subnet: str, index: int = 1) -> str:
    """The ``index``-th host address of ``subnet``: ``10.200.0.0/24``, 1 -> ``10.200.0.1``."""
    network = _network(subnet)
    if isinstance(index, bool) or not isinstance(index, int):
        raise CloudletError(f"The host number {index!r} is not a whole number.")
    hosts = max(network.num_addresses - 2, 0)
    if not 1 <= index <= hosts:
        raise CloudletError(
            f"The subnet {network} has no host number {index}: it has {hosts} host addresses.",
            "Choose a larger subnet or a smaller host number.",
        )
    return str(network.network_address + index)


def subnet_prefix(subnet: str) -> int:
    """The prefix length of ``subnet``: ``10.200.0.0/24`` -> ``24``."""
    return _network(subnet).prefixlen
