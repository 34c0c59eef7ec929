# The two commands: `make run` and `make test`. Everything installs into .venv from
# uv.lock (hash-checked, never re-resolved), so a fresh machine needs only Python 3.11
# (and, for `make test`'s browser tests, Debian's Chromium: installed with apt-get when
# missing, which needs root; see the chromium target).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC_DIRS := libs/kit libs/contracts services/generation/src services/usage/src \
            services/webhook-gateway/src services/edge-api/src tools
UV_VERSION := 0.13.8
# --locked: fail, never re-resolve, when uv.lock does not match pyproject.toml.
UV_SYNC := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv sync --quiet --locked --no-python-downloads \
           --python $(BIN)/python
OUR_PACKAGES := -p kit -p generation -p usage -p webhook_gateway -p edge_api \
                -p replicate_emulator -p launcher -p testkit
# Every test directory is under mypy (pyproject.toml relaxes test modules as httpx does).
# bench/locustfile.py imports locust, which only `make bench` installs.
TYPED_TESTS := tests/badinput tests/browser tests/concurrency tests/contracts tests/deploy \
               tests/e2e tests/faults tests/launcher tests/metrics tests/ops tests/security \
               tests/tracing bench --exclude bench/locustfile.py
# Test dirs without __init__.py, one mypy run each: every one has its own `conftest`.
TYPED_TEST_DIRS := services/webhook-gateway/tests tools/replicate_emulator/tests
# Test dirs whose modules are bare names (no __init__.py), so no module-pattern override
# reaches them: relaxed by flags instead, as pyproject relaxes tests.*. One run each;
# --explicit-package-bases names a module by its path from the repo root, as the tests
# import it (services.generation.tests.core.stack), not by its nearest __init__.py.
RELAXED_TEST_DIRS := services/edge-api/tests services/usage/tests services/generation/tests \
                     libs/kit/tests tools/testkit/tests

.PHONY: run test test-browser chromium lint fmt proto venv clean bench lock

venv: $(STAMP)

# pip brings only the pinned uv; `uv sync` then installs the lock's default groups
# (runtime, dev, local: pyproject.toml) exactly, uv itself included, so the lock keeps it.
$(STAMP): pyproject.toml uv.lock
	@echo "==> creating the virtual environment in $(VENV) from uv.lock"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(UV_SYNC)
	@$(BIN)/python -c 'import sys, sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "interior-backend.pth").write_text("\n".join(sys.argv[1:]) + "\n")' $(addprefix $(CURDIR)/,$(SRC_DIRS))
	@touch $(STAMP)

# `make run RELOAD=1` restarts a service when its source changes (LAUNCHER_RELOAD=1 too).
run: $(STAMP)
	@LAUNCHER_RELOAD=$${LAUNCHER_RELOAD:-$(RELOAD)} $(BIN)/python -m launcher

# One worker per core, at most 4 (each starts its own PostgreSQL and S3 server), and each
# test file whole on one worker, so module fixtures start once: on 2 cores about half the
# serial time (README, Tests). TEST_ARGS= (empty) runs it serially.
TEST_ARGS ?= -n auto --maxprocesses 4 --dist loadfile
# pytest's 5 (no tests collected) would reach CI as make's 2 like any failure: say it here.
test: $(STAMP) chromium
	@$(BIN)/python -m pytest $(TEST_ARGS); status=$$?; \
	    if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing the run" >&2; fi; \
	    exit $$status

# Only the reference web client's tests in a real browser (also part of `make test`).
test-browser: $(STAMP) chromium
	@$(BIN)/python -m pytest tests/browser

# Debian's Chromium for tests/browser, installed when missing (Playwright never downloads
# one). Without it the run fails here, with the command to run, rather than skip.
chromium:
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium) \
	    || { echo "tests/browser need Chromium: apt-get install -y chromium" >&2; exit 1; }

# The benchmarks (bench/README.md): the real system under locust, every figure a ratio
# against its parts measured in the same run. Minutes long; never part of `make test`.
bench: $(STAMP)
	@$(UV_SYNC) --group bench
	@$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	@echo "==> ruff check"
	@$(BIN)/ruff check .
	@echo "==> ruff format --check"
	@$(BIN)/ruff format --check .
	@echo "==> mypy --strict"
	@$(BIN)/mypy --strict $(OUR_PACKAGES)
	@echo "==> mypy (tests)"
	@$(BIN)/mypy --strict $(TYPED_TESTS)
	@for dir in $(TYPED_TEST_DIRS); do $(BIN)/mypy --strict $$dir || exit 1; done
	@for dir in $(RELAXED_TEST_DIRS); do \
		$(BIN)/mypy --strict --allow-untyped-defs --allow-incomplete-defs --check-untyped-defs \
			--explicit-package-bases $$dir || exit 1; \
	done

fmt: $(STAMP)
	@$(BIN)/ruff format .
	@$(BIN)/ruff check --fix .

# Regenerates libs/contracts from protos/ (code + .pyi stubs). Committed output;
# tests/contracts/test_generated_code.py fails when it drifts.
proto: $(STAMP)
	@PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/gen_protos.py libs/contracts

# Refreshes uv.lock from pyproject.toml (needs the registry); `make venv` then syncs it.
# Needs only the pinned uv, not a synced venv: a stale lock is what it mends.
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	@$(BIN)/uv lock

clean:
	rm -rf $(VENV) .var .pytest_cache .mypy_cache .ruff_cache
