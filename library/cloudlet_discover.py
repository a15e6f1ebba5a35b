#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_discover
short_description: Join a paired cloudlet's network and find its Cloudlet Manager (DNS-SD)
description:
  - Migration step 2. Runs on the source cloudlet, as root, with the cloudlet venv's
    interpreter, beside a running Cloudlet Manager.
  - Joins the peer's field network on O(interface) with the 802.1X (EAP-pwd) credential the
    peer issued at pairing; wpa_supplicant runs as the transient unit
    C(cloudlet-uplink-<interface>) and stays up for the migration.
  - Finds the peer's Manager by DNS-SD (C(<peer>._cloudlet._tcp.local.)) on that network and
    accepts the answer only if it names the CA paired as O(peer); then calls its peer API
    over mutual TLS with that CA as the only trust anchor. A pairing still pending is
    confirmed by that first call.
  - A cloudlet that was never paired, or whose pairing was removed, is refused before
    anything is sent.
options:
  peer:
    description:
      - The target cloudlet's id.
    type: str
    required: true
  interface:
    description:
      - This cloudlet's interface on the target's field network.
    type: str
    required: true
  driver:
    description:
      - V(wired) for 802.1X on Ethernet, V(nl80211) for a radio.
    type: str
    choices: [wired, nl80211]
    default: wired
  timeout:
    description:
      - Seconds each step (802.1X, an address, the DNS-SD answer) may take.
    type: int
    default: 60
  manager_config:
    description:
      - The Manager's configuration (its admin socket).
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
  - wpa_supplicant
"""

EXAMPLES = r"""
- name: Join cloudlet-b's network and find its Manager
  cloudlet_discover:
    peer: cloudlet-b
    interface: f-cloudlet-b
    manager_config: /etc/cloudlet/manager.toml
    peer_cert: /etc/cloudlet/pki/peer.pem
    peer_key: /etc/cloudlet/pki/private/peer.key
  register: found
"""

RETURN = r"""
address:
  description: The peer Manager's address on its field network.
  type: str
  returned: success
port:
  description: Its port.
  type: int
  returned: success
ca_fingerprint:
  description: SHA-256 of the peer's CA, as paired and as its Manager proved.
  type: str
  returned: success
mem_available_mib:
  description: The peer's free memory, as it reports it.
  type: int
  returned: success
services:
  description: The service VMs the peer runs (from its repository).
  type: list
  elements: dict
  returned: success
confirmed:
  description: Whether this call confirmed a pending pairing.
  type: bool
  returned: success
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.admin_client import AdminClient
    from cloudlet.errors import CloudletError
    from cloudlet.manager.config import load_config
    from cloudlet.migration.discover import Uplink, reach
    from cloudlet.migration.peer import peer_link
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def run(module):
    p = module.params
    admin = AdminClient(str(load_config(p["manager_config"]).admin_socket))
    link = peer_link(admin, p["peer"])
    found = reach(admin, link, Uplink(p["interface"], p["driver"]), p["peer_cert"],
                  p["peer_key"], p["timeout"])
    return dict(
        changed=found.joined or found.confirmed,
        address=found.address,
        port=found.port,
        ca_fingerprint=link.ca_fingerprint,
        mem_available_mib=found.info.get("mem_available_mib"),
        services=found.info.get("services", []),
        confirmed=found.confirmed,
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(
            peer=dict(type="str", required=True),
            interface=dict(type="str", required=True),
            driver=dict(type="str", default="wired", choices=["wired", "nl80211"]),
            timeout=dict(type="int", default=60),
            manager_config=dict(type="path", required=True),
            peer_cert=dict(type="path", required=True),
            peer_key=dict(type="path", required=True),
        ),
        supports_check_mode=False,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    try:
        module.exit_json(**run(module))
    except CloudletError as exc:
        module.fail_json(msg=str(exc), peer=module.params["peer"])


if __name__ == "__main__":
    main()
