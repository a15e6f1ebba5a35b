#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_svm
short_description: Define, start, stop or remove a service VM (SVM) through libvirt
description:
  - Manages one service VM on a cloudlet as a persistent libvirt domain, built
    from the SVM's manifest (kernel, initrd, base image, qcow2 overlay, memory,
    vCPUs, kernel command line).
  - Before a domain is first defined, every file the manifest names is checked
    against its sha256; before every start, the kernel, initrd and base image
    are checked again. An altered file makes the module fail, naming the file,
    and nothing is defined or started.
  - The overlay is the SVM's writable disk. Once libvirt holds the definition
    the guest writes to it, so it is only checked when the SVM is defined.
  - Idempotent. A domain whose definition no longer matches the options is
    redefined (keeping its UUID); a running one picks the change up at its
    next start (RV(pending_restart)).
  - Supports check mode and diff mode.
  - The work is done by the C(cloudlet) Python package and C(libvirt-python),
    which must be installed for the interpreter that runs the module (on a
    cloudlet, C(/opt/cloudlet/venv/bin/python)).
version_added: "0.1.0"
author:
  - Tactical Cloudlets project
options:
  name:
    description:
      - Name of the libvirt domain (1-63 letters, digits, C(.), C(_), C(-)).
    type: str
    required: true
  manifest:
    description:
      - Path of the SVM's C(manifest.json). The files it names are in the same
        directory.
      - Required unless O(state=absent).
    type: path
  state:
    description:
      - V(running) defines the domain if needed and starts (or resumes) it.
      - V(defined) makes sure the domain is defined, and leaves it running or
        stopped as it is.
      - V(stopped) defines the domain if needed and powers it off. The SVM's
        state in RAM is lost; the busybox guests have no ACPI shutdown.
      - V(absent) powers the domain off and removes its definition. The image
        files are left in place.
    type: str
    choices: [defined, running, stopped, absent]
    default: running
  domain_type:
    description:
      - libvirt domain type. V(kvm) on real hardware; V(qemu) (TCG) where KVM
        cannot boot the guest, as in the lab.
    type: str
    choices: [kvm, qemu]
    default: kvm
  bridge:
    description:
      - Bridge the SVM's virtio NIC is attached to (the cloudlet's SVM network,
        set up by the cloudlet_libvirt role).
    type: str
    default: svmbr0
  network:
    description:
      - libvirt network to attach the NIC to instead of O(bridge).
    type: str
  address:
    description:
      - Static IPv4 address with prefix for the SVM (C(svm.ip=) on its kernel
        command line). Without it the SVM asks DHCP.
    type: str
  gateway:
    description:
      - Default gateway of the SVM (C(svm.gw=)), normally the cloudlet's address
        on the SVM network.
    type: str
  hostname:
    description:
      - Host name the SVM reports (C(svm.hostname=)). Defaults to O(name).
    type: str
  boot_options:
    description:
      - Extra C(svm.NAME=VALUE) words for the SVM's kernel command line, read by
        its C(/init) at boot; the demo SVM knows C(svm.workload=light|dirtying).
      - A change redefines the domain; it takes effect at the SVM's next boot.
    type: list
    elements: str
    default: []
  mac:
    description:
      - MAC address of the SVM's NIC. Defaults to one derived from O(name), the
        same on every cloudlet.
    type: str
  console_log:
    description:
      - File the SVM's serial console is written to. Defaults to
        C(/var/log/libvirt/qemu/<name>-console.log).
    type: path
  verify_overlay:
    description:
      - Check the overlay against the manifest when the domain is defined.
      - Set V(false) only to adopt an overlay that already holds an SVM's state
        (for example one written by an earlier run of the same SVM).
    type: bool
    default: true
  uri:
    description:
      - libvirt connection URI.
    type: str
    default: qemu:///system
