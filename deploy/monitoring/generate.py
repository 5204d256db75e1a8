"""Generate the monitoring files from rules/netkit-dns.rules.yaml: ``labs.monitoring``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.monitoring import main

sys.exit(main())
