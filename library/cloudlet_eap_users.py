#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_eap_users
short_description: Keep the field network's 802.1X users in step with the paired devices
description:
  - Writes hostapd's EAP user file (0600, EAP-pwd, passwords in hex) from the devices
    paired with the cloudlet, leaving revoked devices out, and makes the running hostapd
    re-read it through its control interface, which disturbs no authenticated station.
  - Deauthenticates every authorized station whose identity is no longer allowed
    (revoked or forgotten) and removes its MAC from the nftables set that lets its
    traffic through, so a revoked device loses the network at once.
  - When hostapd is not running yet, only the file is written; hostapd reads it when
    it starts.
  - The work is done by the C(cloudlet) Python package (C(cloudlet.access)), which
    must be installed for the interpreter that runs the module.
version_added: "0.1.0"
author:
  - Tactical Cloudlets project
options:
  users:
    description:
      - The paired devices and cloudlets, as the Manager's C(GET /admin/eap-users) lists them.
    type: list
    elements: dict
    required: true
    suboptions:
      identity:
        description:
          - The EAP identity, a device's name on the cloudlet or C(peer:<cloudlet id>) for a
            paired cloudlet.
        type: str
        required: true
      password:
        description:
          - Its EAP password (never logged or returned).
        type: str
        required: true
      revoked:
        description:
          - A revoked device is left out, and disconnected if it is connected.
        type: bool
        default: false
  path:
    description:
      - hostapd's EAP user file.
    type: path
    required: true
  ctrl_interface:
    description:
      - hostapd's control interface directory.
    type: path
    required: true
  interface:
    description:
      - The interface hostapd serves (its control socket's name).
    type: str
    required: true
  nft_set:
    description:
      - The nftables set of authorized MACs, as C(family table set); a deauthenticated
        station's MAC is removed from it.
    type: str
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - python >= 3.11
  - cloudlet (this project's package)
notes:
  - The passwords are C(no_log) options, and the module never returns them; the identities
    are not secret and are returned in C(kicked).
"""

EXAMPLES = r"""
- name: Let the paired devices onto the field network
  cloudlet_eap_users:
    users: "{{ __eap_users.json.users }}"
    path: /etc/cloudlet-network/eap_users
    ctrl_interface: /run/cloudlet-network
    interface: field0
    nft_set: netdev cloudlet_field authorized
  no_log: true
"""

RETURN = r"""
allowed:
  description: How many devices may authenticate.
  returned: always
  type: int
  sample: 2
kicked:
  description: Identities of authorized stations that were deauthenticated.
  returned: always
  type: list
  elements: str
  sample: ["device-2"]
hostapd_running:
  description: Whether hostapd answered on its control interface.
  returned: always
  type: bool
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.access import EapUser, HostapdControl, sync_users
    from cloudlet.errors import CloudletError
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            users=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    identity=dict(type="str", required=True),
                    password=dict(type="str", required=True, no_log=True),
                    revoked=dict(type="bool", default=False),
                ),
            ),
            path=dict(type="path", required=True),
            ctrl_interface=dict(type="path", required=True),
            interface=dict(type="str", required=True),
            nft_set=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    p = module.params
    if p["nft_set"] is not None and len(p["nft_set"].split()) != 3:
        module.fail_json(msg=f"nft_set {p['nft_set']!r} is not 'family table set'.")
    try:
        users = [EapUser.from_dict(u) for u in p["users"]]
        control = HostapdControl(p["ctrl_interface"], p["interface"])
        running = control.path.is_socket()
        result = sync_users(users, p["path"], control if running else None, p["nft_set"],
                            module.check_mode)
    except CloudletError as exc:
        module.fail_json(msg=str(exc))
    module.exit_json(changed=result.changed, allowed=result.allowed, kicked=result.kicked,
                     hostapd_running=running)


if __name__ == "__main__":
    main()
