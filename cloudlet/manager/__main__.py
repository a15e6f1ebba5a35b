"""``python -m cloudlet.manager --config FILE``: run the Cloudlet Manager until signalled.

systemd starts it (the cloudlet_manager role writes the unit). Errors an
operator can fix are printed as one line with the hint and exit code 2,
not as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
from pathlib import Path

import cloudlet
from cloudlet.errors import CloudletError
from cloudlet.manager import logsafe
from cloudlet.manager.app import Manager
from cloudlet.manager.config import load_config


async def _run(manager: Manager) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await manager.start()
    try:
        await stop.wait()
    finally:
        await manager.stop()


def code_identity() -> str:
    """The package's version and a digest of its installed files.

    The digest changes whenever the code does, even when a rebuilt wheel keeps
    its version. The cloudlet_manager role writes it into the configuration,
    so new code restarts the service.
    """
    root = Path(cloudlet.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".sh")):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root)}\0{len(data)}\0".encode() + data)
    return f"cloudlet {cloudlet.__version__} code sha256:{digest.hexdigest()}"


class _Version(argparse.Action):
    """``--version``: the digest is computed only when asked, not at every start."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the code identity and exit")

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(code_identity())
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudlet-manager", description=__doc__)
    parser.add_argument("--version", action=_Version)
    parser.add_argument("--config", required=True, help="TOML or JSON configuration file")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
        if args.check:
            print(f"configuration OK for cloudlet {cfg.cloudlet_id}")
            return 0
        # Not basicConfig: every line the daemon logs goes through the escaping formatter.
        logsafe.install(args.log_level.upper())
        asyncio.run(_run(Manager(cfg)))
    except CloudletError as exc:
        print(f"cloudlet-manager: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
