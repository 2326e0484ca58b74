# servewise: `make demo` and `make test` work on a fresh Debian machine (they install what they need).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := prometheus chromium

.PHONY: install system-deps demo test test-fast check bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Debian packages the real-component tests use: a real Prometheus and a headless Chromium.
system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! command -v chromium >/dev/null; then \
	  echo "installing $(APT_PACKAGES) with apt-get"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

demo: install
	$(BIN)/servewise demo

test: install system-deps
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

check: install
	$(BIN)/ruff check servewise tests bench
	$(BIN)/ruff format --check servewise tests bench
	$(BIN)/mypy servewise
	$(BIN)/lint-imports

# Speed/memory tables (not timed tests). The studies bench takes ~6 minutes on 2 cores.
bench: install system-deps
	$(BIN)/python bench/perf_speed.py
	$(BIN)/python bench/sim_speed.py
	$(BIN)/python bench/telemetry_scale.py
	$(BIN)/servewise bench optimizer --scenarios 3 --seed 0
	$(BIN)/python bench/studies_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache out
