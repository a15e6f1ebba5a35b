"""Joining a cloudlet's network: the seam for wpa_supplicant (migration step 6).

This release does not join networks itself: the device is on its
cloudlet's network already (paired in place, or the lab's wired 802.1X),
and the later step adds a ``NetworkJoiner`` that drives wpa_supplicant with
a bundle's ``NetworkCredential`` (EAP-pwd or EAP-TLS, never a PSK), then
makes the next credential current once the join succeeded. Everything
else in the client already takes the joiner as a parameter, so that step
plugs in here without touching the rest.
"""

from __future__ import annotations

from typing import Protocol

from cloudlet.bundles import NetworkCredential
from cloudlet.errors import DeviceClientError

__all__ = ["ManualNetwork", "NetworkJoiner"]


class NetworkJoiner(Protocol):
    def join(self, credential: NetworkCredential, timeout: float) -> None:
        """Associate and authenticate with the network, or raise a CloudletError."""

    def current_ssid(self) -> str | None:
        """The SSID the device is on now, if known."""


class ManualNetwork:
    """Until the wpa_supplicant joiner exists: joining is the user's job."""

    def join(self, credential: NetworkCredential, timeout: float) -> None:
        raise DeviceClientError(
            "This device client does not join networks yet.",
            f"Join SSID {credential.ssid!r} with EAP-{credential.eap_method.upper()} as "
            f"{credential.identity!r} using the device's network settings.",
        )

    def current_ssid(self) -> str | None:
        return None
