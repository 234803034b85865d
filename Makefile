# core-api developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := .make
RUST_SOURCES := $(shell find rust -name '*.rs' 2>/dev/null) Cargo.toml $(wildcard Cargo.lock)

export CORE_API_TEST_DATABASE_URL ?= postgresql://127.0.0.1:5432/test
export CORE_API_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0

.PHONY: help install run test test-rust test-python bench lint fmt clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip 'maturin>=1.9,<2'

# One stamp for deps + the Rust build: rebuilt only when pyproject or Rust sources change.
$(STAMP)/installed: $(BIN)/python pyproject.toml $(RUST_SOURCES)
	@mkdir -p $(STAMP)
	VIRTUAL_ENV=$(abspath $(VENV)) $(BIN)/maturin develop --release --extras dev
	@$(BIN)/python -c 'import core_api._native' || { echo "native extension failed to build"; exit 1; }
	@touch $@

install: $(STAMP)/installed ## Create .venv, install dependencies and build the Rust extension (idempotent)

run: install ## Migrate the embedded database, bootstrap on first start, serve on 127.0.0.1:8000
	$(BIN)/core-api serve --first-run-bootstrap

test: install test-rust test-python ## Run every test (cargo + pytest)

test-rust:
	cargo test --quiet --no-default-features

# Two processes: the suite waits on servers, subprocesses and databases as much as it computes.
test-python: install
	$(BIN)/pytest -q -n 2 --durations=15

bench: install ## Run the benchmark suite (peak throughput, locust mixes, micro-benchmarks)
	$(BIN)/python -m benchmarks.run

lint: install ## ruff, mypy, stubtest (the Rust extension vs its .pyi), cargo clippy and fmt
	$(BIN)/ruff check python tests benchmarks
	$(BIN)/ruff format --check python tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest core_api._native
	cargo clippy --quiet --all-targets -- -D warnings
	cargo fmt --check

fmt: install ## Format Python and Rust sources
	$(BIN)/ruff format python tests benchmarks
	$(BIN)/ruff check --fix python tests benchmarks
	cargo fmt

clean: ## Remove build products and the virtualenv
	rm -rf $(VENV) $(STAMP) target python/core_api/*.so
