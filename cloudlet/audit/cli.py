"""The command line: ``python -m cloudlet.audit verify LOGFILE``.

It lives here rather than in ``__main__`` so that ``cloudlet.audit.main`` can
be imported without running ``python -m`` machinery twice (runpy warns when
``__main__`` was already imported by the package).
"""

from __future__ import annotations

import argparse
import sys

from cloudlet.audit.log import default_key_path, load_key
from cloudlet.audit.verification import verify
from cloudlet.errors import CloudletError


def main(argv: list[str] | None = None) -> int:
    """``python -m cloudlet.audit verify LOGFILE``: 0 = intact, 1 = broken, 2 = cannot check."""
    parser = argparse.ArgumentParser(prog="python -m cloudlet.audit")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("verify", help="verify a ceremony audit log")
    check.add_argument("logfile")
    check.add_argument("--key", help="HMAC key file (default: LOGFILE.key if it exists)")
    check.add_argument("--no-key", action="store_true", help="the log is not keyed")
    check.add_argument("--head", help="head file (default: LOGFILE.head)")
    args = parser.parse_args(argv)
    try:
        key = None
        if args.key:
            key = load_key(args.key)
        elif not args.no_key and default_key_path(args.logfile).exists():
            key = load_key(default_key_path(args.logfile))
        result = verify(args.logfile, key, args.head)
    except CloudletError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    print(result)
    for note in result.warnings:
        print(f"warning: {note}", file=sys.stderr)
    if result.ok and not result.keyed:
        print(
            "warning: the chain is not keyed; anyone who can edit the file can rewrite it.",
            file=sys.stderr,
        )
    return 0 if result.ok else 1