requirements:
  - python >= 3.11
  - libvirt-python
  - cloudlet (this project's package)
notes:
  - Check mode reads the domain and verifies the images, and changes nothing.
  - RV(xml) is the definition the module gives libvirt, whether or not it changed.
"""

EXAMPLES = r"""
- name: Run the counter SVM under TCG in the lab
  cloudlet_svm:
    name: demo-counter
    manifest: /var/lib/cloudlet/svm/demo-counter/manifest.json
    domain_type: qemu
    address: 10.200.0.10/24
    gateway: 10.200.0.1
  vars:
    ansible_python_interpreter: /opt/cloudlet/venv/bin/python

- name: Report an SVM's state without changing it
  cloudlet_svm:
    name: demo-counter
    manifest: /var/lib/cloudlet/svm/demo-counter/manifest.json
    state: defined
  check_mode: true
  register: __svm

- name: Remove the SVM's domain (its files stay)
  cloudlet_svm:
    name: demo-counter
    state: absent
"""

RETURN = r"""
name:
  description: The domain's name.
  returned: always
  type: str
  sample: demo-counter
state:
  description: State of the domain after the run (in check mode, the state it would have).
  returned: always
  type: str
  choices: [absent, stopped, running, paused]
  sample: running
state_before:
  description: State of the domain before the run.
  returned: always
  type: str
  sample: absent
actions:
  description: What was done (or would be done in check mode), in order.
  returned: always
  type: list
  elements: str
  sample: [define, start]
verified:
  description: The files checked against the manifest's sha256 in this run.
  returned: always
  type: list
  elements: str
  sample: [/var/lib/cloudlet/svm/demo-counter/vmlinuz]
pending_restart:
  description: The definition changed while the domain ran; it applies at the next start.
  returned: always
  type: bool
  sample: false
xml:
  description: The domain XML the module defines (null when O(state=absent)).
  returned: always
  type: str
diff:
  description: State and definition digest before and after.
  returned: when changed
  type: dict
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    import libvirt  # noqa: F401 - only to report a missing libvirt-python clearly
except ImportError:
    HAS_LIBVIRT = False
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_LIBVIRT = True
    LIBVIRT_IMPORT_ERROR = None

try:
    from cloudlet.errors import CloudletError
    from cloudlet.svm import domain
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def run(module, conn):
    p = module.params
    cfg = domain.SvmConfig(
        name=p["name"],
        manifest_path=p["manifest"] or "/nonexistent/manifest.json",
        domain_type=p["domain_type"],
        bridge=p["bridge"],
        network=p["network"],
        address=p["address"],
        gateway=p["gateway"],
        hostname=p["hostname"],
        mac=p["mac"],
        console_log=p["console_log"],
        verify_overlay=p["verify_overlay"],
        boot_options=p["boot_options"],
    )
    out = domain.ensure(conn, cfg, p["state"], check_mode=module.check_mode)
    result = dict(
        changed=out["changed"],
        name=out["name"],
        state=out["after"],
        state_before=out["before"],
        actions=out["actions"],
        verified=out["verified"],
        pending_restart=out["pending_restart"],
        xml=out["xml"],
    )
    if out["changed"]:
        result["diff"] = dict(
            before={"state": out["before"], "spec": out["spec_before"]},
            after={"state": out["after"], "spec": out["spec_after"]},
        )
    return result


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            manifest=dict(type="path"),
            state=dict(type="str", default="running",
                       choices=["defined", "running", "stopped", "absent"]),
            domain_type=dict(type="str", default="kvm", choices=["kvm", "qemu"]),
            bridge=dict(type="str", default="svmbr0"),
            network=dict(type="str"),
            address=dict(type="str"),
            gateway=dict(type="str"),
            hostname=dict(type="str"),
            boot_options=dict(type="list", elements="str", default=[]),
            mac=dict(type="str"),
            console_log=dict(type="path"),
            verify_overlay=dict(type="bool", default=True),
            uri=dict(type="str", default="qemu:///system"),
        ),
        required_if=[("state", "defined", ["manifest"]), ("state", "running", ["manifest"]),
                     ("state", "stopped", ["manifest"])],
        supports_check_mode=True,
    )
    if not HAS_LIBVIRT:
        module.fail_json(msg=missing_required_lib("libvirt-python"), exception=LIBVIRT_IMPORT_ERROR)
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    try:
        conn = domain.connect(module.params["uri"])
        try:
            result = run(module, conn)
        finally:
            conn.close()
    except CloudletError as exc:
        module.fail_json(msg=str(exc), name=module.params["name"], changed=False,
                         exception=traceback.format_exc())
    except libvirt.libvirtError as exc:
        module.fail_json(msg=f"libvirt refused to manage SVM {module.params['name']}: {exc}",
                         name=module.params["name"], exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
