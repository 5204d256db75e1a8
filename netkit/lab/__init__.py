"""Lab plumbing: run ids, temp dirs, free ports and real peer daemons for tests and benchmarks."""
