# prefect-mlops: `make run` (demo of the continuous-training pipeline) and `make test`.
# Both create .venv. `make run` installs only what the product needs (the package and
# psycopg for PostgreSQL); `make test` (and `make setup`) add the test extras (pytest,
# moto, schemathesis, dask, and MLflow for the compatibility tests) and install
# PostgreSQL's server when it is missing (the suite starts its own cluster and S3 endpoint)
# and Chromium for the web UI's browser tests.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP  := $(VENV)/.installed
PEER   := .venv-peer

.PHONY: setup run test test-fast bench bench-postgres bench-scenarios clean

$(RUN_STAMP): pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c .ci/constraints.txt -e '.[postgres]'
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c .ci/constraints.txt -e '.[tests]'
	touch $(STAMP) $(RUN_STAMP)

# The development setup: the product and the test extras.
setup: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/prefect-mlops demo

test: $(STAMP)
	bash .ci/ensure-postgres
	bash .ci/ensure-chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Everything but the tests marked slow.
test-fast: $(STAMP)
	bash .ci/ensure-postgres
	bash .ci/ensure-chromium
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow"

# Side-by-side benchmarks: MLflow goes into its own venv (.venv-peer), never into ours.
$(PEER)/.installed: .ci/constraints.txt Makefile
	test -x $(PEER)/bin/python || $(PYTHON) -m venv $(PEER)
	$(PEER)/bin/python -m pip install -q --upgrade pip
	$(PEER)/bin/python -m pip install -q -c .ci/constraints.txt mlflow scikit-learn pandas 'psycopg[binary]'
	touch $(PEER)/.installed

bench: $(STAMP) $(PEER)/.installed
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	PEER_PYTHON=$(PEER)/bin/python $(BIN)/python bench/run.py
	$(MAKE) bench-scenarios

# The 30-day simulations of every shipped scenario (issue 20; about 25 minutes), the second
# half of `make bench`: writes RESULTS.md's scenario section.
bench-scenarios: $(STAMP)
	$(BIN)/python bench/scenarios.py "$$(mktemp -d)" --write-results

# The PostgreSQL side by side (issue 19): starts its own PostgreSQL cluster (as the suite
# does), one database per side and workload; prints a table and, last, one JSON line.
bench-postgres: $(STAMP) $(PEER)/.installed
	bash .ci/ensure-postgres
	PEER_PYTHON=$(PEER)/bin/python $(BIN)/python bench/pg.py

clean:
	rm -rf $(VENV) $(PEER) mlops.db mlops.db-* mlops-artifacts build *.egg-info
