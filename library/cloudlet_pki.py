#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_pki
short_description: Ensure a cloudlet's TLS CA and one leaf certificate issued by it
description:
  - Makes sure a cloudlet has its own self-signed TLS certificate authority (an
    ECDSA P-256 key and a CA certificate) and, when O(profile) is given, a leaf
    key and certificate of that profile issued by the CA for the given names.
  - The CA key is created only when neither the CA key nor the CA certificate
    exists. A damaged or missing CA key next to an existing CA certificate makes
    the module fail and leaves every file as it is; a new CA means that every
    paired cloudlet must pair again, so it is never done silently.
  - A CA certificate that is damaged, does not match the key or expires within
    O(renew_before_days) is re-issued from the same key and the same name, so
    leaf certificates and peers that trust the CA keep working.
  - A leaf certificate is re-issued only when the package's C(check_certificate)
    gives reasons (wrong CA, purpose, names, key, or close to expiry); the
    reasons are returned. The existing leaf key is kept when it is readable.
  - Private keys are written atomically with mode C(0600).
  - Supports check mode and diff mode.
  - The work is done by the C(cloudlet) Python package, which must be installed
    for the interpreter that runs the module.
version_added: "0.1.0"
author:
  - Tactical Cloudlets project
options:
  cloudlet_id:
    description:
      - Id of this cloudlet (a DNS label, for example C(cl-alpha)). It names the CA.
    type: str
    required: true
  ca_cert:
    description:
      - Path of the CA certificate (PEM). Its directory must exist.
    type: path
    required: true
  ca_key:
    description:
      - Path of the CA private key (PEM, PKCS#8). Its directory must exist.
    type: path
    required: true
  ca_owner:
    description:
      - Owner of the CA key and certificate.
    type: str
    default: root
  ca_group:
    description:
      - Group of the CA key and certificate.
    type: str
    default: root
  ca_days:
    description:
      - Validity of a newly issued CA certificate, in days.
    type: int
    default: 3650
  profile:
    description:
      - What the leaf certificate is for. It fixes the key usages.
      - Leave it out to ensure only the CA.
    type: str
    choices: [manager-server, peer-client, libvirt-server, libvirt-client]
  cert:
    description:
      - Path of the leaf certificate (PEM). Required with O(profile).
    type: path
  key:
    description:
      - Path of the leaf private key (PEM, PKCS#8). Required with O(profile).
    type: path
  common_name:
    description:
      - Common name of the leaf certificate. Required with O(profile).
    type: str
  dns_names:
    description:
      - DNS names for the subject alternative name of the leaf certificate.
    type: list
    elements: str
    default: []
  ip_addresses:
    description:
      - IP addresses for the subject alternative name of the leaf certificate.
      - A server certificate needs at least one DNS name or IP address.
    type: list
    elements: str
    default: []
  owner:
    description:
      - Owner of the leaf key and certificate (the user of the service that reads the key).
    type: str
  group:
    description:
      - Group of the leaf key and certificate.
    type: str
  cert_mode:
    description:
      - Mode of the leaf certificate and of the CA certificate.
    type: raw
    default: "0644"
  days:
    description:
      - Validity of a newly issued leaf certificate, in days. It never outlives the CA.
    type: int
    default: 397
  renew_before_days:
    description:
      - Re-issue a certificate (leaf or CA) that has fewer days than this left.
    type: int
    default: 30
requirements:
  - python >= 3.11
  - cloudlet (this project's package, with cryptography)
notes:
  - Private keys never leave the managed host; the module returns only
    certificate fingerprints.
  - The CA is never added to the system trust store.
"""

EXAMPLES = r"""
- name: Make sure the cloudlet has its TLS CA
  cloudlet_pki:
    cloudlet_id: cl-alpha
    ca_cert: /etc/cloudlet/pki/ca.pem
    ca_key: /etc/cloudlet/pki/private/ca.key

- name: Issue the Manager API server certificate
  cloudlet_pki:
    cloudlet_id: cl-alpha
    ca_cert: /etc/cloudlet/pki/ca.pem
    ca_key: /etc/cloudlet/pki/private/ca.key
    profile: manager-server
    cert: /etc/cloudlet/pki/manager.pem
    key: /etc/cloudlet/pki/private/manager.key
    common_name: manager.alpha.cloudlet
    dns_names: [manager.alpha.cloudlet]
    ip_addresses: [10.30.0.10, 10.31.0.1]
    owner: cloudlet
    group: cloudlet
  register: __cloudlet_pki_manager

- name: Issue libvirt's TLS server certificate at the path libvirt reads
  cloudlet_pki:
    cloudlet_id: cl-alpha
    ca_cert: /etc/cloudlet/pki/ca.pem
    ca_key: /etc/cloudlet/pki/private/ca.key
    profile: libvirt-server
    cert: /etc/pki/libvirt/servercert.pem
    key: /etc/pki/libvirt/private/serverkey.pem
    common_name: cloudlet-alpha
    dns_names: [cloudlet-alpha]
    ip_addresses: [10.30.0.10]
"""

RETURN = r"""
ca_action:
  description: What was done to the CA (or would be done in check mode).
  returned: always
  type: str
  sample: none
  choices: [none, create, reissue]
ca_reasons:
  description: Why the CA certificate was (or would be) re-issued.
  returned: always
  type: list
  elements: str
  sample: ["expires at 2027-01-01 00:00 UTC"]
ca_fingerprint:
  description:
    - SHA-256 fingerprint (hex) of the CA certificate, as shown in pairing and
      delivery records. Null in check mode when the CA would be created or re-issued.
  returned: always
  type: str
  sample: 9f0c1d2e3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d
action:
  description: What was done to the leaf certificate (or would be done in check mode).
  returned: always
  type: str
  sample: issue
  choices: [none, issue]
reasons:
  description: Why the leaf certificate was (or would be) issued; empty when it was kept.
  returned: always
  type: list
  elements: str
  sample: ["missing", "names differ from ..."]
key_action:
  description: Whether a new leaf key was (or would be) generated.
  returned: always
  type: str
  sample: keep
  choices: [none, keep, create]
fingerprint:
  description:
    - SHA-256 fingerprint (hex) of the leaf certificate. Null without O(profile),
      and in check mode when the certificate would be issued.
  returned: always
  type: str
  sample: 1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b
diff:
  description: CA and leaf fingerprints before and after.
  returned: when changed
  type: dict
"""

import os
import traceback
from datetime import timedelta

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet import pki, pki_files
    from cloudlet.errors import CloudletError
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def _attributes(module, path, owner, group, mode, changed):
    if not os.path.exists(path):
        return changed
    args = module.load_file_common_arguments(dict(path=path, owner=owner, group=group, mode=mode))
    return module.set_fs_attributes_if_different(args, changed)


def run(module):
    p = module.params
    leaf = None
    if p["profile"]:
        names = pki.subject_names(p["common_name"], p["dns_names"], p["ip_addresses"])
        leaf = pki_files.Leaf(p["cert"], p["key"], pki.Profile(p["profile"]), names, p["days"])
    out = pki_files.ensure(
        p["cloudlet_id"],
        p["ca_cert"],
        p["ca_key"],
        leaf,
        ca_days=p["ca_days"],
        renew_before=timedelta(days=p["renew_before_days"]),
        check_mode=module.check_mode,
    )
    result = dict(
        ca_action=out.ca_action,
        ca_reasons=out.ca_reasons,
        ca_fingerprint=out.ca_fingerprint,
        action=out.action,
        reasons=out.reasons,
        key_action=out.key_action,
        fingerprint=out.fingerprint,
    )
    changed = out.changed
    if changed:
        result["diff"] = dict(
            before={"ca_fingerprint": out.ca_before, "fingerprint": out.before},
            after={"ca_fingerprint": out.ca_fingerprint, "fingerprint": out.fingerprint},
        )
    changed = _attributes(module, p["ca_key"], p["ca_owner"], p["ca_group"], "0600", changed)
    changed = _attributes(
        module, p["ca_cert"], p["ca_owner"], p["ca_group"], p["cert_mode"], changed
    )
    if leaf is not None:
        changed = _attributes(module, p["key"], p["owner"], p["group"], "0600", changed)
        changed = _attributes(module, p["cert"], p["owner"], p["group"], p["cert_mode"], changed)
    result["changed"] = changed
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cloudlet_id=dict(type="str", required=True),
            ca_cert=dict(type="path", required=True),
            ca_key=dict(type="path", required=True, no_log=False),
            ca_owner=dict(type="str", default="root"),
            ca_group=dict(type="str", default="root"),
            ca_days=dict(type="int", default=3650),
            profile=dict(
                type="str",
                choices=["manager-server", "peer-client", "libvirt-server", "libvirt-client"],
            ),
            cert=dict(type="path"),
            key=dict(type="path", no_log=False),
            common_name=dict(type="str"),
            dns_names=dict(type="list", elements="str", default=[]),
            ip_addresses=dict(type="list", elements="str", default=[]),
            owner=dict(type="str"),
            group=dict(type="str"),
            cert_mode=dict(type="raw", default="0644"),
            days=dict(type="int", default=397),
            renew_before_days=dict(type="int", default=30),
        ),
        required_by={"profile": ("cert", "key", "common_name")},
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
