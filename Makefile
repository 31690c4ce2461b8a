# FleetTUI: every target installs what it needs (venv, Python packages, Debian services).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test check lint typecheck imports bench services

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Real services for the integration tests (installed, never started: tests start their own).
# PostgreSQL (the DuckLake catalog): Debian keeps initdb/postgres in /usr/lib/postgresql/<ver>/bin.
services:
	@if ! command -v mosquitto >/dev/null || ! command -v mosquitto_sub >/dev/null || \
	    ! command -v prometheus >/dev/null || ! command -v prometheus-alertmanager >/dev/null || \
	    ! command -v openssl >/dev/null || \
	    ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing mosquitto, prometheus, prometheus-alertmanager, openssl and postgresql (Debian packages) for the integration tests"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq mosquitto mosquitto-clients \
	    prometheus prometheus-alertmanager openssl postgresql >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/fleettui demo

test: $(STAMP) services
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check fleettui collectors storage tests benchmarks scripts
	$(BIN)/ruff check fleettui collectors storage tests benchmarks scripts

# mypy over storage/ and collectors/ ([tool.mypy] in pyproject.toml)
typecheck: $(STAMP)
	$(BIN)/mypy

# the layering contracts ([tool.importlinter] in pyproject.toml)
imports: $(STAMP)
	$(BIN)/lint-imports

check: lint typecheck imports test

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_ingest.py
