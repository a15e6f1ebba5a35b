"""The device client as a service (``cloudlet-device run``, the ``cloudlet-device`` unit).

Once an admin has pushed a credential, the device should need nobody: every
round the agent

1. reads the current credential (none yet: it waits for the pairing push);
2. starts the supplicant for that credential's network if it does not run
   with exactly that configuration (a new credential, a stopped unit); a
   supplicant that runs is left alone, since it retries by itself, and a
   refused device (revoked) is reported, not hammered with new attempts;
3. once on the network, fetches its messages, stores the credentials other
   cloudlets issued for after a migration, and acknowledges them;
4. follows its SVMs (migration step 6): a cloudlet's credential arrives only
   once the SVM runs there, so the agent makes it the credential in use,
   leaves the old cloudlet's network (no address or route left through it)
   and joins the new one in the same round.

It logs a line when the state changes, not every round, so the journal
reads as the device's history: paired, joined, credentials received, lost
the network, refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from cloudlet.device.client import DeviceClient
from cloudlet.device.network import NetworkJoiner, Supplicant
from cloudlet.errors import CloudletError, NoCredentialError

__all__ = ["ANY_CLOUDLET", "Agent", "parse_interfaces"]

ANY_CLOUDLET = ""  # the interface for every cloudlet (a radio)


def parse_interfaces(values: list[str]) -> dict[str, str]:
    """``[CLOUDLET=]IF`` options: a bare IF serves every cloudlet (one radio)."""
    out: dict[str, str] = {}
    for value in values:
        cloudlet, _, interface = value.rpartition("=")
        if not interface:
            raise ValueError(f"no interface in {value!r}")
        out[cloudlet] = interface
    return out


class Agent:
    """One device's rounds of join-then-fetch; ``run`` repeats them until stopped."""

    def __init__(
        self,
        client: DeviceClient,
        interfaces: Mapping[str, str],
        driver: str,
        say: Callable[[str], None],
        *,
        interval: float = 30.0,
        join_timeout: float = 60.0,
        network: Callable[[str, str], NetworkJoiner] = Supplicant,
    ) -> None:
        self.client = client
        self.interfaces = dict(interfaces)
        self.driver = driver
        self.say = say
        self.interval = interval
        self.join_timeout = join_timeout
        self.network = network
        self._networks: dict[str, NetworkJoiner] = {}
        self._last: dict[str, str] = {}  # what was last said, per topic
        self._on: str | None = None  # the interface the current credential uses

    def _report(self, topic: str, line: str) -> None:
        """Say ``line`` unless it is what was last said on ``topic``."""
        if self._last.get(topic) != line:
            self.say(line)
            self._last[topic] = line

    def _joiner(self, cloudlet: str) -> tuple[str, NetworkJoiner]:
        interface = self.interfaces.get(cloudlet) or self.interfaces.get(ANY_CLOUDLET)
        if interface is None:
            raise CloudletError(
                f"No interface is set for cloudlet {cloudlet}'s network.",
                f"Start the agent with --interface {cloudlet}=IF (or one --interface IF "
                "for a radio).",
            )
        return interface, self._net(interface)

    def _net(self, interface: str) -> NetworkJoiner:
        if interface not in self._networks:
            self._networks[interface] = self.network(interface, self.driver)
        return self._networks[interface]

    def round(self) -> None:
        """One pass; every error is reported (once while it lasts), never raised."""
        topic = "network"
        try:
            bundle = self.client.store.current()
            self._last.pop("credential", None)
            if self._network(bundle):
                topic = "messages"
                self._messages()
                topic = "network"
                self._follow(bundle)
        except NoCredentialError as exc:
            self._last = {"credential": self._last.get("credential", "")}
            self._report("credential", f"error: {exc.message}" if self.client.store.has_current()
                         else "no credential yet: waiting for an admin to pair this device")
        except CloudletError as exc:
            if topic == "network":
                self._last.pop("messages", None)
            hint = f" ({exc.hint})" if exc.hint else ""
            self._report(topic, f"error: {exc.message}{hint}")

    def _leave_others(self, interface: str) -> None:
        """One network at a time: another cloudlet's would keep a route to the SVMs.

        On the first round every other interface is left (a restart may find one
        still up); later, the one the previous credential used.
        """
        if self._on == interface:
            return
        others = {i for i in self.interfaces.values() if i != interface}
        for other in sorted(others if self._on is None else others & {self._on}):
            self._net(other).leave()
            if self._on is not None:
                self.say(f"left the network on {other}")
        self._on = interface

    def _network(self, bundle) -> bool:
        """Whether the device is on its cloudlet's network (joining it if need be)."""
        cred = bundle.network
        interface, net = self._joiner(bundle.params.cloudlet_id)
        self._leave_others(interface)
        if net.runs(cred):
            lease = net.refresh(cred)
            if lease is None:
                self._report("network", f"waiting for {cred.ssid} on {interface} "
                                        f"(802.1X as {cred.identity})")
                return False
        else:
            self._last.pop("network", None)
            self.say(f"joining {cred.ssid} on {interface} as {cred.identity}")
            lease = net.join(cred, self.join_timeout)
        address = (lease or {}).get("ADDRESS", "address set by hand")
        self._report("network", f"on {cred.ssid} ({interface}, {address}) "
                                f"as {bundle.device_key.identity}")
        return True

    def _messages(self) -> None:
        outcomes = self.client.fetch_messages(ack=True)
        stored = sum(1 for o in outcomes if o.stored)
        failed = [o for o in outcomes if not o.ok]
        line = (f"messages: {len(self.client.store.next_bundles())} credential(s) kept "
                "for the next cloudlet")
        if stored:
            self._last.pop("messages", None)
            line += f", {stored} new"
        if failed:
            line += f"; {len(failed)} not handled: {failed[0].error}"
        self._report("messages", line)

    def _follow(self, bundle) -> None:
        here = bundle.params.cloudlet_id
        waiting = sorted(b.params.cloudlet_id for _path, b in self.client.store.next_bundles())
        if not waiting:
            return
        there = next((c for c in waiting if c != here), here)
        new = self.client.store.promote(there)
        if there == here:
            return  # a crash after the last promotion left its copy behind
        self.say(f"following the SVMs to {there}: credential {new.device_key.identity} in use")
        self._last.pop("network", None)
        self._network(new)  # leaves the old cloudlet's network, joins the new one

    def run(self, stop: threading.Event) -> None:
        """Rounds every ``interval`` seconds until ``stop`` is set (SIGTERM)."""
        self.say(f"started: driver {self.driver}, a round every {self.interval:.0f} s")
        while not stop.is_set():
            self.round()
            stop.wait(self.interval)
        self.say("stopped")
