"""A BGP route reflector (RFC 4456) on ExaBGP, with its decisions in Python.

ExaBGP speaks BGP and hands every message to an API process; this package is that process and
what starts it:

- pure, I/O-free modules: ``route`` (path attributes, peers), ``bestpath`` (RFC 4271 + 4456
  selection), ``policy`` (prefix filters, max-prefix), ``rib`` (the reflector: RIBs, reflection
  rules, what to send to whom), ``exabgp_api`` (ExaBGP's JSON in, its text commands out),
  ``config`` (the YAML file) and ``exabgp_conf`` (the ``exabgp.conf`` it implies);
- effects: ``process`` (the API process: a reader and a writer thread around ``rib.Reflector``,
  metrics over HTTP), ``exabgp_main`` (ExaBGP with two measured fixes to its scheduling),
  ``launcher`` (renders the config, runs ExaBGP, forwards signals), ``cli`` and ``lab`` (a
  manager for tests and benchmarks).

See docs/bgp-reflector.md.
"""
