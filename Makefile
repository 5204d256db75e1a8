# Two entry points do all set-up on a fresh Debian machine (as root), idempotently:
#   make demo   - the main job: the lab demo (an emulated data centre) on its embedded default
#   make test   - the whole suite: lint, types, import contracts, unit and real-peer tests
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test setup lint unit bench image clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py dnscache/_fastpath.c dnscache/_upstream.c scripts/bootstrap.sh
	bash scripts/bootstrap.sh
	touch $(STAMP)

demo: setup
	$(VENV)/bin/netkit lab demo --out demo-report

lint: setup
	$(VENV)/bin/ruff check netkit dnscache bgp labs tests benchmarks deploy
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# the DNS tests run twice: on the compiled fast path (the default, in the first pass) and on the
# pure-Python one (NETKIT_DNS_FAST_PATH=python: every server a test starts, in-process or not)
DNS_TESTS := tests/unit/test_read_question.py tests/unit/test_serving.py tests/unit/test_cache_rules.py \
	$(wildcard tests/integration/test_dns_*.py) tests/integration/test_demo.py tests/integration/test_dnspeers.py \
	tests/integration/test_slo_prometheus.py

test: setup lint
	$(PY) -m pytest -q -p no:cacheprovider --durations=15 $(PYTEST_ARGS)
	NETKIT_DNS_FAST_PATH=python $(PY) -m pytest -q -p no:cacheprovider --durations=5 $(DNS_TESTS)

# the container image, without pulling a base image: build/image/oci (OCI layout, tag 0.1.0)
image: setup
	bash scripts/build-image.sh build/image

bench: setup
	$(PY) benchmarks/dns_qps.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache build
