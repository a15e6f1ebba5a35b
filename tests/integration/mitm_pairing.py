"""A man in the middle on the pairing segment, for test_pair_cloudlets.

    python mitm_pairing.py NETNS_TO_HOST NETNS_TO_JOIN HOST_ID JOIN_ID [TIMEOUT]

The test cuts the segment in two and puts this program where the halves
meet: in NETNS_TO_HOST it dials the host side as the join side would, in
NETNS_TO_JOIN it answers the join side as the host would. With each it runs
the real exchange on a code of its own guessing, posing as the other
cloudlet with a CA and IBE params of its own; a bundle it manages to open
on one half is what it would relay to the other. It prints one JSON line:
what each half ended with.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import sys
import threading
import time

from cloudlet import pki
from cloudlet.bundles import NetworkCredential, PairingBundle
from cloudlet.crypto import codes, ibe
from cloudlet.crypto.pake import AttemptCounter, Pairing
from cloudlet.errors import CloudletError
from cloudlet.peering.exchange import Channel, Exchange
from cloudlet.peering.link import HOST_ADDRESS, PORT

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def enter(netns: str) -> None:
    """Move the calling thread into a named network namespace (os.setns is 3.12+)."""
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {netns}")
    finally:
        os.close(fd)


def forged_bundle(posing_as: str) -> PairingBundle:
    """What the attacker would hand over: its own CA and params under a stolen name."""
    ca = pki.make_ca(pki.generate_key(), posing_as).decode()
    network = NetworkCredential("attacker-net", "peer:victim", "attacker-password")
    return PairingBundle(posing_as, ca, ibe.setup(posing_as).params, network,
                         f"manager.{posing_as}.cloudlet", 8443)


def half(netns: str, side: str, posing_as: str, victim: str, deadline: float,
         seen: dict) -> None:
    """One half: the real exchange with one victim, on a guessed code."""
    enter(netns)
    try:
        if side == "host":  # the join side dials the host address: be it
            with socket.create_server((HOST_ADDRESS, PORT)) as server:
                server.settimeout(deadline - time.monotonic())
                sock, _ = server.accept()
        else:
            while True:
                try:
                    sock = socket.create_connection((HOST_ADDRESS, PORT), timeout=2)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        guess = codes.generate_code()
        pairing = Pairing(posing_as, victim, guess, AttemptCounter())
        with sock:
            outcome = Exchange(pairing, forged_bundle(posing_as), lambda _: None,
                               lambda _: None).run(Channel(sock, deadline))
        seen[victim] = {"opened": outcome.peer.cloudlet_id}
    except (CloudletError, OSError) as exc:
        seen[victim] = {"failed": str(exc)}


def main() -> int:
    to_host, to_join, host_id, join_id = sys.argv[1:5]
    deadline = time.monotonic() + (float(sys.argv[5]) if len(sys.argv) > 5 else 120)
    seen: dict = {}
    halves = [threading.Thread(target=half, args=(to_host, "join", join_id, host_id,
                                                  deadline, seen)),
              threading.Thread(target=half, args=(to_join, "host", host_id, join_id,
                                                  deadline, seen))]
    for thread in halves:
        thread.start()
    for thread in halves:
        thread.join()
    print(json.dumps(seen), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
