"""The control plane's pure core: the API's definitions and the decisions the controllers and the
agent make from (Nodes, objects, per-node reports); no API client, no I/O."""
