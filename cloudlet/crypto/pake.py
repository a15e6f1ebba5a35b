"""Cloudlet pairing: SPAKE2 over the voice code, as an explicit state machine.

Both admins run the same code path; the role (SPAKE2 side A or B) comes
from the order of the two cloudlet ids, so nobody has to choose one.

    START --start()--> WAIT_ELEMENT --ELEMENT--> WAIT_CONFIRM --CONFIRM--> PAIRED
      any unexpected or malformed message, wrong code ...........--> FAILED

(``Pairing.TRANSITIONS`` is that table; both end states are terminal.)

Each side sends its SPAKE2 element, then, after receiving the peer's element,
a key-confirmation MAC over the transcript (purpose, both cloudlet ids, both
elements). A wrong code, or anyone in the middle without the code, makes
both confirmations fail, so *both* admins see CodeMismatch.

Every exchange that gets as far as sending our confirmation is charged to an
``AttemptCounter`` *before* the MAC goes out: the MAC is what lets a peer
test one guess, so an attacker who hangs up afterwards still pays for it.
A successful pairing uses the code up.

From the SPAKE2 key we derive one key per direction for sealing the pairing
bundles and a WPA3-SAE password. ``link_password`` derives the password for
the temporary link from the code itself, for bringing that link up before
the exchange can run over it (SAE is itself a PAKE, so this gives no offline
guessing either).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from spake2 import SPAKE2_A, SPAKE2_B

from cloudlet.crypto.codes import VoiceCode
from cloudlet.crypto.curve import Rng, default_rng
from cloudlet.crypto.identity import normalise_id
from cloudlet.errors import (
    CloudletError,
    CodeExhausted,
    CodeMismatch,
    PairingError,
    ProtocolError,
)

__all__ = [
    "DEFAULT_ATTEMPTS",
    "MSG_CONFIRM",
    "MSG_ELEMENT",
    "PURPOSE_CLOUDLET_PAIRING",
    "AttemptCounter",
    "Pairing",
    "PairingResult",
    "State",
    "link_password",
]

DEFAULT_ATTEMPTS = 3
PURPOSE_CLOUDLET_PAIRING = "cloudlet-pairing-v1"

MAGIC = b"CLPK"
VERSION = 1
MSG_ELEMENT = 1
MSG_CONFIRM = 2
_ELEMENT_BYTES = 33  # spake2 side byte + Ed25519 element
_CONFIRM_BYTES = 32
_MAX_PAYLOAD = 256

_LABEL_TRANSCRIPT = b"CLOUDLET-V01-PAKE-TRANSCRIPT"
_LABEL_KEYS = b"CLOUDLET-V01-PAKE-KEYS"
_LABEL_CONFIRM = b"CLOUDLET-V01-PAKE-CONFIRM"
_LABEL_LINK = b"CLOUDLET-V01-SAE-LINK"


def _lp(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _password(seed: bytes) -> str:
    """24 base32 characters (120 bits): safe in hostapd's sae_password."""
    return base64.b32encode(seed[:15]).decode("ascii")


class State(enum.Enum):
    START = "start"
    WAIT_ELEMENT = "wait-element"
    WAIT_CONFIRM = "wait-confirm"
    PAIRED = "paired"
    FAILED = "failed"


class AttemptCounter:
    """How many more exchanges one voice code may be used for.

    Shared by every ``Pairing`` made with the same code. ``to_dict`` and
    ``from_dict`` let a caller keep it across runs of a playbook.
    """

    def __init__(self, limit: int = DEFAULT_ATTEMPTS, used: int = 0, consumed: bool = False):
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ValueError("limit must be a positive int")
        if not isinstance(used, int) or isinstance(used, bool) or used < 0:
            raise ValueError("used must be a non-negative int")
        if not isinstance(consumed, bool):
            raise ValueError("consumed must be a bool")
        self.limit = limit
        self.used = used
        self.consumed = consumed

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def check(self) -> None:
        if self.consumed:
            raise CodeExhausted(
                "This code was already used for a successful pairing.",
                "Generate a new code for the next pairing.",
            )
        if self.remaining <= 0:
            raise CodeExhausted(f"This code failed {self.used} times and is no longer accepted.")

    def charge(self) -> None:
        self.check()
        self.used += 1

    def succeed(self) -> None:
        self.consumed = True

    def to_dict(self) -> dict:
        return {"limit": self.limit, "used": self.used, "consumed": self.consumed}

    @classmethod
    def from_dict(cls, data: dict) -> AttemptCounter:
        try:
            return cls(data["limit"], data["used"], data["consumed"])
        except (KeyError, TypeError, ValueError):
            raise CodeExhausted(
                "The saved attempt counter for this code is damaged.",
                "Generate a new code on one cloudlet and read it to the other admin.",
            ) from None


