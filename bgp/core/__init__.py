"""The BGP plane's pure core: inventory and model, the reflector planner, route propagation,
the migration plan, speaker state as data, and the renderers (BIRD, FRR, GoBGP, Calico, ExaBGP).
No I/O (import-linter), strict typing (mypy)."""
