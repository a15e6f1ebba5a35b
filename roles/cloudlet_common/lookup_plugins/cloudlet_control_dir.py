# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
name: cloudlet_control_dir
author:
  - Tactical Cloudlets project
version_added: "0.1.0"
short_description: The control node's state directory (signing key, delivery records, audit log)
description:
  - Returns E(CLOUDLET_CONTROL_DIR) if it is set (C(~) expanded, made absolute), else
    C(control) in the project checkout this plugin belongs to.
  - The same rule as the C(cloudlet_audit) callback's default log directory; both come from
    C(cloudlet.control), so the rule is written once.
  - The role default C(cloudlet_control_dir) (role C(cloudlet_common)) is this lookup. Plays
    without roles and inventories (for example a C(UserKnownHostsFile) naming the delivery
    records' C(known_hosts)) reach it through C(lookup_plugins) in the project's C(ansible.cfg).
requirements:
  - cloudlet (this project's package), importable by the Python that runs Ansible
options:
  _terms:
    description: None; the lookup takes no terms.
    required: false
"""

EXAMPLES = r"""
- name: Show where the manifest signing key is kept
  ansible.builtin.debug:
    msg: "{{ lookup('cloudlet_control_dir') }}/manifest.key"
"""

RETURN = r"""
_raw:
  description: The control directory, as a one-element list.
  type: list
  elements: path
"""

import traceback
from pathlib import Path

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

try:
    from cloudlet.control import control_dir
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None

# roles/cloudlet_common/lookup_plugins/<this file>: the checkout is three levels up.
PROJECT = Path(__file__).resolve().parents[3]


class LookupModule(LookupBase):
    """Shim over cloudlet.control.control_dir."""

    def run(self, terms, variables=None, **kwargs):
        if terms:
            raise AnsibleLookupError("cloudlet_control_dir takes no terms.")
        if not HAS_CLOUDLET:
            raise AnsibleLookupError(
                "cloudlet_control_dir: the cloudlet package cannot be imported. Install it for "
                f"the Python that runs Ansible.\n{CLOUDLET_IMPORT_ERROR}"
            )
        return [str(control_dir(PROJECT))]
