"""``python -m netkit.cli``: the same as ``netkit``."""

import sys

from netkit.cli import main

sys.exit(main())
