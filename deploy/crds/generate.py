"""Generate the CRDs in this directory from netkit/control/core/crds.py (``--check``: compare)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from netkit.control.crdgen import main

sys.exit(main())
