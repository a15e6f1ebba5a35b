"""The control node's own state: one directory, wherever Ansible runs from.

What the ceremonies keep on the control laptop - the manifest signing key,
the delivery records with the cloudlets' SSH host keys, and the audit log -
must outlive any one run. Kept under one directory, a run from a container or
an AWX job that is given the same directory signs with the same key, trusts
the same host keys and continues the same audit chain. Nothing of it goes
into a home directory, which such runs do not keep.

The rule, written only here: ``$CLOUDLET_CONTROL_DIR`` if it is set, else
``control/`` in the project checkout (gitignored). The role default
``cloudlet_control_dir`` (role ``cloudlet_common``, through its lookup
plugin) and the audit callback both call ``control_dir``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["DIRNAME", "ENV", "control_dir"]

ENV = "CLOUDLET_CONTROL_DIR"
DIRNAME = "control"


def control_dir(project: str | os.PathLike, environ: Mapping[str, str] | None = None) -> Path:
    """``$CLOUDLET_CONTROL_DIR`` (``~`` expanded, made absolute), else ``<project>/control``.

    An empty variable counts as unset, so ``CLOUDLET_CONTROL_DIR=`` in a job
    template does not put the signing key into the working directory.
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get(ENV, "").strip()
    if chosen:
        return Path(os.path.abspath(os.path.expanduser(chosen)))
    return Path(os.path.abspath(os.fspath(project))) / DIRNAME
