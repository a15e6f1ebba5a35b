"""Where the control node gets Debian packages from.

The lab image and the demo SVM are built from the mirror the control node's own
apt sources already name, so neither needs a host of its own.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from cloudlet.errors import CloudletError

__all__ = ["host_mirror"]

_SOURCE_RE = re.compile(r"^\s*(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", re.MULTILINE)


def host_mirror(paths: Iterable[str] | None = None) -> str:
    """The first Debian archive URL in the given apt sources (default: the host's)."""
    if paths is None:
        extra = sorted(str(p) for p in Path("/etc/apt/sources.list.d").glob("*")
                       if p.suffix in (".list", ".sources"))
        paths = ("/etc/apt/sources.list", *extra)
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            continue
        for uri in _SOURCE_RE.findall(text):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise CloudletError(
        "No Debian mirror found in the control node's apt sources.",
        "Name one explicitly: lab_debian_mirror for the lab, --mirror for the SVM builder.",
    )
