# Copyright: (c) 2026, Tactical Cloudlets project
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations


class ModuleDocFragment:
    """The options of every module that calls a paired cloudlet's peer API."""

    DOCUMENTATION = r"""
options:
  peer_cert:
    description:
      - The client certificate this cloudlet presents to paired cloudlets (mutual TLS).
    type: path
    required: true
  peer_key:
    description:
      - Its key.
    type: path
    required: true
"""
