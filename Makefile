# Two entry points for newcomers (see README.md):
#   make repro   set up the environment and run the whole pipeline (`dvc repro`) on the embedded toy suite
#   make test    set up the environment and run the test suite (the fast tests; `make test-slow` runs the rest)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: setup repro test test-slow clean-outputs

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev,cluster]"
	rm -f $(VENV)/.installed-*
	touch $@

setup: $(STAMP)

repro: setup
	dvc repro
	@echo "Tables: reports/summary.md   MLflow UI: mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: setup
	ruff check clipbench stages tests scripts
	ruff format --check clipbench stages tests scripts
	python -m pytest -m "not slow" --durations=10

# End-to-end tests (minutes); CI runs them after `make test`. Two workers, a test file each at a time: the files
# are independent workspaces and services, and each spends much of its time waiting (DVC, SLURM, subprocesses).
test-slow: setup
	python -m pytest -m slow -n 2 --dist loadfile --durations=15

clean-outputs:
	rm -rf data features models results mlflow.db .cells
