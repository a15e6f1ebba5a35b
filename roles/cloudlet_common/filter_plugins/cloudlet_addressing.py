# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Filters that derive addresses from a subnet; shims over ``cloudlet.addressing``.

``cloudlet_subnet_host(subnet, n)``: the subnet's n-th host address
(``'10.200.0.0/24' | cloudlet_subnet_host(1)`` is ``10.200.0.1``).
``cloudlet_subnet_prefix(subnet)``: its prefix length (``24``).
"""

from __future__ import annotations

import traceback

from ansible.errors import AnsibleFilterError

try:
    from cloudlet import addressing
    from cloudlet.errors import CloudletError
except ImportError:
    HAS_CLOUDLET = False
    CLOUDLET_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_CLOUDLET = True
    CLOUDLET_IMPORT_ERROR = None


def _call(function, *args):
    if not HAS_CLOUDLET:
        raise AnsibleFilterError(
            "The cloudlet package cannot be imported. Install it for the Python that runs "
            f"Ansible.\n{CLOUDLET_IMPORT_ERROR}"
        )
    try:
        return function(*args)
    except CloudletError as exc:
        raise AnsibleFilterError(str(exc)) from None


def cloudlet_subnet_host(subnet, index=1):
    try:
        index = int(index)
    except (TypeError, ValueError):
        raise AnsibleFilterError(f"The host number {index!r} is not a whole number.") from None
    return _call(addressing.subnet_host, subnet, index)


def cloudlet_subnet_prefix(subnet):
    return _call(addressing.subnet_prefix, subnet)


class FilterModule:
    def filters(self):
        return {
            "cloudlet_subnet_host": cloudlet_subnet_host,
            "cloudlet_subnet_prefix": cloudlet_subnet_prefix,
        }
