"""``python -m cloudlet.manager --config FILE``: run the Cloudlet Manager until signalled.

systemd starts it (the cloudlet_manager role writes the unit). Errors an
operator can fix are printed as one line with the hint and exit code 2,
not as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from cloudlet.errors import CloudletError
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cloudlet-manager", description=__doc__)
    parser.add_argument("--config", required=True, help="TOML or JSON configuration file")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    parser.add_argument("--check", action="store_true", help="validate the configuration and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = load_config(args.config)
        if args.check:
            print(f"configuration OK for cloudlet {cfg.cloudlet_id}")
            return 0
        asyncio.run(_run(Manager(cfg)))
    except CloudletError as exc:
        print(f"cloudlet-manager: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
