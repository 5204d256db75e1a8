"""Labs: worlds built in network namespaces with real peers, for tests, benchmarks, the demo, the
chaos harness, ``l2 verify`` and ``bgp migrate --lab`` (run ids and temp dirs, DNS and BGP peer
daemons, the UML runner, the fuzzer), and the generator of ``deploy/monitoring``.

Product code never imports this package; the commands above load it when run
(``netkit.cli.cmdline.load_lab``). It is not in the wheel: it runs from a source checkout.
"""
