#!/usr/bin/python

# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
---
module: cloudlet_pairing
short_description: Pair two cloudlets over a temporary link protected by a voice code
description:
  - Runs on the cloudlet, as root, with the cloudlet venv's interpreter, beside a running
    Cloudlet Manager. The protocol is the package's (C(cloudlet.peering)); this module only
    maps options to it.
  - O(action=code) makes a fresh voice code (and, on a radio, a fresh network name) for the
    host side's admin to read out; the code's attempt record starts its lifetime.
  - O(action=pair) runs one side. The host side brings up the temporary link (a WPA3-SAE
    access point whose password the code derives, or a link-local address on an Ethernet
    interface) and waits for the join side; the join side joins it. Both run the PAKE, swap
    their sealed pairing bundles, store the peer pending in the Manager (TLS CA, IBE params,
    the network credential each issues the other, FQDN and port) and in libvirt's CA file,
    and confirm it with a mutual-TLS handshake of their long-term certificates. The link is
    torn down on success, failure, timeout and interrupt alike.
  - A wrong code fails on both sides within seconds; after 3 failures (counted on disk,
    across runs) the code is dead. A peer already paired is only replaced with
    O(replace=true).
  - O(action=unpair) forgets a peer, in the Manager (trust and both network credentials)
    and in libvirt's CA file.
options:
  action:
    description:
      - What to do.
    type: str
    choices: [code, pair, unpair]
    required: true
  peer:
    description:
      - The other cloudlet's id (O(action=pair) and O(action=unpair)). With O(action=code),
        no code is made when the pairing would be refused (already paired, no O(replace)).
    type: str
  side:
    description:
      - V(host) shows the code and waits; V(join) types it and joins.
    type: str
    choices: [host, join]
  code:
    description:
      - The voice code, as the host side's admin read it out (O(action=pair)).
    type: str
  backend:
    description:
      - V(radio) for a WPA3-SAE access point (host) or station (join) on O(interface);
        V(wired) for an Ethernet interface that already joins the two cloudlets.
    type: str
    choices: [radio, wired]
    default: radio
  interface:
    description:
      - The interface the temporary link runs on (O(action=pair)).
    type: str
  ssid:
    description:
      - The temporary network's name the host side showed (O(side=join), O(backend=radio)).
    type: str
  timeout:
    description:
      - Seconds to wait for the other side.
    type: int
    default: 300
  replace:
    description:
      - Pair again with a cloudlet already paired, replacing its credentials.
    type: bool
    default: false
  manager_config:
    description:
      - The Manager's configuration; the cloudlet id, FQDN, port, field SSID, CA, server
        certificate and admin socket come from it.
    type: path
    required: true
  params:
    description:
      - This cloudlet's IBE public parameters.
    type: path
    required: true
  ledger_dir:
    description:
      - Where each code's attempts are kept (root's, C(0700)).
    type: path
    required: true
  trust_dir:
    description:
      - The directory libvirt's CA file is built from (C(ca.pem), C(peer-<id>.pem)).
    type: path
    required: true
  libvirt_ca_cert:
    description:
      - libvirt's CA file.
    type: path
    required: true
  libvirt_reload:
    description:
      - The command that makes libvirt re-read its CA file (running domains are not touched);
        with modular daemons, e.g. C([virt-admin, -c, "virtproxyd:///system", server-update-tls,
        virtproxyd]).
    type: list
    elements: str
    default: [virt-admin, server-update-tls, libvirtd]
extends_documentation_fragment:
  - cloudlet_peer
attributes:
  check_mode:
    support: partial
    details: O(action=code) and O(action=pair) do nothing and report a change; O(action=unpair)
      reports whether it would remove anything.
  diff_mode:
    support: none
  platform:
    platforms: posix
