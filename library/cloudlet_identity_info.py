#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_identity_info
short_description: "Read a cloudlet's public identity: CA fingerprint, IBE digest, SSH host keys"
description:
  - Reads what an admin compares to know a cloudlet, in the one format used
    everywhere (delivery records, pairing, DNS-SD). That is the cloudlet id
    bound into its IBE public parameters, the SHA-256 fingerprint of its CA certificate and the
    digest of its IBE public parameters, both as lowercase hex, and its SSH
    host public keys.
  - Changes nothing, so it runs the same in check mode.
  - The work is done by the C(cloudlet) Python package, which must be installed
    for the interpreter that runs the module.
version_added: "0.1.0"
author:
  - Tactical Cloudlets project
options:
  ca_cert:
    description:
      - The cloudlet's CA certificate (PEM).
    type: path
    required: true
  ibe_params:
    description:
      - The cloudlet's IBE public parameters file.
    type: path
    required: true
  host_keys:
    description:
      - Also return the host's SSH public keys (C(/etc/ssh/ssh_host_*_key.pub)).
    type: bool
    default: true
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
"""

EXAMPLES = r"""
- name: Read the cloudlet's public identity for the delivery record
  cloudlet_identity_info:
    ca_cert: /etc/cloudlet/pki/ca.pem
    ibe_params: /etc/cloudlet/pki/ibe/ibe_params.bin
  register: __identity
"""

RETURN = r"""
cloudlet_id:
  description: The cloudlet id its IBE parameters are bound to.
  returned: always
  type: str
  sample: cloudlet-a
ca_fingerprint:
  description: SHA-256 over the CA certificate's DER encoding, lowercase hex.
  returned: always
  type: str
  sample: 5d41402abc4b2a76b9719d911017c592a3f5a0c0d4c1b4e0f8a3e5b7e39a1d0c
params_digest:
  description: SHA-256 digest of the IBE public parameters, lowercase hex.
  returned: always
  type: str
  sample: 3f5a0c0d4c1b4e0f8a3e5b7e39a1d0c2b1b0d6f2a8e4c9d7b5a3f1e0c2d4b6a8
host_keys:
  description: The SSH host public keys as C(type base64), sorted; empty unless O(host_keys=true).
  returned: always
  type: list
  elements: str
  sample: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."]
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.errors import CloudletError
    from cloudlet.identity_info import SSH_DIR, read_identity
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            ca_cert=dict(type="path", required=True),
            ibe_params=dict(type="path", required=True),
            host_keys=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    p = module.params
    try:
        info = read_identity(p["ca_cert"], p["ibe_params"], SSH_DIR if p["host_keys"] else None)
    except CloudletError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc())
    module.exit_json(changed=False, **info.as_dict())


if __name__ == "__main__":
    main()
