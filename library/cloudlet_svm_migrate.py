#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_svm_migrate
short_description: Live-migrate a service VM to a paired cloudlet over TLS
description:
  - Migration steps 3 and 4. Runs on the source cloudlet, as root, with the cloudlet venv's
    interpreter (libvirt-python), after M(cloudlet_discover) found the target's Manager.
  - Sends the SVM's metadata to the target's repository, which refuses it, before anything
    moves, unless it holds the same kernel, initrd and base image (sha256) and the memory.
  - Makes the SVM's empty overlay on the target, then migrates with libvirt live,
    peer-to-peer, over TLS, copying only the overlay (incremental storage copy); persistent
    on the target, undefined here once it runs there.
  - On any failure, timeout or interrupt before libvirt's commit point the SVM keeps running
    here, the target's overlay and pending record are removed, and no credential is asked
    for.
  - Once the SVM runs on the target, asks it in one batch for credentials for every device
    of ours that uses the SVM, sealed to each device (RV(messages), ciphertext only), for
    M(cloudlet_credential_push) to queue.
  - After the move, asks the target's Manager whether the SVM takes connections on its ports
    (at its C(svm.ip=) address, on the target's SVM network). One that does not within
    O(health_wait) seconds is restarted on the target (a hard reset; its disk came through,
    its memory did not) and given O(restart_wait) seconds; one still silent fails the task,
    before any device is sent there.
  - With the SVM already on the target (a second run) nothing moves; only a handoff that a
    first run did not reach is completed.
options:
  name:
    description:
      - The SVM (libvirt domain and service id).
    type: str
    required: true
  peer:
    description:
      - The target cloudlet's id.
    type: str
    required: true
  address:
    description:
      - The target's address, as M(cloudlet_discover) found it; the Manager, libvirtd and
        the migration stream are reached there.
    type: str
    required: true
  port:
    description:
      - The target Manager's port, as M(cloudlet_discover) found it.
    type: int
    required: true
  fqdn:
    description:
      - The SVM's name in the SVM zone, which stays the same on every cloudlet.
    type: str
    required: true
  svm_dir:
    description:
      - The SVM store (C(<svm_dir>/<name>/manifest.json)).
    type: path
    required: true
  bandwidth:
    description:
      - Cap on QEMU's migration stream in MiB/s; V(0) for none. Just under the link's rate
        keeps the link's queue empty when the SVM pauses, which shortens downtime.
    type: int
    default: 0
  compression:
    description:
      - QEMU's migration compression. V(zstd) compresses every page QEMU sends, on parallel
        (multifd) connections; it needs libvirt 9.4 or newer on both cloudlets (Debian 12
        has 9.0, C(bookworm-backports) 11.3), and the module refuses it on an older one
        before anything moves. V(xbzrle) re-sends only the changes of pages the SVM dirties
        again during the copy. V("") for none.
      - Multithreaded zlib (C(mt)) is not offered; QEMU 10 dropped it, and QEMU 7.2's left
        the migrated guest's memory corrupt on the lab (docs/migration.md).
    type: str
    choices: ["", xbzrle, zstd]
    default: zstd
  connections:
    description:
      - Parallel connections QEMU sends the pages on, with V(zstd) compression (each
        compresses on its own thread); ignored otherwise.
    type: int
    default: 2
  max_downtime:
    description:
      - The longest pause QEMU aims for at the switch-over, in milliseconds, at first.
    type: int
    default: 50
  downtime_ceiling:
    description:
      - How far the pause QEMU aims for is raised, in milliseconds, while the copy does not
        converge. An SVM that writes memory about as fast as the link carries it leaves as
        much after every pass as before; when a pass (from the third on) starts with more
        than 80 % of what the one before started with, the aim doubles, at most every 2 s,
        up to this; V(0) never raises it. The figures report where it ended
        (C(max_downtime_ms)).
    type: int
    default: 2000
  timeout:
    description:
      - Seconds the live migration may take before it is aborted (the SVM stays here).
    type: int
    default: 900
  stall:
    description:
      - Seconds without a byte crossing the link (cut link, target's libvirtd gone) before
        the migration is aborted; the connections to the target are closed so that the
        abort does not wait for TCP to give up.
    type: int
    default: 30
  health_wait:
    description:
      - Seconds the moved SVM gets to take connections on every port of its manifest; V(0)
        skips the check. An SVM with no C(svm.ip=) address or no port is not checked.
    type: int
    default: 30
  restart_wait:
    description:
      - Seconds a restarted SVM gets to answer; V(0) fails at once instead of restarting.
    type: int
    default: 120
  progress_file:
    description:
      - A JSON file rewritten every half second with the phase, memory and disk left, rate
        and ETA.
    type: path
  uri:
    description:
      - This cloudlet's libvirt.
    type: str
    default: qemu:///system
  manager_config:
    description:
      - The Manager's configuration (cloudlet id, admin socket).
    type: path
    required: true
extends_documentation_fragment:
  - cloudlet_peer
attributes:
  check_mode:
    support: none
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - python >= 3.11
  - cloudlet (this project's package)
  - libvirt-python
"""

EXAMPLES = r"""
- name: Move demo-counter to cloudlet-b
  cloudlet_svm_migrate:
    name: demo-counter
    peer: cloudlet-b
    address: "{{ found.address }}"
    port: "{{ found.port }}"
    fqdn: demo-counter.svm.mission.internal
    svm_dir: /var/lib/cloudlet/svm
    bandwidth: 2
    manager_config: /etc/cloudlet/manager.toml
    peer_cert: /etc/cloudlet/pki/peer.pem
    peer_key: /etc/cloudlet/pki/private/peer.key
  register: moved
"""

RETURN = r"""
moved:
  description: Whether the SVM moved in this run (false when it already ran on the target).
  type: bool
  returned: success
figures:
  description: total_s, downtime_ms, bytes (memory and disk processed), rate_mib_s, the
    sizes moved, and max_downtime_ms, the downtime aim QEMU ended with.
  type: dict
  returned: when moved
health:
  description: The target's last answer (answering and silent ports, healthy, waited_s), and
    restarted when the SVM had to be restarted there; checked false when it was not checked.
  type: dict
  returned: when moved
messages:
  description: The target's sealed credentials for our devices ({device_id, kind, issuer,
    body}), for M(cloudlet_credential_push) O(mode=messages).
  type: list
  elements: dict
  returned: success
already:
  description: Devices that already hold (or wait for) a credential from the target.
  type: list
  elements: str
  returned: success
"""

import signal
import traceback
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.admin_client import AdminClient
    from cloudlet.errors import CloudletError, MigrationError
    from cloudlet.manager.config import load_config
    from cloudlet.migration import handoff
    from cloudlet.migration.peer import PeerClient, peer_link
    from cloudlet.migration.svm import (
        Settings,
        check_health,
        metadata,
        migrate_svm,
        svm_address,
    )
    from cloudlet.svm.domain import connect, read_state
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def _finish_on_target(client, name, here, peer):
    """The SVM is not here: it must run on the target. Its record there is committed
    (a no-op when it was), which also finishes a run cut short after the move."""
    try:
        client.request("POST", f"/peer/svms/{name}/commit")
    except MigrationError:
        raise MigrationError(
            f"SVM {name} does not run on this cloudlet ({here}), nor on {peer}.",
            "Check the name, and where it runs (virsh list on each cloudlet). Nothing was moved.",
        ) from None


def run(module):
    p = module.params
    config = load_config(p["manager_config"])
    admin = AdminClient(str(config.admin_socket))
    link = peer_link(admin, p["peer"])
    client = PeerClient(link, p["address"], p["port"], p["peer_cert"], p["peer_key"])
    conn = connect(p["uri"])
    here, dom = read_state(conn, p["name"])
    result = dict(moved=False, figures={})
    if here in ("running", "paused"):
        address = svm_address(dom)
        meta = metadata(p["name"], Path(p["svm_dir"]) / p["name"] / "manifest.json", p["fqdn"])
        settings = Settings(bandwidth_mib=p["bandwidth"], compression=p["compression"],
                            connections=p["connections"], max_downtime_ms=p["max_downtime"],
                            downtime_ceiling_ms=p["downtime_ceiling"], timeout=p["timeout"],
                            stall=p["stall"])
        dconn = connect(f"qemu+tls://{p['address']}/system")
        progress = Path(p["progress_file"]) if p["progress_file"] else None
        result["figures"] = migrate_svm(conn, dconn, client, p["name"], meta, p["address"],
                                        settings, progress)
        result["moved"] = True
    else:
        _finish_on_target(client, p["name"], here, p["peer"])
    # Had it come here by an earlier migration, our repository no longer holds it (a
    # second run removes what a first one cut short left).
    admin.request("DELETE", f"/admin/svms/{p['name']}")
    if result["moved"]:
        result["health"] = _health(p, client, dconn, address, meta["ports"])
    messages, already = handoff.request_credentials(admin, client, config.cloudlet_id,
                                                    p["name"], result["moved"])
    return dict(result, changed=result["moved"] or bool(messages), messages=messages,
                already=already)


def _health(p, client, dconn, address, ports):
    """Whether the moved SVM answers on the target; restarted there once if it does not."""
    if not p["health_wait"] or not address or not ports:
        return dict(checked=False)
    name, peer = p["name"], p["peer"]
    moved = check_health(client, name, address, ports, p["health_wait"])
    if moved["healthy"]:
        return dict(moved, checked=True, restarted=False)
    if p["restart_wait"]:
        dconn.lookupByName(name).reset(0)
        again = check_health(client, name, address, ports, p["restart_wait"])
        if again["healthy"]:
            return dict(again, checked=True, restarted=True, silent_after_move=moved["silent"])
    raise MigrationError(
        f"{name} moved to {peer} but does not answer there on port(s) "
        f"{', '.join(map(str, moved['silent']))} at {address}"
        + (", not even after a restart." if p["restart_wait"] else "."),
        f"Its disk came through. Look at its console on {peer} (virsh console {name}). "
        "No device was sent there yet: once it answers, run migrate.yml again, which "
        "finishes the handoff and moves nothing.",
    )


def _interrupted(signum, frame):
    # Ansible stops a module with SIGTERM (a timeout, the admin's Ctrl-C on the
    # controller): abort the migration job, so the SVM stays here.
    raise KeyboardInterrupt


def main():
    signal.signal(signal.SIGTERM, _interrupted)
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            peer=dict(type="str", required=True),
            address=dict(type="str", required=True),
            port=dict(type="int", required=True),
            fqdn=dict(type="str", required=True),
            svm_dir=dict(type="path", required=True),
            bandwidth=dict(type="int", default=0),
            compression=dict(type="str", default="zstd", choices=["", "xbzrle", "zstd"]),
            connections=dict(type="int", default=2),
            max_downtime=dict(type="int", default=50),
            downtime_ceiling=dict(type="int", default=2000),
            timeout=dict(type="int", default=900),
            stall=dict(type="int", default=30),
            health_wait=dict(type="int", default=30),
            restart_wait=dict(type="int", default=120),
            progress_file=dict(type="path"),
            uri=dict(type="str", default="qemu:///system"),
            manager_config=dict(type="path", required=True),
            peer_cert=dict(type="path", required=True),
            peer_key=dict(type="path", required=True),
        ),
        supports_check_mode=False,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    if module.params["connections"] < 1:
        module.fail_json(msg="connections must be at least 1; nothing was moved.")
    try:
        module.exit_json(**run(module))
    except CloudletError as exc:
        module.fail_json(msg=str(exc), svm=module.params["name"])
    except KeyboardInterrupt:
        module.fail_json(msg="Interrupted before the migration started; nothing was moved.")


if __name__ == "__main__":
    main()