@dataclass(frozen=True, repr=False)
class PairingResult:
    my_id: str
    peer_id: str
    purpose: str
    transcript_hash: bytes
    session_key: bytes
    sae_password: str
    _send_key: bytes = field(compare=False)
    _recv_key: bytes = field(compare=False)

    def __repr__(self) -> str:
        return f"PairingResult({self.my_id!r} <-> {self.peer_id!r}, <secret>)"

    def bundle_key(self, sender_id: str) -> bytes:
        """The AEAD key for bundles sent by ``sender_id`` (one per direction)."""
        if sender_id == self.my_id:
            return self._send_key
        if sender_id == self.peer_id:
            return self._recv_key
        raise PairingError(f"{sender_id!r} is not part of this pairing.")


def encode_message(kind: int, payload: bytes) -> bytes:
    return MAGIC + bytes([VERSION, kind]) + struct.pack(">H", len(payload)) + payload


def decode_message(data: bytes) -> tuple[int, bytes]:
    if not isinstance(data, (bytes, bytearray)):
        raise ProtocolError("A pairing message must be bytes.")
    data = bytes(data)
    if len(data) < 8 or data[:4] != MAGIC:
        raise ProtocolError("That is not a pairing message (bad magic or too short).")
    if data[4] != VERSION:
        raise ProtocolError(
            f"Pairing message version {data[4]} is not supported (this side speaks {VERSION}).",
            "Run the same cloudlet release on both sides.",
        )
    kind = data[5]
    (length,) = struct.unpack(">H", data[6:8])
    payload = data[8:]
    if length != len(payload) or length > _MAX_PAYLOAD:
        raise ProtocolError("The pairing message is truncated or has trailing bytes.")
    expected = {MSG_ELEMENT: _ELEMENT_BYTES, MSG_CONFIRM: _CONFIRM_BYTES}.get(kind)
    if expected is None:
        raise ProtocolError(f"Unknown pairing message type {kind}.")
    if len(payload) != expected:
        raise ProtocolError(f"Pairing message type {kind} must carry {expected} bytes.")
    return kind, payload


def link_password(code: VoiceCode, id_one: str, id_two: str) -> str:
    """WPA3-SAE password for the temporary link, from the code and both ids."""
    if not isinstance(code, VoiceCode):
        raise TypeError("expected a VoiceCode")
    a, b = sorted((normalise_id(id_one, "cloudlet id"), normalise_id(id_two, "cloudlet id")))
    seed = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_lp(_LABEL_LINK, a.encode(), b.encode()),
    ).derive(code.secret())
    return _password(seed)


EV_START = "start"


