"""Renderers: a ``SpeakerConfig`` (or a whole plan) into a real speaker's configuration text.

Every module here is pure (no I/O): ``bird`` (BIRD 2), ``frr`` (FRR bgpd, plus the vtysh delta
between two configs), ``gobgp`` (GoBGP TOML plus the CLI commands that announce prefixes) and
``calico`` (Calico resources reproducing a plan's sessions).
"""
