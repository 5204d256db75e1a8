"""netkit-cni: pods on L2Networks through CNI (the plugin, its records for the node agent)."""