class Pairing:
    """One side of one pairing attempt."""

    # The one place where the transitions are listed:
    # (state, event) -> (handler, next state). Anything else -> FAILED.
    TRANSITIONS = {
        (State.START, EV_START): ("_on_start", State.WAIT_ELEMENT),
        (State.WAIT_ELEMENT, MSG_ELEMENT): ("_on_element", State.WAIT_CONFIRM),
        (State.WAIT_CONFIRM, MSG_CONFIRM): ("_on_confirm", State.PAIRED),
    }

    def __init__(
        self,
        my_id: str,
        peer_id: str,
        code: VoiceCode,
        attempts: AttemptCounter,
        purpose: str = PURPOSE_CLOUDLET_PAIRING,
        rng: Rng | None = None,
    ) -> None:
        if not isinstance(code, VoiceCode):
            raise TypeError("code must be a VoiceCode (use codes.parse_code)")
        if not isinstance(attempts, AttemptCounter):
            raise TypeError("attempts must be an AttemptCounter")
        if not isinstance(purpose, str) or not purpose:
            raise TypeError("purpose must be a non-empty str")
        self.my_id = normalise_id(my_id, "cloudlet id")
        self.peer_id = normalise_id(peer_id, "peer cloudlet id")
        if self.my_id == self.peer_id:
            raise PairingError(
                f"Both sides are named {self.my_id!r}.",
                "Give the peer's cloudlet id, not this cloudlet's own.",
            )
        attempts.check()
        self.attempts = attempts
        self.purpose = purpose
        self.is_a = self.my_id < self.peer_id
        self.id_a, self.id_b = sorted((self.my_id, self.peer_id))
        self._rng = rng or default_rng
        self._code = code
        self._spake = None
        self._msg_a = self._msg_b = b""
        self._keys: dict[str, bytes] = {}
        self.state = State.START
        self.error: CloudletError | None = None
        self._result: PairingResult | None = None

    # --- public API ---

    def start(self) -> bytes:
        """Begin: returns our ELEMENT message for the peer."""
        return self._dispatch(EV_START, b"")

    def receive(self, message: bytes) -> bytes | None:
        """Feed one message from the peer; returns the reply to send, if any."""
        self._check_not_terminal()
        try:
            kind, payload = decode_message(message)
        except ProtocolError as exc:
            raise self._fail(exc) from None
        return self._dispatch(kind, payload)

    @property
    def result(self) -> PairingResult:
        if self.state is not State.PAIRED or self._result is None:
            raise PairingError(f"Pairing is not complete (state: {self.state.value}).")
        return self._result

    # --- machinery ---

    def _check_not_terminal(self) -> None:
        if self.state is State.FAILED:
            raise PairingError(
                f"This pairing attempt has already failed ({self.error.message})",
                "Start a new pairing attempt.",
            )
        if self.state is State.PAIRED:
            # Terminal too, but a stray or injected message must not undo a
            # completed pairing: refuse it and stay PAIRED.
            raise ProtocolError(
                "A pairing message arrived after the pairing was complete.",
                "The pairing itself succeeded; this extra message was ignored.",
            )

    def _dispatch(self, event, payload: bytes):
        self._check_not_terminal()
        entry = self.TRANSITIONS.get((self.state, event))
        if entry is None:
            what = "start" if event == EV_START else f"message type {event}"
            raise self._fail(ProtocolError(f"Unexpected {what} while in state {self.state.value}."))
        handler, next_state = entry
        try:
            reply = getattr(self, handler)(payload)
        except CloudletError as exc:
            raise self._fail(exc) from None
        except Exception as exc:  # noqa: BLE001 - spake2 and friends raise their own types
            raise self._fail(
                ProtocolError(f"The peer's pairing message was rejected ({type(exc).__name__}).")
            ) from exc
        self.state = next_state
        return reply

    def _fail(self, exc: CloudletError) -> CloudletError:
        """Enter FAILED, forget every secret, and hand back the error to raise."""
        self.state = State.FAILED
        self.error = exc
        self._keys.clear()
        self._spake = None
        self._result = None
        return exc

    def _on_start(self, _payload: bytes) -> bytes:
        cls = SPAKE2_A if self.is_a else SPAKE2_B
        self._spake = cls(
            self._code.secret(),
            idA=self.id_a.encode(),
            idB=self.id_b.encode(),
            entropy_f=self._rng,
        )
        element = self._spake.start()
        if self.is_a:
            self._msg_a = element
        else:
            self._msg_b = element
        return encode_message(MSG_ELEMENT, element)

    def _on_element(self, payload: bytes) -> bytes:
        if self.is_a:
            self._msg_b = payload
        else:
            self._msg_a = payload
        key = self._spake.finish(payload)
        # The SPAKE2 key already covers the code, both ids and both elements;
        # the transcript adds the purpose, so a code read out for one purpose
        # cannot complete an exchange for another.
        transcript = hashlib.sha256(
            _lp(
                _LABEL_TRANSCRIPT,
                self.purpose.encode("utf-8"),
                self.id_a.encode(),
                self.id_b.encode(),
                self._msg_a,
                self._msg_b,
            )
        ).digest()
        okm = HKDF(algorithm=hashes.SHA256(), length=192, salt=transcript, info=_LABEL_KEYS).derive(
            key
        )
        self._keys = {
            "confirm_a": okm[0:32],
            "confirm_b": okm[32:64],
            "session": okm[64:96],
            "a_to_b": okm[96:128],
            "b_to_a": okm[128:160],
            "sae": okm[160:192],
            "transcript": transcript,
        }
        mine = "a" if self.is_a else "b"
        # Charge the attempt before our MAC leaves: the MAC is what lets the
        # peer test a guess offline, so a peer who never sends its own
        # confirmation (or hangs up) has still paid for the guess.
        self.attempts.charge()
        return encode_message(MSG_CONFIRM, self._confirm_mac(mine))

    def _confirm_mac(self, role: str) -> bytes:
        return hmac.new(
            self._keys[f"confirm_{role}"],
            _lp(_LABEL_CONFIRM, role.encode(), self._keys["transcript"]),
            hashlib.sha256,
        ).digest()

    def _on_confirm(self, payload: bytes) -> None:
        peer = "b" if self.is_a else "a"
        if not hmac.compare_digest(payload, self._confirm_mac(peer)):
            raise CodeMismatch(
                f"The code did not match the one used by {self.peer_id!r} "
                "(or someone in between interfered).",
                attempts_left=self.attempts.remaining,
            )
        keys = self._keys
        send, recv = (
            (keys["a_to_b"], keys["b_to_a"]) if self.is_a else (keys["b_to_a"], keys["a_to_b"])
        )
        self._result = PairingResult(
            my_id=self.my_id,
            peer_id=self.peer_id,
            purpose=self.purpose,
            transcript_hash=keys["transcript"],
            session_key=keys["session"],
            sae_password=_password(keys["sae"]),
            _send_key=send,
            _recv_key=recv,
        )
        self._keys = {}
        self.attempts.succeed()
        return None
