"""Shared plumbing that every plane uses and that imports no plane: addresses, field validation
that reports every error at once, structured logs."""
