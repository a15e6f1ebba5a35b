"""The device client (``cloudlet-device``): the Cloudlet-Ready App for a Linux device.

Modules, each with one job: ``sealed`` (passphrase-sealed files),
``store`` (the credential directory), ``importer`` (verify and install a
first bundle), ``api`` (the Manager's device API over HTTPS with identity
proofs), ``messages`` (new credentials after a migration), ``svm`` (reach
a service VM by FQDN), ``network`` (the seam for joining a network),
``client`` (all of it as one object) and ``cli``.
"""

from cloudlet.device.client import Credential, DeviceClient, Status

__all__ = ["Credential", "DeviceClient", "Status"]
