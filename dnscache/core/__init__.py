"""The DNS cache's pure core: wire format, cache, scrubbing, upstream selection, the resolution
state machine (driven by callbacks), configuration. No I/O (import-linter), strict typing (mypy)."""