requirements:
  - python >= 3.11
  - cloudlet (this project's package)
  - hostapd and wpa_supplicant for O(backend=radio)
notes:
  - O(code) is a C(no_log) option. O(action=code) returns the code for the admin to read
    out - register it with C(no_log), show it once, and keep it out of files.
"""

EXAMPLES = r"""
- name: Make a code for the admin to read out
  cloudlet_pairing:
    action: code
    backend: wired
    manager_config: /etc/cloudlet/manager.toml
    params: /etc/cloudlet/pki/ibe/ibe_params.bin
    peer_cert: /etc/cloudlet/pki/peer.pem
    peer_key: /etc/cloudlet/pki/private/peer.key
    ledger_dir: /var/lib/cloudlet/pairing
    trust_dir: /etc/cloudlet/pki/libvirt-trust
    libvirt_ca_cert: /etc/pki/CA/cacert.pem
  register: pairing_code
  no_log: true

- name: Pair with cloudlet-b, this cloudlet hosting the link
  cloudlet_pairing:
    action: pair
    side: host
    peer: cloudlet-b
    code: "{{ pairing_code.code }}"
    backend: wired
    interface: pair0
    manager_config: /etc/cloudlet/manager.toml
    params: /etc/cloudlet/pki/ibe/ibe_params.bin
    peer_cert: /etc/cloudlet/pki/peer.pem
    peer_key: /etc/cloudlet/pki/private/peer.key
    ledger_dir: /var/lib/cloudlet/pairing
    trust_dir: /etc/cloudlet/pki/libvirt-trust
    libvirt_ca_cert: /etc/pki/CA/cacert.pem
"""

RETURN = r"""
code:
  description: The new voice code (O(action=code)); read it out, never store it.
  returned: when action is code, not in check mode
  type: str
ssid:
  description: The temporary network's name to read out with the code (O(backend=radio)).
  returned: when action is code
  type: str
peer:
  description: The peer's cloudlet id.
  returned: when action is pair
  type: str
ca_fingerprint:
  description: SHA-256 of the peer's CA certificate (DER), for the admins to compare.
  returned: when action is pair, not in check mode
  type: str
replaced:
  description: Whether an earlier pairing with the peer was replaced.
  returned: when action is pair, not in check mode
  type: bool
confirmed:
  description: Whether both sides confirmed; if not, the peer is kept pending until the
    first call between the two Managers confirms it.
  returned: when action is pair, not in check mode
  type: bool
note:
  description: Why the pairing is still pending, if it is.
  returned: when action is pair, not in check mode
  type: str
"""

import signal
import traceback
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

try:
    from cloudlet.errors import CloudletError
    from cloudlet.manager.config import load_config
    from cloudlet.peering import ceremony
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def _local(p):
    return ceremony.Local.from_manager(
        load_config(p["manager_config"]), params=Path(p["params"]),
        client_cert=Path(p["peer_cert"]), client_key=Path(p["peer_key"]),
        ledger_dir=Path(p["ledger_dir"]), libvirt_trust_dir=Path(p["trust_dir"]),
        libvirt_ca_file=Path(p["libvirt_ca_cert"]), libvirt_reload=tuple(p["libvirt_reload"]))


def run(module):
    p = module.params
    local = _local(p)
    if p["action"] == "code":
        if module.check_mode:
            return dict(changed=True)
        code, ssid = ceremony.new_code(local, p["backend"], p["peer"], p["replace"])
        return dict(changed=True, code=str(code), ssid=ssid)
    if p["action"] == "unpair":
        return dict(changed=ceremony.unpair(local, p["peer"], module.check_mode), peer=p["peer"])
    if module.check_mode:
        return dict(changed=True, peer=p["peer"])
    report = ceremony.pair(local, p["side"], p["peer"], p["code"], p["backend"], p["interface"],
                           p["ssid"], p["timeout"], p["replace"])
    return dict(changed=True, peer=report.peer, ca_fingerprint=report.ca_fingerprint,
                replaced=report.replaced, confirmed=report.confirmed, note=report.note)


def _interrupted(signum, frame):
    # Ansible stops a module with SIGTERM (a timeout, the admin's Ctrl-C on the
    # controller): unwind, so the link comes down and nothing half-done is kept.
    raise KeyboardInterrupt


def main():
    signal.signal(signal.SIGTERM, _interrupted)
    module = AnsibleModule(
        argument_spec=dict(
            action=dict(type="str", required=True, choices=["code", "pair", "unpair"]),
            peer=dict(type="str"),
            side=dict(type="str", choices=["host", "join"]),
            code=dict(type="str", no_log=True),
            backend=dict(type="str", default="radio", choices=["radio", "wired"]),
            interface=dict(type="str"),
            ssid=dict(type="str"),
            timeout=dict(type="int", default=300),
            replace=dict(type="bool", default=False),
            manager_config=dict(type="path", required=True),
            params=dict(type="path", required=True),
            peer_cert=dict(type="path", required=True),
            peer_key=dict(type="path", required=True),
            ledger_dir=dict(type="path", required=True),
            trust_dir=dict(type="path", required=True),
            libvirt_ca_cert=dict(type="path", required=True),
            libvirt_reload=dict(type="list", elements="str",
                                default=["virt-admin", "server-update-tls", "libvirtd"]),
        ),
        required_if=[
            ("action", "pair", ("peer", "side", "code", "interface")),
            ("action", "unpair", ("peer",)),
        ],
        supports_check_mode=True,
    )
    if not HAS_CLOUDLET:
        module.fail_json(msg=missing_required_lib("cloudlet"), exception=CLOUDLET_IMPORT_ERROR)
    p = module.params
    if p["action"] == "pair" and p["backend"] == "radio" and p["side"] == "join" and not p["ssid"]:
        module.fail_json(msg="The join side of a radio pairing needs the network name (ssid) "
                             "the host side showed with the code.")
    try:
        module.exit_json(**run(module))
    except CloudletError as exc:
        module.fail_json(msg=str(exc), peer=p["peer"])
    except KeyboardInterrupt:
        module.fail_json(msg="Interrupted; the pairing link was taken down and nothing was kept.")


if __name__ == "__main__":
    main()
