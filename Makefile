# Two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DAGSTER_HOME := $(CURDIR)/.dagster_home
DEMO_START := 2026-09-01
DEMO_DAYS := 60
DEMO_END := 2026-10-30
DEMO_LINES := 5000

.PHONY: install install-dev demo ui test bench validate clean prometheus chromium postgresql lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[bench]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(DAGSTER_HOME)/dagster.yaml: deployments/local/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp $< $@

demo: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/cost-pipeline sample --days $(DEMO_DAYS) --lines-per-day $(DEMO_LINES) --start $(DEMO_START) --out data
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/cost-pipeline run --notify --start $(DEMO_START) --end $(DEMO_END)
	$(BIN)/cost-pipeline evaluate
	@echo "Open the runs in the UI with: make ui"

ui: install $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(BIN)/dagster dev -w workspace.yaml

validate: install
	$(BIN)/dagster definitions validate -w workspace.yaml

# The usage tests run a real Prometheus (Debian package; promtool loads its data).
prometheus:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  echo "installing Prometheus (Debian package) for the usage tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# The dashboard tests drive Debian's Chromium with Playwright (its own browser download is not needed).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Chromium (Debian package) for the dashboard tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# The production-instance test runs Debian's PostgreSQL on loopback (started by the test itself).
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "installing PostgreSQL (Debian package) for the deployment tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }

test: install-dev prometheus chromium postgresql
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check cost_pipeline cost_pipeline_tests benchmarks

# One day at 1 M lines with 20,000 pods by default; e.g. BENCH_ARGS="--lines-per-day 10000000 --backfill-days 7"
bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)
	$(BIN)/python benchmarks/quality.py

clean:
	rm -rf lake data $(DAGSTER_HOME)
