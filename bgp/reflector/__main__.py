"""``python -m bgp.reflector --config FILE``: the same as ``netkit bgp reflector``."""

import sys

from bgp.reflector.cli import main

sys.exit(main())
