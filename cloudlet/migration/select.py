"""target=auto: the paired cloudlet a service VM should move to, measured now.

Each candidate in turn, as the migration itself would reach it: join its
field network with the credential it issued us (``discover.reach``: 802.1X,
DNS-SD, mutual TLS with the paired CA), ask whether it could take this SVM
(``POST /peer/svms/check``: the same kernel, initrd and base image, and the
memory), then time ``GET /peer/probe`` over the link. An uplink that this
survey brought up is taken down again, so a single radio can visit every
candidate; the chosen one is joined again by the migration's own step 2.

Only a candidate that fits can be chosen, whatever its link. Among those the
fastest link wins: on a tactical link the transfer is the migration's time
and, with the queue it builds, its downtime. Free memory breaks a tie
(rates within ``TIE`` of each other).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudlet.admin_client import AdminClient
from cloudlet.errors import CloudletError, MigrationError, PeerRefused
from cloudlet.migration.discover import Uplink, reach
from cloudlet.migration.peer import peer_link

__all__ = ["Candidate", "choose", "rank", "survey"]

TIE = 0.10  # link rates closer than this (relative) count as equal


@dataclass
class Candidate:
    """One paired cloudlet, as the survey found it."""

    cloudlet_id: str
    interface: str
    rate_mbit: float | None = None
    mem_available_mib: int | None = None
    fits: bool = False
    reason: str = ""  # why it cannot be chosen

    def describe(self) -> str:
        rate = f"{self.rate_mbit:.1f} Mbit/s" if self.rate_mbit is not None else "rate ?"
        memory = (f"{self.mem_available_mib} MiB free" if self.mem_available_mib is not None
                  else "memory ?")
        state = "fits" if self.fits else f"not eligible: {self.reason}"
        return f"{self.cloudlet_id}: {rate}, {memory}, {state}"

    def as_dict(self) -> dict:
        return {"cloudlet_id": self.cloudlet_id, "interface": self.interface,
                "rate_mbit": self.rate_mbit, "mem_available_mib": self.mem_available_mib,
                "fits": self.fits, "reason": self.reason}


def rank(candidates: Sequence[Candidate]) -> list[Candidate]:
    """The eligible candidates, best first."""
    eligible = [c for c in candidates if c.fits and c.rate_mbit]
    best_rate = max((c.rate_mbit for c in eligible), default=0.0)

    def key(c: Candidate) -> tuple:
        # Rates within TIE of the best are one class; memory decides inside it.
        near_best = c.rate_mbit >= best_rate * (1 - TIE)
        return (not near_best, -(c.mem_available_mib or 0) if near_best else -c.rate_mbit,
                c.cloudlet_id)

    return sorted(eligible, key=key)


def choose(candidates: Sequence[Candidate]) -> Candidate:
    ranked = rank(candidates)
    if not ranked:
        found = "; ".join(c.describe() for c in candidates) or "none named"
        raise MigrationError(
            f"No paired cloudlet can take the service VM now ({found}).",
            "Provision the SVM's images on a paired cloudlet (setup.yml), bring one in "
            "reach, or name a target with -e target=NAME. Nothing was moved.",
        )
    return ranked[0]


def survey(admin: AdminClient, candidate: Candidate, meta: dict, cert: str | Path,
           key: str | Path, timeout: float,
           uplink_factory: Callable[[str], Uplink] = Uplink) -> Candidate:
    """Fill in one candidate's figures; any failure becomes its ``reason``."""
    uplink = uplink_factory(candidate.interface)
    target = None
    try:
        target = reach(admin, peer_link(admin, candidate.cloudlet_id), uplink, cert, key,
                       timeout)
        candidate.mem_available_mib = target.info.get("mem_available_mib")
        candidate.rate_mbit = round(target.client.link_rate() / 1e6, 1)
        answer = target.client.request("POST", "/peer/svms/check", meta)
        candidate.mem_available_mib = answer.get("mem_available_mib",
                                                 candidate.mem_available_mib)
        candidate.fits = True
    except CloudletError as exc:
        # The peer's own words, without who refused what.
        candidate.reason = exc.peer_message if isinstance(exc, PeerRefused) else exc.message
    finally:
        if target is None or target.joined:
            uplink.leave()
    return candidate
