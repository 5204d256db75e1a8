"""BGP route reflectors: topology planning and rendering (``core``), the live migration from a
full mesh (``migrate``, ``control``), and a reflector in Python on ExaBGP (``reflector``)."""
