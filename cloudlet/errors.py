"""Every error the package raises on purpose, written for the operator.

Each message says what went wrong *and* what to do next, because the person
reading it is an admin in a vehicle with a radio, not the author of the code.
Other parts of the package add their own subclasses; catch ``CloudletError``
to handle them all.
"""

from __future__ import annotations

__all__ = [
    "AuditError",
    "AuthenticationError",
    "BundleRefused",
    "CertificateError",
    "CloudletError",
    "CloudletRefused",
    "CloudletUnreachable",
    "CodeExhausted",
    "CodeFormatError",
    "CodeMismatch",
    "ConfigError",
    "ConflictError",
    "CryptoError",
    "DecryptionError",
    "DeviceClientError",
    "DeviceForbidden",
    "ExpiredIdentityError",
    "FormatError",
    "IdentityError",
    "LabError",
    "ManagerError",
    "MigrationError",
    "PeerRefused",
    "NoCredentialError",
    "NotFoundError",
    "PairingError",
    "PayloadTooLarge",
    "PeerAuthError",
    "ProtocolError",
    "RadioError",
    "ReplayError",
    "RequestError",
    "RequestTimeout",
    "StorageError",
    "SvmImageError",
    "SvmUnreachable",
    "TooManyRequests",
    "UnsupportedMediaType",
    "WeakPassphrase",
    "WrongPassphrase",
]


class CloudletError(Exception):
    """Base class: anything the package raises deliberately.

    ``hint`` is the next step for the operator; ``str()`` includes it so that
    a bare ``print(err)`` or an Ansible ``fail_json(msg=str(err))`` is useful.
    """

    default_hint = ""

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        super().__init__(message)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} {self.hint}"
        return self.message


class FormatError(CloudletError):
    """Bytes that are not a valid encoding: truncated, unknown version, bad point."""

    default_hint = (
        "The file or message is damaged or was written by an incompatible "
        "version; copy it again from its source, and check both sides run "
        "the same cloudlet release."
    )


class StorageError(CloudletError):
    """A key or bundle file could not be read or written safely."""

    default_hint = "Check the path, its permissions and the free disk space."


class CryptoError(CloudletError):
    """A cryptographic check failed."""


class DecryptionError(CryptoError):
    """A ciphertext was altered, truncated, or is not for this key."""

    default_hint = (
        "The data was altered or is not meant for this key. Fetch it again; "
        "if it keeps failing, re-create the credentials for this device."
    )


class IdentityError(CloudletError):
    """An identity string is malformed, or belongs to someone else."""

    default_hint = "Check the cloudlet id, device id and validity period."


class ExpiredIdentityError(IdentityError):
    """The identity's validity period does not include the current time."""

    default_hint = (
        "The credential is outside its validity period. Check the clock on "
        "both machines; if the clock is right, pair the device again to get "
        "a key for the current period."
    )


class AuthenticationError(CloudletError):
    """A device could not prove it holds the key for its identity."""

    default_hint = (
        "The device's proof is not valid for this cloudlet. Check that the "
        "device was paired with this cloudlet and that its clock is right."
    )


class ReplayError(AuthenticationError):
    """A proof that was already used, or is outside the time window."""

    default_hint = (
        "The request was already seen or is too old. If this is a real "
        "device, check its clock; repeated replays point to an attacker on "
        "the network."
    )


class PairingError(CloudletError):
    """The voice-code pairing exchange failed."""

    default_hint = "Start the pairing again on both cloudlets."


class ProtocolError(PairingError):
    """A pairing message was malformed or arrived out of order."""

    default_hint = (
        "The pairing messages were garbled or out of order. Start the "
        "pairing again on both cloudlets; if it repeats, check the link."
    )


class CodeFormatError(PairingError):
    """A typed voice code has an unknown word or fails its check word."""

    default_hint = "Ask the other admin to read the code again, slowly, word by word."


class CodeMismatch(PairingError):
    """The two sides used different codes (or someone in between did)."""

    def __init__(self, message: str | None = None, attempts_left: int | None = None) -> None:
        self.attempts_left = attempts_left
        if attempts_left is None:
            tail = "a new code is needed after a few failures."
        elif attempts_left <= 0:
            tail = "this code is now used up: generate a new one."
        else:
            tail = f"{attempts_left} attempt(s) left with this code."
        super().__init__(
            message or "The code did not match.",
            f"Ask the other admin to read it again; {tail}",
        )


class CodeExhausted(PairingError):
    """The voice code failed too often and may no longer be used."""

    default_hint = "Generate a new code on one cloudlet and read it to the other admin."


class LabError(CloudletError):
    """The lab (machines, bridges, namespaces on the control node) failed."""

    default_hint = (
        "Run the lab play again with lab_state=absent to clear it, then bring it up again."
    )


class RadioError(LabError):
    """The simulated-radio check (a QEMU guest with mac80211_hwsim) could not run.

    A station that does not associate is a result, not this error: this is for a
    guest that could not be built, booted or read.
    """

    default_hint = (
        "Run `apt-get update` if a package could not be downloaded; delete "
        "/var/cache/cloudlet-radio to rebuild the guest from scratch."
    )


class AuditError(CloudletError):
    """The ceremony audit log could not be written, or does not verify."""

    default_hint = (
        "Run `python -m cloudlet.audit verify LOGFILE` to find the first bad line. "
        "Keep the damaged log as evidence and move it aside to start a new one."
    )


class SvmImageError(CloudletError):
    """A service VM image could not be built, or does not match its manifest."""

    default_hint = (
        "Delete the image directory and build it again on the control node "
        "(scripts/build-demo-svm); on a cloudlet, import the image again."
    )


