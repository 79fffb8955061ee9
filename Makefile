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

test: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# Only the contract from outside (schemathesis, the generated client); `make test` runs it too.
contract: $(STAMP)
	$(BIN)/python -m pytest -q tests/contract $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
