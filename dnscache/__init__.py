"""Node-local caching DNS responder: fast hit path, serve-stale, prefetch, health-checked upstreams."""
