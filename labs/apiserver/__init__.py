"""The API server tests and the lab run against (issue 14 builds it): so far the CRD schema
checks kube-apiserver applies to a custom resource (``schema``)."""
