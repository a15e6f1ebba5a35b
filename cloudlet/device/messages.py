"""Fetching messages: open, verify and keep new credentials, then acknowledge.

Migration steps 4 and 5: the target cloudlet issues the device a bundle
sealed to its current identity, and the current cloudlet queues it. The
order here is what makes delivery safe:

1. open it with the device's current key and check the issuer's signature
   against the issuer params the *current* cloudlet vouches for (they come
   over TLS authenticated by the bundle's CA);
2. check the new key is this device's own (same device id and home) and
   not expired, which the bundle format alone does not guarantee;
3. store it atomically as the next credential;
4. only then acknowledge, which lets the cloudlet drop the ciphertext.

A message that fails any step is reported and left unacknowledged, so the
admin can see it (``/admin/messages``) and nothing is lost. A crash
between 3 and 4 just repeats the delivery: storing the same bundle again
changes nothing, and the ack is idempotent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cloudlet import bundles, formats
from cloudlet.bundles import DeviceBundle
from cloudlet.crypto.identity import DEFAULT_SKEW
from cloudlet.device.api import DeviceApi, Message
from cloudlet.device.progress import Progress, Silent
from cloudlet.device.store import CredentialStore
from cloudlet.errors import BundleRefused, CloudletError, CryptoError, ExpiredIdentityError

__all__ = ["CREDENTIALS", "Outcome", "fetch_messages", "open_credentials", "wait_for_messages"]

CREDENTIALS = "credentials"


@dataclass(frozen=True)
class Outcome:
    """What happened to one message. ``error`` is set when it was not handled."""

    message: Message
    stored: Path | None = None
    acked: bool = False
    error: CloudletError | None = None
    identity: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def open_credentials(
    current: DeviceBundle, message: Message, now: datetime | None = None
) -> DeviceBundle:
    """Open a credentials message with the current key; every check, nothing stored."""
    if message.issuer_params is None:
        raise BundleRefused(
            f"Cloudlet {message.issuer!r}, which issued this credential, is no longer paired "
            f"with {current.params.cloudlet_id!r}, so its signature cannot be checked.",
            "The message was left on the cloudlet. Ask the admins to pair the two cloudlets "
            "again, then fetch messages again.",
        )
    issuer = formats.decode_params(message.issuer_params)
    if issuer.cloudlet_id != message.issuer:
        raise CryptoError(
            f"The message claims issuer {message.issuer!r} but carries the params of "
            f"{issuer.cloudlet_id!r}.",
            "The message was left on the cloudlet; report it to its admin.",
        )
    bundle = bundles.open_device_bundle(current.device_key, message.body, issuer)
    mine, new = current.device_key.identity, bundle.device_key.identity
    if (new.device_id, new.home_cloudlet) != (mine.device_id, mine.home_cloudlet):
        raise BundleRefused(
            f"The credential is for {new.device_name} of {new.home_cloudlet}, but this device "
            f"is {mine.device_name} of {mine.home_cloudlet}.",
            "The message was left on the cloudlet; report it to its admin.",
        )
    now = now or datetime.now(UTC)
    if now >= new.period.not_after + DEFAULT_SKEW:
        raise ExpiredIdentityError(f"The credential for {new} has already expired.")
    return bundle


def _handle(
    api: DeviceApi,
    store: CredentialStore,
    current: DeviceBundle,
    message: Message,
    ack: bool,
    now: datetime | None,
    progress: Progress,
) -> Outcome:
    if message.kind != CREDENTIALS:
        return Outcome(
            message,
            error=BundleRefused(
                f"Message {message.message_id} is of kind {message.kind!r}, which this client "
                "does not know.",
                "It was left on the cloudlet. Update the device client.",
            ),
        )
    try:
        bundle = open_credentials(current, message, now)
        path, _changed = store.install_next(bundle)
    except CloudletError as exc:
        return Outcome(message, error=exc)
    identity = str(bundle.device_key.identity)
    progress.info(f"message {message.message_id}: credential {identity} verified, stored in {path}")
    if not ack:
        return Outcome(message, path, identity=identity)
    try:
        api.ack(message.message_id)
    except CloudletError as exc:
        return Outcome(message, path, error=exc, identity=identity)
    progress.info(f"message {message.message_id}: acknowledged")
    return Outcome(message, path, acked=True, identity=identity)


def wait_for_messages(
    api: DeviceApi, wait: float = 0.0, poll: float = 2.0, progress: Progress | None = None
) -> list[Message]:
    """Pending messages; with ``wait``, poll until one arrives or ``wait`` seconds pass.

    During a migration the device may ask before the credentials are queued:
    waiting here saves the user re-running the command by hand.
    """
    progress = progress or Silent()
    deadline = time.monotonic() + max(0.0, wait)
    what = f"fetching messages from cloudlet {api.audience} at {api.endpoint}"
    if wait > 0:
        what += f" (waiting up to {wait:.0f} s for one)"
    with progress.waiting(what):
        while True:
            pending = api.messages()
            if pending or time.monotonic() >= deadline:
                break
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
    progress.info(f"{len(pending)} message(s) waiting")
    return pending


def fetch_messages(
    api: DeviceApi,
    store: CredentialStore,
    current: DeviceBundle,
    ack: bool = True,
    now: datetime | None = None,
    progress: Progress | None = None,
    wait: float = 0.0,
    poll: float = 2.0,
) -> list[Outcome]:
    """Fetch every pending message and handle each; one bad message stops none."""
    progress = progress or Silent()
    pending = wait_for_messages(api, wait, poll, progress)
    return [_handle(api, store, current, m, ack, now, progress) for m in pending]
