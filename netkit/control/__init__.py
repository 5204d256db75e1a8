"""The Kubernetes control plane's place (the next issue builds it): the ``netkit.io`` API types,
the one module that imports ``kubernetes`` (the import-linter contract names it), the
leader-elected controller and the node agent, which embeds the planes (``dnscache.runner.
DnsService``, the L2 agent). It sits above the planes and below the labs and the CLI."""
