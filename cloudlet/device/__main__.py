"""``python -m cloudlet.device``: the same as the ``cloudlet-device`` command."""

import sys

from cloudlet.device.cli import main

sys.exit(main())
