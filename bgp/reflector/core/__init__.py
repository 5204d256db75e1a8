"""The reflector's pure core: routes, best path, policy, the RIB and its events, the BGP UPDATE
wire format, the ExaBGP API as data, the configuration. No I/O (import-linter), strict typing."""
