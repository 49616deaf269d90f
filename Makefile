# Two commands a user needs: `make demo` and `make test`. Both run the idempotent `make setup`.
.PHONY: setup demo test lint typecheck unit integration torture bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/migrator demo

lint: setup
	.venv/bin/ruff check migrator tests bench
	.venv/bin/ruff format --check migrator tests bench
	.venv/bin/lint-imports

typecheck: setup
	.venv/bin/mypy

# The suite runs in two worker processes, each starting its own throwaway servers (the tests wait
# on servers far more than they compute: 2 workers take ~10 min on 2 cores, 1 takes ~17). With
# servers given by MIGRATOR_TEST_*_URL the workers would share them: one worker then.
PYTEST_WORKERS ?= $(if $(MIGRATOR_TEST_MYSQL_URL)$(MIGRATOR_TEST_MONGO_URL),0,2)
PYTEST_PARALLEL = -n $(PYTEST_WORKERS) --dist worksteal

unit: setup
	.venv/bin/pytest -q tests/unit

integration: setup
	.venv/bin/pytest -q $(PYTEST_PARALLEL) tests/integration

test: setup
	.venv/bin/ruff check migrator tests bench
	.venv/bin/ruff format --check migrator tests bench
	.venv/bin/lint-imports
	.venv/bin/mypy
	.venv/bin/pytest -q -ra --durations=15 $(PYTEST_PARALLEL) tests

# The convergence harness, long: seeds from SEED on, binlog and Debezium, until MINUTES pass.
SEED ?= 1
MINUTES ?= 30
SECONDS_PER_SEED ?= 20
torture: setup
	.venv/bin/python -m tests.torture.harness --seed $(SEED) --minutes $(MINUTES) \
		--seconds $(SECONDS_PER_SEED) --source both

# Every bench, one after the other (each starts its own servers and prints its figures and the
# MongoDB server it used); about 15 minutes on 2 cores.
bench: setup
	.venv/bin/python bench/backfill.py
	.venv/bin/python bench/cdc.py
	.venv/bin/python bench/cdc_debezium.py
	.venv/bin/python bench/verify.py
	.venv/bin/python bench/memory.py
	.venv/bin/python bench/cutover.py --rounds 5
	.venv/bin/python bench/nested.py
	.venv/bin/python bench/sandbox_server.py

clean:
	rm -rf .venv .pytest_cache .mypy_cache .ruff_cache
