"""The device client as a library: one object per state directory.

The CLI is a thin shell over ``DeviceClient``, so everything it does can be
driven (and tested) from Python: an Ansible module on the device, the
later wpa_supplicant step, or the integration tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudlet import pki
from cloudlet.device import importer, messages, pairing, svm
from cloudlet.device.api import DeviceApi, Endpoint, SvmLocation, parse_endpoint
from cloudlet.device.importer import Imported, PassphraseSource
from cloudlet.device.messages import Outcome
from cloudlet.device.network import ManualNetwork, NetworkJoiner
from cloudlet.device.progress import Progress, Silent
from cloudlet.device.store import DEFAULT_STATE_DIR, CredentialStore

__all__ = ["Credential", "DeviceClient", "Status"]


@dataclass(frozen=True)
class Credential:
    """What may be shown about a stored bundle: never the key or the password."""

    identity: str
    cloudlet: str
    valid_from: datetime
    valid_until: datetime
    ssid: str
    eap_identity: str
    eap_method: str

    def expired(self, now: datetime) -> bool:
        return now >= self.valid_until


@dataclass(frozen=True)
class Status:
    state_dir: str
    current: Credential
    api: Endpoint
    ca_fingerprint: str
    next: tuple[Credential, ...]


def _describe(bundle) -> Credential:
    ident = bundle.device_key.identity
    return Credential(
        str(ident),
        bundle.params.cloudlet_id,
        ident.period.not_before,
        ident.period.not_after,
        bundle.network.ssid,
        bundle.network.identity,
        bundle.network.eap_method,
    )


class DeviceClient:
    """Import, status, messages, locate and call, for one state directory."""

    def __init__(
        self,
        state_dir: str | os.PathLike = DEFAULT_STATE_DIR,
        api_override: str | None = None,
        timeout: float = 15.0,
        progress: Progress | None = None,
        network: NetworkJoiner | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = CredentialStore(state_dir)
        self.api_override = api_override
        self.timeout = timeout
        self.progress = progress or Silent()
        self.network = network or ManualNetwork()  # the seam for wpa_supplicant
        self.clock = clock or (lambda: datetime.now(UTC))

    def import_bundle(
        self,
        data: bytes,
        passphrase: PassphraseSource | None = None,
        expect_cloudlet: str | None = None,
    ) -> Imported:
        return importer.import_bundle(
            self.store, data, passphrase, expect_cloudlet, self.clock(), self.progress
        )

    def pairing_request(self, new: bool = False) -> pairing.PairingRequest:
        """The public key the cloudlet seals this device's first bundle to."""
        return pairing.request(self.store, new)

    def join(self, timeout: float = 60.0):
        """Join the network of the cloudlet that issued the current credential."""
        return self.network.join(self.store.current().network, timeout)

    def status(self) -> Status:
        bundle = self.store.current()
        return Status(
            str(self.store.root),
            _describe(bundle),
            parse_endpoint(bundle, self.api_override),
            pki.fingerprint(bundle.tls_ca_pem),
            tuple(_describe(b) for _path, b in self.store.next_bundles()),
        )

    def api(self) -> DeviceApi:
        """The device API of the cloudlet that issued the current credential."""
        return DeviceApi(self.store.current(), self.api_override, self.timeout, self.clock)

    def fetch_messages(
        self, ack: bool = True, wait: float = 0.0, poll: float = 2.0
    ) -> list[Outcome]:
        current = self.store.current()
        api = DeviceApi(current, self.api_override, self.timeout, self.clock)
        return messages.fetch_messages(
            api, self.store, current, ack, self.clock(), self.progress, wait, poll
        )

    def locate(self, service_id: str) -> SvmLocation:
        api = self.api()
        with self.progress.waiting(f"asking cloudlet {api.audience} where {service_id} runs"):
            location = api.locate(service_id)
        ports = ", ".join(map(str, location.ports)) or "none"
        self.progress.info(f"{location.service_id} is at {location.fqdn}, ports {ports}")
        return location

    def call(
        self, service_id: str, port: int | None = None, path: str = "/"
    ) -> tuple[SvmLocation, svm.SvmReply]:
        location = self.locate(service_id)
        reply = svm.call_svm(location, port, path, self.timeout, self.progress)
        return location, reply
