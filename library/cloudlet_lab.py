#!/usr/bin/python
# Copyright: (c) 2026, Tactical Cloudlets contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_lab
short_description: Bring the lab of real machines up or down on the control node
description:
  - Creates, on the control node, Debian machines booted with systemd inside
    C(systemd-nspawn --register=no --keep-unit -b) containers, each on a writable overlay over
    the cached base image built by M(cloudlet_lab_image), each in its own network namespace.
  - Wires them with bridges and veths that the lab owns, all named C(<lab>-...) - a management
    network (the control node is C(.1)), a pairing segment between cloudlets, and a field
    segment per cloudlet where its devices and visiting cloudlets attach. No machine has a
    route out of the lab.
  - With I(state=present) it converges - healthy machines on the current image are kept, and
    anything of this lab that is stale or left over (machines, overlays, mounts, namespaces,
    bridges, veths, orphaned nspawn processes) is removed before what is missing is created.
    It returns once every machine answers on SSH.
  - With I(state=absent) it removes everything of the lab and its state directory.
  - Runs on the control node, as root.
version_added: "0.1.0"
options:
  lab:
    description:
      - Lab name, 2-6 lowercase letters or digits.
      - It prefixes every bridge, namespace and veth the lab creates.
    type: str
    default: clab
  state:
    description: Whether the lab should exist.
    type: str
    choices: [present, absent]
    default: present
  state_dir:
    description:
      - Where the lab keeps overlays, PID files and its SSH key.
      - Default C(/var/lib/cloudlet-lab/<lab>).
    type: path
  subnet:
    description: Private IPv4 /16 the lab carves into /24 segments.
    type: str
    default: 10.77.0.0/16
  machines:
    description:
      - The machines, each a dict with C(name), C(role) (C(cloudlet) or C(device)) and for a
        device optionally C(home), the cloudlet it is first paired to.
    type: list
    elements: dict
    default: []
  image:
    description: Root filesystem of the base image (the C(path) returned by M(cloudlet_lab_image)).
    type: path
  image_key:
    description: Cache key of the base image; a machine made on another key is rebuilt.
    type: str
author:
  - Tactical Cloudlets contributors
"""

EXAMPLES = r"""
- name: Bring the lab up
  cloudlet_lab:
    lab: clab
    machines:
      - {name: cloudlet-a, role: cloudlet}
      - {name: device-1, role: device, home: cloudlet-a}
    image: "{{ __lab_image.path }}"
    image_key: "{{ __lab_image.key }}"

- name: Tear the lab down
  cloudlet_lab:
    lab: clab
    state: absent
"""

RETURN = r"""
plan:
  description: The lab's layout - bridges, subnets, and per machine its namespace and links.
  returned: always
  type: dict
host_keys:
  description: Each existing machine's SSH host key (type and base64), for known_hosts.
  returned: when state is present
  type: dict
  sample: {"cloudlet-a": "ssh-ed25519 AAAAC3Nza..."}
pids:
  description: PID of the systemd-nspawn process of each machine.
  returned: when state is present and not in check mode
  type: dict
ssh_key:
  description: Private key file that logs in as root on every machine.
  returned: always
  type: str
actions:
  description: What was (or in check mode would be) done.
  returned: always
  type: list
  elements: str
"""

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.errors import CloudletError
    from cloudlet.lab import lab, net, topology
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            lab=dict(type="str", default="clab"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            state_dir=dict(type="path"),
            subnet=dict(type="str", default="10.77.0.0/16"),
            machines=dict(type="list", elements="dict", default=[]),
            image=dict(type="path"),
            image_key=dict(type="str"),
        ),
        required_if=[("state", "present", ("image", "image_key", "machines"))],
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)

    p = module.params
    state_dir = p["state_dir"] or f"/var/lib/cloudlet-lab/{p['lab']}"
    result = {"ssh_key": f"{state_dir}/id_ed25519"}
    try:
        if p["state"] == "absent":
            if module.check_mode:
                found = net.state(p["lab"])
                actions = [f"remove {n}" for n in found["netns"] + found["links"]]
                module.exit_json(changed=bool(actions), actions=actions, plan={}, **result)
            result.update(lab.down(p["lab"], state_dir))
            module.exit_json(plan={}, **result)
        plan = topology.plan(p["lab"], p["subnet"], p["machines"])
        result["plan"] = plan.as_dict()
        if module.check_mode:
            todo = lab.pending(plan, state_dir, p["image_key"])
            actions = [f"remove {n}" for n in todo["remove"]]
            actions += [f"start {n}" for n in todo["start"]]
            result["host_keys"] = lab.host_keys(plan, state_dir)
            module.exit_json(changed=bool(actions), actions=actions, **result)
        result.update(lab.up(plan, state_dir, p["image"], p["image_key"]))
    except CloudletError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc(), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
