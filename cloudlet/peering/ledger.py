"""How often a voice code may still be tried, kept on disk across runs.

``pake.AttemptCounter`` counts in memory; a second playbook run, or two at
once, would each start afresh and so give an attacker more guesses than the
code allows. The ledger keeps one record per code in a 0700 directory:

    <digest>.json   {"limit", "used", "consumed", "expires"}   (0600)
    <digest>.lock   held (flock) by the one run using the code

The record is named by a digest of the code, never the code itself. A charge
is written (atomically, fsync'd) before ``charge`` returns, which is before
the key-confirmation MAC that lets a peer test the guess leaves the host:
a crash right after still counts. A code is refused once used up, once
consumed by a successful pairing, and after it expires.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cloudlet import formats
from cloudlet.crypto.codes import VoiceCode
from cloudlet.crypto.pake import DEFAULT_ATTEMPTS, AttemptCounter
from cloudlet.errors import CodeExhausted, PairingError, StorageError

__all__ = ["DEFAULT_LIFETIME", "CodeLedger"]

DEFAULT_LIFETIME = 600.0  # seconds a code is good for after it is made or first typed
_LABEL = b"CLOUDLET-V01-CODE-LEDGER"


class _Recorded(AttemptCounter):
    """An AttemptCounter that writes itself through on every change."""

    def __init__(self, save: Callable[[AttemptCounter], None], **state) -> None:
        super().__init__(**state)
        self._save = save

    def charge(self) -> None:
        super().charge()
        self._save(self)

    def succeed(self) -> None:
        super().succeed()
        self._save(self)


class CodeLedger:
    """The attempts of every voice code this cloudlet has made or been given."""

    def __init__(self, directory: str | os.PathLike, clock: Callable[[], float] = time.time):
        self.directory = Path(directory)
        self.clock = clock

    def _paths(self, code: VoiceCode) -> tuple[Path, Path]:
        digest = hashlib.sha256(_LABEL + b"\0" + code.secret()).hexdigest()[:32]
        return self.directory / f"{digest}.json", self.directory / f"{digest}.lock"

    def _prepare(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)
        except OSError as exc:
            raise StorageError(f"Cannot prepare {self.directory}: {exc.strerror}.") from exc

    def _load(self, path: Path, limit: int, lifetime: float) -> tuple[dict, float]:
        try:
            data = json.loads(path.read_text())
            expires = float(data["expires"])
            AttemptCounter.from_dict(data)  # refuses a damaged record
        except FileNotFoundError:
            return {"limit": limit, "used": 0, "consumed": False}, self.clock() + lifetime
        except (OSError, ValueError, KeyError, TypeError):
            raise CodeExhausted(
                f"The attempt record of this code ({path.name}) is damaged.",
                "Generate a new code on one cloudlet and read it to the other admin.",
            ) from None
        return {k: data[k] for k in ("limit", "used", "consumed")}, expires

    @contextlib.contextmanager
    def hold(
        self,
        code: VoiceCode,
        limit: int = DEFAULT_ATTEMPTS,
        lifetime: float = DEFAULT_LIFETIME,
    ) -> Iterator[AttemptCounter]:
        """The code's counter, for one exchange; a second holder is refused at once."""
        self._prepare()
        record, lock = self._paths(code)
        with open(lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                raise PairingError(
                    "Another pairing with this code is running on this cloudlet.",
                    "Let it finish (or stop it) before trying again.",
                ) from None
            state, expires = self._load(record, limit, lifetime)
            if self.clock() >= expires:
                raise CodeExhausted(
                    "This code has expired.",
                    "Generate a new code on one cloudlet and read it to the other admin.",
                )

            def save(counter: AttemptCounter) -> None:
                text = json.dumps(dict(counter.to_dict(), expires=expires), sort_keys=True)
                formats.write_secret_file(record, text.encode())

            counter = _Recorded(save, **state)
            counter.check()
            save(counter)  # the expiry starts with the first use
            yield counter
