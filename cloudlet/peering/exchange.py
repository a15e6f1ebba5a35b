"""The pairing exchange between two cloudlets, over one byte stream.

Both sides run the same steps; each sends its message for a step, then
reads the peer's (the messages are small, so neither side blocks the other):

1. ``PAKE``   SPAKE2 element (``pake.Pairing``);
2. ``PAKE``   key confirmation, charged to the code's ledger before it is sent;
3. ``BUNDLE`` our pairing bundle sealed under this pairing's send key (type 8);
4. ``FINISH`` after the peer's bundle is opened, checked and *staged*:
   HMAC-SHA256 under the session key over the sender's id and the digests of
   both sealed bundles, so it says "I hold exactly what you sent me".

A side that reads a valid FINISH knows the peer staged it. Neither side may
keep trust the other did not also take, and the last message of any exchange
can be lost or altered; so what the caller stages stays *pending*: usable for
nothing until the first authenticated call between the two Managers, which
each side can only make (or answer) if the other holds it too. Any failure
before this side has read the peer's FINISH makes the caller drop what it
staged (``Exchange.run`` calls ``unstage``).

When a side fails it tells the peer in an ``ABORT`` frame (its reason, for
the peer admin's message; unauthenticated, so it is only ever shown, never
trusted) and closes.

Frames: type (1 byte), length (4 bytes, big endian), payload; at most 64 KiB.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloudlet import bundles
from cloudlet.bundles import PairingBundle
from cloudlet.crypto.pake import Pairing, PairingResult
from cloudlet.errors import CloudletError, CodeMismatch, PairingError, ProtocolError

__all__ = ["FRAME_MAX", "Channel", "Exchange", "Outcome"]

FRAME_MAX = 64 * 1024
F_PAKE, F_BUNDLE, F_FINISH, F_ABORT = 1, 2, 3, 4
_NAMES = {F_PAKE: "PAKE", F_BUNDLE: "BUNDLE", F_FINISH: "FINISH", F_ABORT: "ABORT"}
_HEADER = struct.Struct(">BI")
_LABEL_FINISH = b"CLOUDLET-V01-PAIRING-FINISH"


class Channel:
    """Frames over a connected socket, every read bounded by one deadline."""

    def __init__(self, sock: socket.socket, deadline: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sock = sock
        self.deadline = deadline
        self.clock = clock

    def send(self, kind: int, payload: bytes) -> None:
        self._settimeout()
        try:
            self.sock.sendall(_HEADER.pack(kind, len(payload)) + payload)
        except TimeoutError:
            raise PairingError("Timed out sending to the other cloudlet.") from None
        except OSError as exc:
            raise PairingError(f"The other cloudlet hung up ({exc.strerror}).") from None

    def _settimeout(self) -> None:
        left = self.deadline - self.clock()
        if left <= 0:
            raise PairingError(
                "Timed out: the other cloudlet did not answer in time.",
                "Check that the other admin is running the pairing too, then start again.",
            )
        self.sock.settimeout(left)

    def _read(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self._settimeout()
            try:
                chunk = self.sock.recv(n - len(out))
            except TimeoutError:
                self._settimeout()  # raises once the deadline has passed
                continue
            except OSError as exc:
                raise PairingError(f"The other cloudlet hung up ({exc.strerror}).") from None
            if not chunk:
                raise PairingError(
                    "The other cloudlet hung up in the middle of the pairing.",
                    "Ask the other admin what their side said, then start again on both.",
                )
            out += chunk
        return out

    def recv(self, expected: int) -> bytes:
        kind, length = _HEADER.unpack(self._read(_HEADER.size))
        if length > FRAME_MAX:
            raise ProtocolError(f"A pairing frame of {length} bytes is too large.")
        payload = self._read(length)
        if kind == F_ABORT:
            reason = payload.decode("utf-8", "replace")[:300]
            raise PairingError(f"The other cloudlet stopped the pairing: {reason}",
                               "Start the pairing again on both cloudlets.")
        if kind != expected:
            raise ProtocolError(f"Expected a {_NAMES.get(expected)} frame, "
                                f"got {_NAMES.get(kind, kind)}.")
        return payload


@dataclass(frozen=True)
class Outcome:
    result: PairingResult
    peer: PairingBundle


class Exchange:
    """One side's run of the steps above; ``stage``/``unstage`` keep the peer pending."""

    def __init__(
        self,
        pairing: Pairing,
        bundle: PairingBundle,
        stage: Callable[[PairingBundle], None],
        unstage: Callable[[PairingBundle], None],
    ) -> None:
        self.pairing = pairing
        self.bundle = bundle
        self.stage = stage
        self.unstage = unstage

    def _finish_mac(self, result: PairingResult, sender: str, sent: bytes, got: bytes) -> bytes:
        return hmac.new(
            result.session_key,
            b"".join(struct.pack(">I", len(p)) + p for p in (
                _LABEL_FINISH, sender.encode(), hashlib.sha256(sent).digest(),
                hashlib.sha256(got).digest())),
            hashlib.sha256,
        ).digest()

    def run(self, channel: Channel) -> Outcome:
        staged: PairingBundle | None = None
        try:
            channel.send(F_PAKE, self.pairing.start())
            confirm = self.pairing.receive(channel.recv(F_PAKE))
            channel.send(F_PAKE, confirm)
            self.pairing.receive(channel.recv(F_PAKE))
            result = self.pairing.result

            mine = bundles.seal_pairing_bundle(result, self.bundle)
            channel.send(F_BUNDLE, mine)
            theirs = channel.recv(F_BUNDLE)
            peer = bundles.open_pairing_bundle(result, theirs)
            self.stage(peer)
            staged = peer
            channel.send(F_FINISH, self._finish_mac(result, result.my_id, mine, theirs))
            got = channel.recv(F_FINISH)
            # The peer's FINISH covers what it sent (theirs) and what it got (mine).
            if not hmac.compare_digest(got, self._finish_mac(result, result.peer_id, theirs,
                                                             mine)):
                raise ProtocolError(
                    "The other cloudlet's final confirmation does not match what was exchanged "
                    "(altered in transit).",
                    "Nothing was kept. Start the pairing again on both cloudlets.",
                )
            return Outcome(result, peer)
        except CodeMismatch as exc:
            # What the admin needs, whichever side saw it first; the attempts
            # left are in the hint.
            plain = CodeMismatch("The code did not match.", exc.attempts_left)
            self._abort(channel, plain)
            raise plain from None
        except CloudletError as exc:
            if staged is not None:
                self.unstage(staged)
            self._abort(channel, exc)
            if isinstance(exc, PairingError):
                raise
            # A refused bundle (altered, another cloudlet's): say it in pairing terms.
            raise PairingError(exc.message, "Nothing was kept. Start the pairing again on "
                                            "both cloudlets.") from exc

    @staticmethod
    def _abort(channel: Channel, exc: CloudletError) -> None:
        """Tell the peer why, if it still listens; never mask the real error."""
        try:
            channel.sock.settimeout(1.0)
            reason = exc.message.encode("utf-8")[:300]
            channel.sock.sendall(_HEADER.pack(F_ABORT, len(reason)) + reason)
        except OSError:
            pass
