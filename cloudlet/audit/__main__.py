"""``python -m cloudlet.audit``: see ``cloudlet.audit.cli``."""

import sys

from cloudlet.audit.cli import main

sys.exit(main())
