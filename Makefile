# The two front-door commands: `make run` and `make test`. Each does its own set-up in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install when the project's metadata changes.
STAMP := $(VENV)/.installed

.PHONY: run test contract lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m service

# Static checks, run first by `make test`: ruff over service/, tests/, bench/ and examples/ (rules in
# pyproject.toml); mypy --strict on service/domain, service/store, service/engine and examples/;
# the layer contracts (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check service tests bench examples
	$(BIN)/mypy service/domain service/store service/engine examples
	$(BIN)/lint-imports

# pytest-xdist workers, each with its own PostgreSQL (tests/conftest.py, which also keeps tests/contract on
# one worker). 3 on a 2-core machine: the contract tests keep one worker busy for about a minute, mostly on
# CPU, while the rest of the suite mostly waits on the clock (fires due in a second or two) and shares the
# other two. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 3

test: lint
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Only the contract from outside (schemathesis, the generated client); `make test` runs it too.
contract: $(STAMP)
	$(BIN)/python -m pytest -q tests/contract $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
