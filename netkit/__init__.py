"""netkit: network and DNS reliability toolkit for Kubernetes data centres."""

__version__ = "0.1.0"
