"""A per-source limit on failed device proofs, so forging them cannot eat the CPU.

A forged proof costs the cloudlet one pairing (a few milliseconds) and costs
the forger nothing, so without a limit four flooders slow every real device
down. After ``max_failures`` failed proofs within ``window`` seconds, a source
address is refused with 429 for ``cooldown`` seconds, before any pairing is
computed. Other addresses are unaffected.

Memory is bounded: at most ``max_sources`` addresses are remembered. When
full, the address whose last failure is oldest is forgotten first; its window
and cool-down have most likely ended already.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cloudlet.errors import TooManyRequests

__all__ = ["FailureLimiter"]

log = logging.getLogger("cloudlet.manager")


@dataclass
class _Source:
    window_start: float
    failures: int = 0
    blocked_until: float = 0.0


class FailureLimiter:
    """Counts failed device proofs per source address (used on the event loop only)."""

    def __init__(
        self,
        max_failures: int = 10,
        window: float = 60.0,
        cooldown: float = 60.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_failures < 1 or window <= 0 or cooldown <= 0 or max_sources < 1:
            raise ValueError("FailureLimiter limits must be positive")
        self.max_failures = max_failures
        self.window = window
        self.cooldown = cooldown
        self.max_sources = max_sources
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()  # oldest failure first

    def __len__(self) -> int:
        return len(self._sources)

    def check(self, source: str) -> None:
        """Raise TooManyRequests while ``source`` is cooling down."""
        entry = self._sources.get(source)
        if entry is None:
            return
        wait = entry.blocked_until - self._clock()
        if wait > 0:
            raise TooManyRequests(
                f"Too many failed device proofs from {source}; "
                f"its requests are refused for {math.ceil(wait)} s more.",
                retry_after=math.ceil(wait),
            )

    def failed(self, source: str) -> None:
        """Count one failed proof from ``source``; the last one allowed starts the cool-down."""
        now = self._clock()
        entry = self._sources.pop(source, None)
        if entry is None or now - entry.window_start >= self.window:
            entry = _Source(now, blocked_until=entry.blocked_until if entry else 0.0)
        entry.failures += 1
        if entry.failures >= self.max_failures:
            entry.blocked_until = now + self.cooldown
            entry.window_start, entry.failures = now, 0
            log.warning(
                "Refusing device requests from %s for %g s: %d failed proofs within %g s.",
                source,
                self.cooldown,
                self.max_failures,
                self.window,
            )
        self._sources[source] = entry  # re-inserted last: the most recent failure
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
