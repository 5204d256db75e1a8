"""BGP route reflectors: topology planning, renderers, live migration (coming with later issues)."""
