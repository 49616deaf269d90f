# Two commands a user needs: `make demo` and `make test`. Both run the idempotent `make setup`.
.PHONY: setup demo test lint typecheck unit integration torture bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/migrator demo

lint: setup
	.venv/bin/ruff check migrator tests bench
	.venv/bin/ruff format --check migrator tests bench

typecheck: setup
	.venv/bin/mypy

unit: setup
	.venv/bin/pytest -q tests/unit

integration: setup
	.venv/bin/pytest -q tests/integration

test: setup
	.venv/bin/ruff check migrator tests bench
	.venv/bin/ruff format --check migrator tests bench
	.venv/bin/mypy
	.venv/bin/pytest -q -ra --durations=15 tests

# The convergence harness, long: seeds from SEED on, binlog and Debezium, until MINUTES pass.
SEED ?= 1
MINUTES ?= 30
SECONDS_PER_SEED ?= 20
torture: setup
	.venv/bin/python -m tests.torture.harness --seed $(SEED) --minutes $(MINUTES) \
		--seconds $(SECONDS_PER_SEED) --source both

bench: setup
	.venv/bin/python bench/backfill.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
