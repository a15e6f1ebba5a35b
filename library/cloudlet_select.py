#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_select
short_description: Pick the paired cloudlet a service VM should migrate to (target=auto)
description:
  - Runs on the source cloudlet, as root, with the cloudlet venv's interpreter, beside a
    running Cloudlet Manager, before the migration.
  - For each candidate in turn it reaches the cloudlet as the migration would (its field
    network over 802.1X, its Manager by DNS-SD, mutual TLS with the paired CA), asks whether
    it holds the SVM's images and the memory (nothing is recorded there), and times a
    2 MiB probe over the link. An uplink it brought up is taken down again.
  - A candidate that is not paired, not in reach, or without the images or the memory is
    never chosen. Among the others the fastest link wins; free memory breaks a tie.
  - Fails, saying why for each candidate, when none can take the SVM.
options:
  name:
    description:
      - The service VM (libvirt domain and store directory name).
    type: str
    required: true
  svm_dir:
    description:
      - The cloudlet's SVM store; the SVM's manifest is C(<svm_dir>/<name>/manifest.json).
    type: path
    required: true
  fqdn:
    description:
      - The SVM's name in the mission's DNS (part of its metadata).
    type: str
    required: true
  candidates:
    description:
      - The cloudlets to consider, each with this cloudlet's interface on its field network.
    type: list
    elements: dict
    required: true
    suboptions:
      peer:
        description: The candidate's cloudlet id.
        type: str
        required: true
      interface:
        description: This cloudlet's interface on the candidate's field network.
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
      - Seconds each step of reaching one candidate may take.
    type: int
    default: 30
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
- name: Pick the target among the other cloudlets
  cloudlet_select:
    name: demo-counter
    svm_dir: /var/lib/cloudlet/svm
    fqdn: demo-counter.svm.mission.internal
    candidates:
      - {peer: cloudlet-b, interface: wlan1}
      - {peer: cloudlet-c, interface: wlan1}
    driver: nl80211
    manager_config: /etc/cloudlet/manager.toml
    peer_cert: /etc/cloudlet/pki/peer.pem
    peer_key: /etc/cloudlet/pki/private/peer.key
  register: selected
"""

RETURN = r"""
target:
  description: The chosen cloudlet.
  type: str
  returned: success
candidates:
  description:
    - Every candidate's figures, best first, then those that cannot be chosen
      (cloudlet_id, interface, rate_mbit, mem_available_mib, fits, reason).
  type: list
  elements: dict
  returned: always
lines:
  description: One line per candidate, as the admin reads them, best first.
  type: list
  elements: str
  returned: always
"""

import traceback
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.admin_client import AdminClient
    from cloudlet.errors import CloudletError
    from cloudlet.manager.config import load_config
    from cloudlet.migration.discover import Uplink
    from cloudlet.migration.select import Candidate, choose, rank, survey
    from cloudlet.migration.svm import metadata
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def run(module):
    p = module.params
    admin = AdminClient(str(load_config(p["manager_config"]).admin_socket))
    meta = metadata(p["name"], Path(p["svm_dir"]) / p["name"] / "manifest.json", p["fqdn"])
    surveyed = [
        survey(admin, Candidate(c["peer"], c["interface"]), meta, p["peer_cert"],
               p["peer_key"], p["timeout"], lambda ifname: Uplink(ifname, p["driver"]))
        for c in p["candidates"]
    ]
    ranked = rank(surveyed)
    ordered = ranked + [c for c in surveyed if c not in ranked]
    report = dict(candidates=[c.as_dict() for c in ordered],
                  lines=[c.describe() for c in ordered])
    try:
        report["target"] = choose(surveyed).cloudlet_id
    except CloudletError as exc:
        module.fail_json(msg=str(exc), **report)
    return dict(changed=False, **report)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            svm_dir=dict(type="path", required=True),
            fqdn=dict(type="str", required=True),
            candidates=dict(type="list", elements="dict", required=True, options=dict(
                peer=dict(type="str", required=True),
                interface=dict(type="str", required=True),
            )),
            driver=dict(type="str", default="wired", choices=["wired", "nl80211"]),
            timeout=dict(type="int", default=30),
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
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
