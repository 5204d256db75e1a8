"""L2 isolation: per-tenant VXLAN / 802.1Q segments made real by a node agent.

Pure core (no I/O): ``model`` (declared networks, YAML loading and validation), ``state``
(kernel objects as plain values, naming and ownership), ``plan`` (desired + observed ->
ordered operations). Effects at the edge: ``kernel`` (pyroute2: read a namespace into the
model, apply a plan), ``agent`` (apply/status/agent commands, drift repair, probes and
rollback, metrics), ``lab`` (namespaces for tests and demos).
"""