# --- Cloudlet Manager and PKI ------------------------------------------------


class CertificateError(CloudletError):
    """A TLS certificate or key is unusable: bad names, wrong CA, damaged PEM."""

    default_hint = (
        "Re-run the cloudlet_pki role to re-issue the certificate; if the CA itself is "
        "damaged, restore it from backup (a new CA means every peer must pair again)."
    )


class MigrationError(CloudletError):
    """The migration ceremony could not reach, or move the SVM to, the target cloudlet."""

    default_hint = (
        "The service VM keeps running where it was. Fix what the message names and run "
        "migrate.yml again."
    )


class PeerRefused(MigrationError):
    """A paired cloudlet's Manager answered with an error: ``status``, and its own words
    in ``peer_message`` (the message adds who refused what)."""

    def __init__(self, message: str, hint: str | None, status: int, peer_message: str) -> None:
        super().__init__(message, hint)
        self.status = status
        self.peer_message = peer_message


class ManagerError(CloudletError):
    """The Cloudlet Manager refused a request or cannot run.

    ``status`` is the HTTP status the API answers with, so a handler raises
    the error and one middleware turns it into a JSON error body.
    """

    status = 500


class ConfigError(ManagerError):
    """The Manager's configuration file is missing, unreadable or wrong."""

    default_hint = (
        "Fix the configuration file (the cloudlet_manager role renders it) and restart "
        "the service."
    )


class RequestError(ManagerError):
    """A request body or parameter is malformed: nothing was changed."""

    status = 400
    default_hint = "Nothing was changed. Fix the request; GET /openapi.json describes it."


class PayloadTooLarge(RequestError):
    status = 413
    default_hint = "Nothing was changed. Send fewer items per request."


class UnsupportedMediaType(RequestError):
    status = 415
    default_hint = "Nothing was changed. Send the body as application/json."


class RequestTimeout(RequestError):
    """The client stopped sending its request body: the connection is not kept for it."""

    status = 408
    default_hint = (
        "Nothing was changed. Send the whole request at once; on a slow link, the "
        "cloudlet admin can raise limits.body_timeout."
    )


class NotFoundError(ManagerError):
    status = 404
    default_hint = "Check the id; list what exists with the admin API."


class ConflictError(ManagerError):
    """The request contradicts stored state (e.g. credentials for a revoked device)."""

    status = 409
    default_hint = "Nothing was changed. Check the record with the admin API first."


class PeerAuthError(ManagerError):
    """A caller of the peer API is not a paired cloudlet."""

    status = 403
    default_hint = (
        "Only paired cloudlets may call the peer API with their client certificate. "
        "Pair the two cloudlets (pair_cloudlets.yml) and check the certificate paths."
    )


class DeviceForbidden(ManagerError):
    """An authenticated device may not use the API (revoked, unknown, wrong period)."""

    status = 403
    default_hint = "Pair the device with this cloudlet again (pair_device.yml)."


class TooManyRequests(ManagerError):
    """A source failed device authentication too often: it is refused for a while.

    Refusing it is what keeps a flood of forged proofs from costing a pairing
    each; ``retry_after`` (seconds) becomes the Retry-After header.
    """

    status = 429
    default_hint = (
        "Wait for the Retry-After time and check the device's key and clock. "
        "Many of these in the log mean someone on the network is forging device proofs."
    )

    def __init__(self, message: str, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.retry_after = retry_after


# --- device client -----------------------------------------------------------


class WrongPassphrase(DecryptionError):
    """A passphrase-sealed file did not open: wrong passphrase, or altered."""

    default_hint = (
        "Type the passphrase again exactly as the cloudlet admin gave it (case, spaces "
        "and hyphens do not matter). If it still fails, the file was damaged or altered: "
        "ask the admin to export the bundle again."
    )


class WeakPassphrase(CloudletError):
    """A passphrase too short to seal a secret that can be guessed offline."""

    default_hint = (
        "Use a generated passphrase (cloudlet.device.sealed.generate_passphrase) or at "
        "least 6 random words."
    )


class DeviceClientError(CloudletError):
    """The device client could not do what was asked."""


class NoCredentialError(DeviceClientError):
    """The device holds no credential bundle yet, or it is unreadable."""

    default_hint = (
        "Import the bundle the cloudlet admin gave you: cloudlet-device import FILE "
        "(or ask the admin to run the device pairing ceremony again)."
    )


class BundleRefused(DeviceClientError):
    """A credential bundle that is well formed but must not be installed."""

    default_hint = (
        "Nothing was stored. Ask the cloudlet admin for this device's signed bundle "
        "(the device pairing ceremony exports it)."
    )


class CloudletUnreachable(DeviceClientError):
    """The Manager API could not be reached, or its TLS certificate was refused."""

    default_hint = (
        "Check that the device is on the cloudlet's network and that its clock is right; "
        "`cloudlet-device status` shows the API address it dials."
    )


class CloudletRefused(DeviceClientError):
    """The Manager answered with an error; ``status`` is its HTTP status."""

    def __init__(
        self, message: str, hint: str | None = None, status: int = 0, kind: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.kind = kind


class SvmUnreachable(DeviceClientError):
    """A service VM's name did not resolve, or it did not answer."""

    default_hint = (
        "Check that the device uses its cloudlet as DNS server and has a route to the "
        "SVM subnet (the device_client role), and that the SVM is running "
        "(`cloudlet-device locate SERVICE`)."
    )
