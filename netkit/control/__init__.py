"""The Kubernetes control plane. Built so far: ``core``, its pure decisions (the ``netkit.io`` CRDs,
conditions, selectors, per-node L2 desired state, rollouts) and ``crdgen``. To come: the API types,
the one module that imports ``kubernetes`` (the import-linter contract names it), the
leader-elected controller and the node agent, which embeds the planes (``dnscache.runner.
DnsService``, the L2 agent). It sits above the planes and below the labs and the CLI."""
