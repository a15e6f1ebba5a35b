#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_credential_push
short_description: Pair a device with a cloudlet and seal its first credential bundle
description:
  - Runs on the cloudlet, as root, with the cloudlet venv's interpreter, beside
    a running Cloudlet Manager (it talks to the Manager's admin socket).
  - O(mode=pair) records the device in the Manager (validity period,
    services, not revoked) and, when the device needs one, issues its signed
    first bundle (IBE key for its identity and period, the cloudlet's params,
    TLS CA, 802.1X EAP-pwd credential, Manager API address) and returns it
    sealed, never in clear; either to the device's pairing request
    (O(delivery=transport), X25519, docs/wire-format.md section 15) or with a
    generated passphrase (O(delivery=passphrase), for a file).
  - A bundle is issued only when O(device_status) shows no current bundle
    from this cloudlet for this device (or another CA), when the Manager
    record is new or was revoked, or with O(renew=true). Otherwise nothing
    changes and nothing is returned sealed.
  - O(mode=messages) queues ciphertexts a peer cloudlet sealed to devices
    (O(messages)) in the Manager's message repository, skipping any already
    queued and unacknowledged for the same device, kind and issuer.
  - O(mode=delivery) waits up to O(wait) seconds until every device of O(services) has
    acknowledged its credentials message from O(issuer), and reports which have
    (migration step 5). It changes nothing.
  - O(mode=revoke) marks O(device) revoked in the Manager; the device API
    refuses its next call. The network side is not touched here.
  - Supports check mode (nothing is written, nothing is issued) and diff mode.
version_added: "0.1.0"
author:
  - Tactical Cloudlets project
options:
  mode:
    description:
      - V(pair) a device, queue sealed credential V(messages), report their V(delivery), or
        V(revoke) a device.
    type: str
    choices: [pair, messages, delivery, revoke]
    default: pair
  device:
    description:
      - The device's id (a DNS label, e.g. C(device-1)). Required unless O(mode=messages).
    type: str
  delivery:
    description:
      - How the bundle leaves the cloudlet. V(transport) seals it to O(public_key);
        V(passphrase) seals it with a generated passphrase, returned as RV(passphrase).
    type: str
    choices: [transport, passphrase]
    default: transport
  public_key:
    description:
      - The device's pairing request (base64 of its X25519 public key), as printed by
        C(cloudlet-device pairing-request --json). Required with O(delivery=transport)
        when a bundle is issued.
    type: str
  device_status:
    description:
      - What the device says it holds, C(cloudlet-device status --json) (or the sidecar
        of an exported file). Omitted or null means it holds nothing.
    type: dict
  services:
    description:
      - The service VMs the device uses (their ids); a migration moves the device with them.
    type: list
    elements: str
    default: []
  period:
    description:
      - Validity period of the issued key (C(YYYY-MM) or C(YYYY-MM-DD), UTC). Default
        the current month; give the next month with O(renew=true) to issue ahead.
    type: str
  renew:
    description:
      - Issue a new bundle even though the device holds a current one.
    type: bool
    default: false
  ssid:
    description:
      - The SSID of the cloudlet's network (the shared fact C(cloudlet_network_ssid)).
    type: str
  eap_method:
    description:
      - The 802.1X method of the network credential.
    type: str
    choices: [pwd, tls]
    default: pwd
  master_key:
    description:
      - The cloudlet's IBE master key file (C(cloudlet_ibe_master_key)).
    type: path
    default: /etc/cloudlet/pki/ibe/ibe_master.key
  ca_cert:
    description:
      - The cloudlet's TLS CA certificate (C(cloudlet_ca_cert)).
    type: path
    default: /etc/cloudlet/pki/ca.pem
  manager_config:
    description:
      - The Manager's configuration; the admin socket and the API host devices dial
        are read from it.
    type: path
    default: /etc/cloudlet/manager.toml
  issuer:
    description:
      - With O(mode=delivery), the cloudlet whose credentials messages are awaited.
    type: str
  wait:
    description:
      - With O(mode=delivery), seconds to wait for every device to take its message.
    type: int
    default: 0
  messages:
    description:
      - With O(mode=messages), the messages to queue.
    type: list
    elements: dict
    default: []
    suboptions:
      device_id:
        description: The device's name here (C(id), or C(id@home) for a visitor).
        type: str
        required: true
      kind:
        description: A label for the device (e.g. C(credential)).
        type: str
        required: true
      issuer:
        description: The cloudlet that issued the sealed bundle.
        type: str
        required: true
      body:
        description: Base64 of the IBE ciphertext (type 4) sealed to the device.
        type: str
        required: true
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
requirements:
  - python >= 3.11
  - cloudlet (this project's package, with cryptography)
notes:
  - The module never returns a bundle in clear. Still, set C(no_log) on a task with
    O(delivery=passphrase), since RV(passphrase) opens the file.
"""

EXAMPLES = r"""
- name: Pair device-1 and seal its bundle to its pairing request
  cloudlet_credential_push:
    device: device-1
    public_key: "{{ __request.public_key }}"
    device_status: "{{ __status }}"
    ssid: "{{ cloudlet_network_ssid }}"
    master_key: "{{ cloudlet_ibe_master_key }}"
    ca_cert: "{{ cloudlet_ca_cert }}"
  register: __push

- name: Export a bundle for a device that is not an Ansible host
  cloudlet_credential_push:
    device: radio-7
    delivery: passphrase
    ssid: "{{ cloudlet_network_ssid }}"
  register: __export
  no_log: true

- name: Queue credentials a peer sealed to our devices
  cloudlet_credential_push:
    mode: messages
    messages:
      - {device_id: device-1, kind: credential, issuer: cloudlet-b, body: "{{ __sealed }}"}

- name: Revoke device-1 here
  cloudlet_credential_push:
    mode: revoke
    device: device-1
"""

RETURN = r"""
cloudlet_id:
  description: This cloudlet's id.
  returned: always
  type: str
issued:
  description: Whether a bundle was (or, in check mode, would be) issued.
  returned: mode is pair
  type: bool
reasons:
  description: Why a bundle was issued; empty when the device holds a current one.
  returned: mode is pair
  type: list
  elements: str
identity:
  description: The IBE identity of the device's key.
  returned: mode is pair
  type: str
  sample: cloudlet-id-v1/cloudlet-a/device-1/2026-11
valid_from:
  description: Start of the device's validity in the Manager (UTC, ISO 8601).
  returned: mode is pair
  type: str
valid_until:
  description: End of the device's validity in the Manager (UTC, ISO 8601, exclusive).
  returned: mode is pair
  type: str
ca_fingerprint:
  description: SHA-256 (hex) of this cloudlet's TLS CA, as the device reports it.
  returned: mode is pair
  type: str
envelope:
  description:
    - Base64 of the sealed bundle (transport envelope or passphrase-sealed file).
      Null when nothing was issued, and in check mode.
  returned: mode is pair
  type: str
passphrase:
  description: The generated passphrase of a passphrase-sealed bundle (a secret).
  returned: delivery is passphrase and a bundle was issued
  type: str
stored:
  description: The messages queued (device_id, kind, issuer, message_id).
  returned: mode is messages
  type: list
  elements: dict
skipped:
  description: Messages already queued and not acknowledged.
  returned: mode is messages
  type: list
  elements: dict
taken:
  description: Devices that have taken their message from O(issuer).
  returned: mode is delivery
  type: list
  elements: str
waiting:
  description: Devices that have not (yet).
  returned: mode is delivery
  type: list
  elements: str
device:
  description: The Manager's record of the device (no password).
  returned: mode is revoke
  type: dict
"""

import base64
import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet import pairing_push
    from cloudlet.admin_client import DEFAULT_SOCKET, AdminClient
    from cloudlet.errors import CloudletError
    from cloudlet.manager.config import load_config
    from cloudlet.migration import handoff
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def _manager(path):
    """The admin socket and the API host, from the Manager's own configuration."""
    try:
        config = load_config(path)
    except CloudletError:
        return DEFAULT_SOCKET, None
    return str(config.admin_socket), config.api_host or config.fqdn


def run_pair(module, admin, api_host):
    p = module.params
    if not p["ssid"]:
        module.fail_json(msg="ssid is required to pair a device (cloudlet_network_ssid).")
    out = pairing_push.pair_device(
        admin,
        p["device"],
        master_key=p["master_key"],
        ca_cert=p["ca_cert"],
        ssid=p["ssid"],
        api_host=api_host,
        delivery=p["delivery"],
        public_key=p["public_key"],
        device_status=p["device_status"],
        services=p["services"],
        period=p["period"],
        renew=p["renew"],
        eap_method=p["eap_method"],
        check_mode=module.check_mode,
    )
    result = dict(
        changed=out.changed,
        cloudlet_id=out.cloudlet_id,
        issued=out.issued,
        reasons=out.reasons,
        identity=out.identity,
        valid_from=out.valid_from,
        valid_until=out.valid_until,
        ca_fingerprint=out.ca_fingerprint,
        envelope=base64.b64encode(out.envelope).decode() if out.envelope else None,
    )
    if out.passphrase is not None:
        result["passphrase"] = out.passphrase
    if out.changed:
        result["diff"] = dict(
            before={"issued": False}, after={"identity": out.identity, "issued": out.issued}
        )
    return result


def run_delivery(module, admin):
    p = module.params
    if not p["issuer"] or len(p["services"]) != 1:
        module.fail_json(msg="mode=delivery needs issuer and exactly one service in services.")
    deadline = time.monotonic() + p["wait"]
    while True:
        out = handoff.delivery(admin, p["services"][0], p["issuer"])
        if not out["waiting"] or time.monotonic() >= deadline:
            break
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    cloudlet_id = admin.get("/admin/info")["cloudlet_id"]
    return dict(changed=False, cloudlet_id=cloudlet_id, **out)


def run(module):
    p = module.params
    socket, api_host = _manager(p["manager_config"])
    admin = AdminClient(socket)
    if p["mode"] == "messages":
        stored, skipped = pairing_push.store_messages(admin, p["messages"], module.check_mode)
        cloudlet_id = admin.get("/admin/info")["cloudlet_id"]
        return dict(changed=bool(stored), cloudlet_id=cloudlet_id, stored=stored, skipped=skipped)
    if p["mode"] == "delivery":
        return run_delivery(module, admin)
    if not p["device"]:
        module.fail_json(msg=f"device is required with mode={p['mode']}.")
    if p["mode"] == "revoke":
        out = pairing_push.revoke_device(admin, p["device"], module.check_mode)
        cloudlet_id = admin.get("/admin/info")["cloudlet_id"]
        return dict(changed=out["changed"], cloudlet_id=cloudlet_id, device=out["device"])
    if api_host is None:
        module.fail_json(
            msg=f"Cannot read the Manager's configuration {p['manager_config']}: is this "
            "cloudlet set up (playbooks/setup.yml)?"
        )
    return run_pair(module, admin, api_host)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            mode=dict(type="str", choices=["pair", "messages", "delivery", "revoke"],
                      default="pair"),
            issuer=dict(type="str"),
            wait=dict(type="int", default=0),
            device=dict(type="str"),
            delivery=dict(type="str", choices=["transport", "passphrase"], default="transport"),
            public_key=dict(type="str", no_log=False),
            device_status=dict(type="dict"),
            services=dict(type="list", elements="str", default=[]),
            period=dict(type="str"),
            renew=dict(type="bool", default=False),
            ssid=dict(type="str"),
            eap_method=dict(type="str", choices=["pwd", "tls"], default="pwd"),
            master_key=dict(
                type="path", default="/etc/cloudlet/pki/ibe/ibe_master.key", no_log=False
            ),
            ca_cert=dict(type="path", default="/etc/cloudlet/pki/ca.pem"),
            manager_config=dict(type="path", default="/etc/cloudlet/manager.toml"),
            messages=dict(
                type="list",
                elements="dict",
                default=[],
                options=dict(
                    device_id=dict(type="str", required=True),
                    kind=dict(type="str", required=True),
                    issuer=dict(type="str", required=True),
                    body=dict(type="str", required=True),
                ),
            ),
        ),
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    try:
        result = run(module)
    except (CloudletError, OSError, ValueError) as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc())
    module.exit_json(**result)


if __name__ == "__main__":
    main()
