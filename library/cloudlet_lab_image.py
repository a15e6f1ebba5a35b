#!/usr/bin/python
# Copyright: (c) 2026, Tactical Cloudlets contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_lab_image
short_description: Build or reuse the lab's cached Debian base image
description:
  - Ensures a Debian root filesystem exists in the lab's image cache for the given recipe
    (suite, mirror, package list). Every lab machine boots from an overlay over it.
  - The cache key is a digest of the whole recipe, so a changed recipe is a cache miss and is
    rebuilt with C(debootstrap) plus C(apt-get) in a chroot; an unchanged one is reused at once.
  - An image is built in a scratch directory and moved into place only when complete.
  - Runs on the control node, as root.
version_added: "0.1.0"
options:
  cache_dir:
    description: Directory holding cached images, one sub-directory per cache key.
    type: path
    default: /var/cache/cloudlet-lab
  suite:
    description: Debian suite to bootstrap.
    type: str
    default: bookworm
  mirror:
    description:
      - Debian mirror URL. Empty means the mirror the control node's own apt sources use.
    type: str
    default: ""
  packages:
    description:
      - Packages installed on top of the minimal system. Empty means the project's default list
        (systemd, sshd, python3, QEMU, libvirt, hostapd, wpa_supplicant, dnsmasq and tools).
      - QEMU and libvirt come from the suite's backports (10.0 and 11.3 for bookworm), pinned
        there in the image's apt preferences. Debian 12's QEMU 7.2 corrupts guests
        live-migrated under TCG while they are sent traffic, and its libvirt 9.0 cannot ask
        QEMU for the zstd compression migrations use.
    type: list
    elements: str
    default: []
  prune:
    description: Remove cached images of other recipes that no machine uses any more.
    type: bool
    default: true
author:
  - Tactical Cloudlets contributors
"""

EXAMPLES = r"""
- name: Build or reuse the lab base image
  cloudlet_lab_image:
    cache_dir: /var/cache/cloudlet-lab
  register: __lab_image
"""

RETURN = r"""
key:
  description: The cache key of the image (digest of its recipe).
  returned: always
  type: str
  sample: 3f1c0a9e2b7d4c11
path:
  description: The image's root filesystem.
  returned: always
  type: str
  sample: /var/cache/cloudlet-lab/3f1c0a9e2b7d4c11/rootfs
built:
  description: Whether this run built the image (a cache miss).
  returned: always
  type: bool
seconds:
  description: Build time in seconds; 0 on a cache hit.
  returned: always
  type: float
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.errors import CloudletError
    from cloudlet.lab import image
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cache_dir=dict(type="path", default="/var/cache/cloudlet-lab"),
            suite=dict(type="str", default="bookworm"),
            mirror=dict(type="str", default=""),
            packages=dict(type="list", elements="str", default=[]),
            prune=dict(type="bool", default=True),
        ),
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)

    p = module.params
    packages = tuple(p["packages"]) or image.EXTRA_PACKAGES
    try:
        mirror = p["mirror"] or image.host_mirror()
        key = image.cache_key(p["suite"], mirror, packages)
        path = str(image.image_path(p["cache_dir"], key))
        if module.check_mode:
            cached = image.is_cached(p["cache_dir"], key)
            module.exit_json(changed=not cached, key=key, path=path, built=not cached, seconds=0.0)
        result = image.build(p["cache_dir"], p["suite"], mirror, packages)
        if p["prune"]:
            result["pruned"] = image.prune(p["cache_dir"], keep=key)
    except CloudletError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc())
    module.exit_json(changed=result["built"], **result)


if __name__ == "__main__":
    main()
