"""The L2 plane's pure core: the networks model, the kernel state as data, and the planner
(desired state -> plan, ``simulate``). No I/O (import-linter), strict typing (mypy)."""
