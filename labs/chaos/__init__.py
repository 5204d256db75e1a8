"""Chaos experiments against real components (``netkit chaos``).

``schedule`` and ``workload`` are pure (the fault plan, the query stream, the scoring); ``lab``,
``faultproxy``, ``loadgen``, ``runner`` and ``report`` do the I/O.
"""
