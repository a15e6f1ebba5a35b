"""Issue a cloudlet's CA and libvirt TLS certificates for a molecule scenario.

Stands in for the cloudlet_pki role: usage ``make_certs.py NAME ADDRESS``,
run with the cloudlet's venv. The server certificate names the host and the
pair address, which is what a peer dials for migration.
"""

import os
import sys

from cloudlet import pki


def main() -> None:
    name, address = sys.argv[1], sys.argv[2]
    paths = pki.LIBVIRT_PATHS
    for path in paths.values():
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    os.chmod(os.path.dirname(paths["server_key"]), 0o700)
    ca_key = pki.generate_key()
    ca_pem = pki.make_ca(ca_key, name)
    for role, profile in (("server", pki.Profile.LIBVIRT_SERVER),
                          ("client", pki.Profile.LIBVIRT_CLIENT)):
        key = pki.generate_key()
        names = pki.subject_names(name, [name], [address])
        cert = pki.issue_certificate(ca_key, ca_pem, key.public_key(), profile, names)
        pki.write_private_key(paths[f"{role}_key"], key)
        pki.write_certificate(paths[f"{role}_cert"], cert)
    pki.write_certificate(paths["ca"], ca_pem)  # last: the role's "creates" marker


if __name__ == "__main__":
    main()
