# cronhive — `make up` runs the local cluster, `make test` the test suite.
# Both create .venv and install into it when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install up test lint chaos clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

up: $(STAMP)
	$(BIN)/cronhive up

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The chaos suite's full profile (make test runs its bounded one): 20 leader kills,
# longer outages and a full RabbitMQ restart -- it stops the machine's RabbitMQ, so
# never run it beside another suite.
chaos: $(STAMP)
	CHAOS_PROFILE=full $(BIN)/python -m pytest tests/chaos $(PYTEST_ARGS)

# ruff (lint + import order) over the repository; mypy --strict over the
# `cronhive` package. mypy cannot follow pyproject's package-dir map, so .lint/
# holds a link tree that lays the namespace out as the wheel does.
lint: $(STAMP)
	$(BIN)/ruff check .
	rm -rf .lint && mkdir -p .lint/cronhive
	for entry in shared/*; do ln -s "$(CURDIR)/$$entry" .lint/cronhive/; done
	for folder in api scheduler worker; do ln -s "$(CURDIR)/$$folder" .lint/cronhive/$$folder; done
	cd .lint && ../$(BIN)/mypy --config-file ../pyproject.toml -p cronhive

clean:
	rm -rf $(VENV) .data .lint

# Benchmarks (bench/README.md). The peers (celery, periodiq, APScheduler 3) get
# their own pinned venv: celery pins python-dateutil 2.9.0.post0, the test stack 4.0.0.
PEERS_VENV  := bench/.venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed-stamp

.PHONY: bench bench-full

$(PEERS_STAMP): bench/requirements-peers.txt
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install --quiet --no-deps -r bench/requirements-peers.txt
	$(PEERS_VENV)/bin/python -m pip check
	touch $(PEERS_STAMP)

bench: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python -m bench --profile quick $(BENCH_ARGS)

bench-full: $(STAMP) $(PEERS_STAMP)
	$(BIN)/python -m bench --profile full $(BENCH_ARGS)
