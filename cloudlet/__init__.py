"""Tactical cloudlets: secure VM migration between vehicle-borne servers.

The package does the real work behind the Ansible ceremonies: crypto
(identity-based keys, voice-code pairing), strict file formats, and the
services that the playbooks configure.
"""

__version__ = "0.1.0"
