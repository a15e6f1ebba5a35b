#!/usr/bin/python
# Copyright: (c) 2026, Tactical Cloudlets contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_manifest
short_description: Scan, sign and check the manifest of a cloudlet's installed software
description:
  - Threat 4 (altered software) between setup and delivery. At the end of setup the cloudlet's
    installed trees are scanned (I(mode=scan), on the cloudlet), the control laptop signs the
    result with its Ed25519 key (I(mode=sign), on the control node; the key never leaves it),
    and the signed manifest is stored on both sides.
  - At delivery (I(mode=check), on the cloudlet) the signature is verified against the admin's
    public key and the disk is compared with the manifest; any changed, missing or unexpected
    file fails the task, naming the file.
version_added: "0.1.0"
options:
  mode:
    description: Which step to run.
    type: str
    choices: [scan, sign, check]
    required: true
  roots:
    description: Absolute paths to scan (I(mode=scan)).
    type: list
    elements: path
    default: []
  exclude:
    description:
      - fnmatch patterns on absolute paths left out of the scan (I(mode=scan)). They are signed,
        so the check leaves out exactly the same paths. Never exclude C(*.pyc).
    type: list
    elements: str
    default: []
  manifest:
    description: The C(manifest) a scan returned (I(mode=sign)).
    type: dict
  signing_key:
    description:
      - Ed25519 private key (PEM, mode 0600) on the control node (I(mode=sign)). Created, with
        its public key beside it as C(<signing_key>.pub), when it does not exist.
    type: path
  dest:
    description: Where to write the signed manifest (I(mode=sign)).
    type: path
  path:
    description: The signed manifest on the cloudlet (I(mode=check)).
    type: path
  public_key:
    description: The admin's Ed25519 public key, PEM text (I(mode=check)).
    type: str
author:
  - Tactical Cloudlets contributors
"""

EXAMPLES = r"""
- name: Scan the installed software
  cloudlet_manifest:
    mode: scan
    roots: [/opt/cloudlet/venv, /var/lib/cloudlet/svm]
  register: __scan

- name: Sign it on the control laptop
  cloudlet_manifest:
    mode: sign
    manifest: "{{ __scan.manifest }}"
    signing_key: "{{ cloudlet_control_dir }}/manifest.key"
    dest: "{{ cloudlet_control_dir }}/deliveries/{{ inventory_hostname }}.manifest"
  delegate_to: localhost

- name: Check the cloudlet against its signed manifest at delivery
  cloudlet_manifest:
    mode: check
    path: /etc/cloudlet/delivery.manifest
    public_key: "{{ lookup('file', cloudlet_control_dir ~ '/manifest.key.pub') }}"
"""

RETURN = r"""
manifest:
  description: The scan's body (roots, exclude, scan time, and one entry per file).
  returned: when mode is scan
  type: dict
entries:
  description: How many files, directories and symlinks the manifest holds.
  returned: always
  type: int
digest:
  description: SHA-256 of the signed manifest file, for the delivery record.
  returned: when mode is sign or check
  type: str
fingerprint:
  description: SHA-256 of the signing key's raw public key.
  returned: when mode is sign
  type: str
problems:
  description: One line per changed, missing or unexpected file.
  returned: when mode is check and the check fails
  type: list
  elements: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cryptography.hazmat.primitives import serialization

    from cloudlet import manifest as mf
    from cloudlet.digests import sha256_file
    from cloudlet.errors import CloudletError
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def scan(module):
    found = mf.scan(module.params["roots"], module.params["exclude"])
    return {"changed": False, "manifest": found.body(), "entries": len(found.entries)}


def sign(module):
    p = module.params
    manifest = mf.from_body(p["manifest"])
    key_path = os.path.expanduser(p["signing_key"])
    dest = os.path.expanduser(p["dest"])
    made_key = False
    if not os.path.exists(key_path):
        if module.check_mode:
            return {"changed": True, "entries": len(manifest.entries)}
        os.makedirs(os.path.dirname(key_path) or ".", mode=0o700, exist_ok=True)
        mf.generate_signing_key(key_path, key_path + ".pub")
        made_key = True
    key = mf.load_signing_key(key_path)
    result = {"fingerprint": mf.fingerprint(key.public_key()), "entries": len(manifest.entries)}
    if module.check_mode:
        result["changed"] = not mf.signed_copy_matches(manifest, key.public_key(), dest)
        return result
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    result["changed"] = mf.ensure_signed(manifest, key, dest) or made_key
    result["digest"] = sha256_file(dest)
    return result


def check(module):
    p = module.params
    public = serialization.load_pem_public_key(p["public_key"].encode())
    with open(p["path"], "rb") as fh:
        data = fh.read()
    try:
        found = mf.check_delivery(data, public)
    except mf.DeliveryCheckError as exc:
        module.fail_json(msg=str(exc), problems=exc.report.problems())
    return {"changed": False, "entries": len(found.entries), "digest": sha256_file(p["path"])}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", choices=["scan", "sign", "check"], required=True),
            roots=dict(type="list", elements="path", default=[]),
            exclude=dict(type="list", elements="str", default=[]),
            manifest=dict(type="dict"),
            signing_key=dict(type="path", no_log=False),
            dest=dict(type="path"),
            path=dict(type="path"),
            public_key=dict(type="str"),
        ),
        required_if=[
            ("mode", "scan", ("roots",)),
            ("mode", "sign", ("manifest", "signing_key", "dest")),
            ("mode", "check", ("path", "public_key")),
        ],
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    steps = {"scan": scan, "sign": sign, "check": check}
    try:
        result = steps[module.params["mode"]](module)
    except (CloudletError, OSError, ValueError) as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
