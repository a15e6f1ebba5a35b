#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_ibe_pkg
short_description: Create or rotate a cloudlet's IBE master key and public parameters
description:
  - Makes sure a cloudlet has its identity-based encryption (IBE) key generator
    (PKG) on disk, a Boneh-Franklin master key on BLS12-381, and the public
    parameters derived from it.
  - The master key file is written atomically with mode C(0600); the public
    parameters file may be readable by others.
  - Idempotent. An existing valid key is never replaced unless O(rotate=true).
    A damaged master key file makes the module fail and leaves the file as it is.
  - Supports check mode and diff mode.
  - The work is done by the C(cloudlet) Python package, which must be installed
    for the interpreter that runs the module.
version_added: "0.1.0"
author:
  - Tactical Cloudlets project
options:
  path:
    description:
      - Directory that holds the key files. It must exist.
    type: path
    required: true
  cloudlet_id:
    description:
      - Id of this cloudlet (a DNS label, for example C(cl-alpha)). It is bound into
        the parameters and into every identity the PKG issues keys for.
    type: str
    required: true
  master_key_name:
    description:
      - File name of the master key inside O(path).
    type: str
    default: ibe_master.key
  params_name:
    description:
      - File name of the public parameters inside O(path).
    type: str
    default: ibe_params.bin
  owner:
    description:
      - Owner of both files (the cloudlet service user).
    type: str
  group:
    description:
      - Group of both files.
    type: str
  mode:
    description:
      - Mode of the master key file. Keep it private.
    type: raw
    default: "0600"
  params_mode:
    description:
      - Mode of the public parameters file.
    type: raw
    default: "0644"
  state:
    description:
      - V(present) makes sure the PKG exists.
    type: str
    choices: [present]
    default: present
  rotate:
    description:
      - Replace the master key with a new one, even if the current one is valid
        (also replaces a damaged key file).
      - All device keys issued under the old key stop working; devices must be
        paired again.
    type: bool
    default: false
requirements:
  - python >= 3.11
  - cloudlet (this project's package, with py-arkworks-bls12381 and cryptography)
notes:
  - The master key never leaves the managed host; the module does not return it.
  - The scheme and file formats are described in the project's docs/crypto.md.
"""

EXAMPLES = r"""
- name: Make sure the cloudlet has its IBE master key and parameters
  cloudlet_ibe_pkg:
    path: /var/lib/cloudlet/pki
    cloudlet_id: cl-alpha
    owner: cloudlet
    group: cloudlet
  register: __cloudlet_pki_pkg

- name: Rotate the IBE master key (all devices must pair again)
  cloudlet_ibe_pkg:
    path: /var/lib/cloudlet/pki
    cloudlet_id: cl-alpha
    rotate: true
"""

RETURN = r"""
action:
  description: What was done (or would be done in check mode).
  returned: always
  type: str
  sample: create
  choices: [none, create, rotate, params]
cloudlet_id:
  description: The cloudlet id the parameters are bound to.
  returned: always
  type: str
  sample: cl-alpha
master_key_path:
  description: Path of the master key file.
  returned: always
  type: str
  sample: /var/lib/cloudlet/pki/ibe_master.key
params_path:
  description: Path of the public parameters file.
  returned: always
  type: str
  sample: /var/lib/cloudlet/pki/ibe_params.bin
params_digest:
  description:
    - SHA-256 digest (hex) of the public parameters, the value bound into every
      device key and ciphertext. Admins compare it during pairing.
    - Null in check mode when a new key would be created.
  returned: always
  type: str
  sample: 3f5a0c0d4c1b4e0f8a3e5b7e39a1d0c2b1b0d6f2a8e4c9d7b5a3f1e0c2d4b6a8
diff:
  description: Parameters digest before and after.
  returned: when changed
  type: dict
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet import formats
    from cloudlet.crypto import ibe
    from cloudlet.crypto.identity import normalise_id
    from cloudlet.errors import CloudletError, FormatError
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def plan(master_path, params_path, cloudlet_id, rotate):
    """Read the current state and decide: returns (action, current master or None)."""
    try:
        files = formats.read_pkg(master_path, params_path)
    except FormatError:
        if rotate:
            return "rotate", None
        raise
    master = files.master
    if master is None:
        return "create", None
    if rotate:
        return "rotate", master
    if master.cloudlet_id != cloudlet_id:
        raise CloudletError(
            f"The master key in {master_path} belongs to cloudlet "
            f"{master.cloudlet_id!r}, not {cloudlet_id!r}.",
            "Fix cloudlet_id, or set rotate=true to replace the key (devices must pair again).",
        )
    if not files.params_current:
        return "params", master
    return "none", master


def run(module):
    p = module.params
    cloudlet_id = normalise_id(p["cloudlet_id"], "cloudlet_id")
    directory = p["path"]
    master_path = os.path.join(directory, p["master_key_name"])
    params_path = os.path.join(directory, p["params_name"])
    result = dict(
        changed=False,
        action="none",
        cloudlet_id=cloudlet_id,
        master_key_path=master_path,
        params_path=params_path,
        params_digest=None,
    )
    if not os.path.isdir(directory):
        module.fail_json(
            msg=f"Directory {directory} does not exist. Create it first "
            "(mode 0700, owned by the service user).",
            **result,
        )

    action, current = plan(master_path, params_path, cloudlet_id, p["rotate"])
    before = current.params.digest.hex() if current is not None else None
    result["action"] = action

    if action in ("create", "rotate"):
        target = None if module.check_mode else ibe.setup(cloudlet_id)
    else:
        target = current
    if target is not None:
        result["params_digest"] = target.params.digest.hex()

    if action != "none":
        result["changed"] = True
        result["diff"] = dict(
            before={"params_digest": before},
            after={"params_digest": result["params_digest"]},
        )
        if not module.check_mode:
            formats.write_pkg(
                target,
                master_path,
                params_path,
                write_master=action != "params",
                key_mode=0o600,
                params_mode=0o644,
            )

    for path, mode in ((master_path, p["mode"]), (params_path, p["params_mode"])):
        if os.path.exists(path):
            file_args = module.load_file_common_arguments(
                dict(path=path, owner=p["owner"], group=p["group"], mode=mode)
            )
            result["changed"] = module.set_fs_attributes_if_different(file_args, result["changed"])
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            cloudlet_id=dict(type="str", required=True),
            master_key_name=dict(type="str", default="ibe_master.key"),
            params_name=dict(type="str", default="ibe_params.bin"),
            owner=dict(type="str"),
            group=dict(type="str"),
            mode=dict(type="raw", default="0600"),
            params_mode=dict(type="raw", default="0644"),
            state=dict(type="str", default="present", choices=["present"]),
            rotate=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    try:
        result = run(module)
    except CloudletError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
