"""``netkit doctor``: a node's known network failure modes, probed, reported and, where a repair
is proven safe, repaired (docs/doctor.md)."""
