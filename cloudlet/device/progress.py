"""Progress reporting: one status line per step, and a tick while a step waits.

A soldier watching a device over a slow tactical link needs to tell "still
working" from "hung". Library code reports through a ``Progress`` object;
the CLI passes ``Console`` (lines on a stream, a "still waiting" line every
few seconds during a blocking step), tests and other callers ``Silent``.
Nothing secret is ever handed to a reporter: callers pass only names,
identities, addresses and counts.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Protocol, TextIO

__all__ = ["Console", "Progress", "Silent"]


class Progress(Protocol):
    def info(self, text: str) -> None:
        """Report a finished step or a fact."""

    def waiting(self, text: str) -> contextlib.AbstractContextManager[None]:
        """Report a step that blocks (network, KDF) for as long as it lasts."""


class Silent:
    """Reports nothing: for library callers that print their own results."""

    def info(self, text: str) -> None:
        pass

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        yield


class Console:
    """Status lines on ``stream`` (stdout by default), prefixed with the program name."""

    def __init__(
        self, stream: TextIO | None = None, prefix: str = "cloudlet-device", tick: float = 5.0
    ) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.prefix = prefix
        self.tick = tick
        self._lock = threading.Lock()

    def info(self, text: str) -> None:
        with self._lock:
            print(f"{self.prefix}: {text}", file=self.stream, flush=True)

    @contextlib.contextmanager
    def waiting(self, text: str) -> Iterator[None]:
        self.info(f"{text} ...")
        done = threading.Event()
        start = time.monotonic()

        def ticker() -> None:
            while not done.wait(self.tick):
                self.info(f"  still waiting: {text} ({time.monotonic() - start:.0f} s)")

        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
