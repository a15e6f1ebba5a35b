"""DNS-SD: advertise the Manager API as ``_cloudlet._tcp.local.`` (step 2 of a migration).

A peer that has just joined our network finds the API's address and port
here. The TXT record carries our cloudlet id, the API version and our CA's
SHA-256 fingerprint, so the peer can check before connecting that this is
the cloudlet it paired with (the TLS handshake then proves it). Nothing in
the record is secret: an observer learns only that a cloudlet is here.

``interfaces`` limits where mDNS is sent; tests pass ``["127.0.0.1"]`` so
no multicast leaves the machine.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from cloudlet.manager.protocol import API_VERSION

__all__ = ["SERVICE_TYPE", "Advertiser", "local_addresses", "service_info"]

SERVICE_TYPE = "_cloudlet._tcp.local."


def service_info(
    cloudlet_id: str, port: int, addresses: Sequence[str], ca_fingerprint: str
) -> ServiceInfo:
    """The DNS-SD record for one Manager."""
    packed = [ipaddress.ip_address(a).packed for a in addresses]
    return ServiceInfo(
        SERVICE_TYPE,
        f"{cloudlet_id}.{SERVICE_TYPE}",
        addresses=packed,
        port=port,
        properties={"id": cloudlet_id, "api": API_VERSION, "ca": ca_fingerprint},
        server=f"{cloudlet_id}.local.",
    )


class Advertiser:
    """Registers the service on start and withdraws it (goodbye packets) on stop."""

    def __init__(self, info: ServiceInfo, interfaces: Sequence[str]) -> None:
        self.info = info
        self.interfaces = list(interfaces)
        self._zc: AsyncZeroconf | None = None

    async def start(self) -> None:
        v6 = any(":" in i for i in self.interfaces)
        self._zc = AsyncZeroconf(
            interfaces=self.interfaces or InterfaceChoice.All,
            ip_version=IPVersion.All if v6 else IPVersion.V4Only,
        )
        await self._zc.async_register_service(self.info)

    async def stop(self) -> None:
        if self._zc is not None:
            await self._zc.async_unregister_all_services()
            await self._zc.async_close()
            self._zc = None


def local_addresses(hosts: Sequence[str]) -> list[str]:
    """Addresses to advertise for the listen hosts (a wildcard means 'ask the OS')."""
    if not any(host in ("0.0.0.0", "::", "") for host in hosts):
        return list(hosts)
    try:
        return sorted({i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None)})
    except OSError:
        return []
