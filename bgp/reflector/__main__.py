"""``python -m bgp.reflector --config FILE``: the same as ``netkit bgp reflector``."""

import sys

from netkit.cli.reflector import main

sys.exit(main())
